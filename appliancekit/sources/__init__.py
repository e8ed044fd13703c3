"""Where appliance contents come from: the Debian archive, PyPI wheels, pinned URLs."""
