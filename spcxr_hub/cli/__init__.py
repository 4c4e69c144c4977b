"""`spcxr`: the command line of SPCXR Hub. One module per group of commands; `app.py` holds what they share."""

import os

from .app import EXIT_BAD_INPUT, EXIT_BUG, app  # noqa: F401
from . import (  # noqa: F401  (register the commands)
    calibration_commands, inference_commands, ood_commands, publishing_commands, training_commands)
from .training_commands import RECIPE_OPTIONS, finetune, reproduce  # noqa: F401


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app(prog_name="spcxr")
