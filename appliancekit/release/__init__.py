"""Releases: Debian lock files, the release matrix, rebuilding and checking a release."""
