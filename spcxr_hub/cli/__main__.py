"""`python -m spcxr_hub.cli`: the `spcxr` command where the console script is not on PATH."""

import sys

from . import main

sys.exit(main())
