"""The update agent that goes into every appliance (issue 12): its Go source (updater/),
the reproducible cross-build (gobuild.py), and how it is installed into a root (install.py).
"""
