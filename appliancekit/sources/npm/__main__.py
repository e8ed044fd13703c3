"""`python -m appliancekit.sources.npm lock RECIPE_DIR`."""

import sys

from appliancekit.sources.npm.cli import main

sys.exit(main(sys.argv[1:]))
