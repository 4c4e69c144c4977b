"""GMML pretraining of SS-CXR: `python pretrain.py …` or `accelerate launch pretrain.py …` (see docs/pretraining.md).

Thin on purpose: everything lives in `spcxr_hub.training.pretraining` (also reachable as `spcxr pretrain …`).
"""

import sys

from spcxr_hub.training.pretraining import main

if __name__ == "__main__":
    sys.exit(main())
