"""`python -m appliancekit.sources.pypi lock RECIPE_DIR`."""

import sys

from appliancekit.sources.pypi.cli import main

sys.exit(main(sys.argv[1:]))
