"""GMML pretraining of SS-CXR: `python pretrain.py …` or `accelerate launch pretrain.py …` (see docs/pretraining.md).

Thin on purpose: this runs the `spcxr pretrain` command (spcxr_hub.training.pretraining), same options and messages.
"""

import sys

from spcxr_hub.training.pretraining import main

if __name__ == "__main__":
    sys.exit(main())
