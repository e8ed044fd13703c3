"""Benchmarks: every figure against a baseline measured in the same run (`make bench`)."""
