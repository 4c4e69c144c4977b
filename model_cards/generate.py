"""Generates `model_cards/spcxr-vit-s/` (README.md and the widget's examples/): the card of the base model
`spcxr/vit-s` as the project publishes it. The card is written by `spcxr_hub.hub.cards` from a pretraining run; do not
edit the output by hand, run this script again.

    python model_cards/generate.py                       # a short GMML run of ViT-S on phantoms, then its card
    python model_cards/generate.py runs/ss-cxr/backbone  # the card of an existing backbone (pretrain.py's output)

With no argument the run is deliberately tiny (a few optimizer steps on phantom radiographs, on a CPU in about a
minute), and the card says so in its first lines: the project has no patient data to pretrain on. Point the script at
the backbone of a real pretraining run to get the card that would be published with it.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the network; fail fast instead of stalling

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "spcxr-vit-s"
RUN = ["--data", "synthetic", "--synthetic-size", "32", "--config", "vit-s", "--max-steps", "4", "--batch-size", "8",
       "--num-workers", "0", "--report-to", "none", "--checkpoint-every", "0", "--preview-every", "0", "--seed", "0"]


def pretrain(output_dir: Path) -> Path:
    """A short synthetic GMML run with pretrain.py's program; returns its backbone folder."""
    from spcxr_hub.training.pretraining import BACKBONE_DIR, main

    status = main([*RUN, "--output-dir", str(output_dir)])
    if status:
        raise SystemExit(f"generate.py: pretraining failed (exit status {status})")
    return output_dir / BACKBONE_DIR


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("backbone", nargs="?", type=Path,
                        help="backbone folder of a pretraining run (default: run a short synthetic pretraining)")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    parser.add_argument("--repo-id", default=None, help="Hub id the card is written for (default: spcxr/vit-s)")
    args = parser.parse_args(argv)

    from spcxr_hub.hub.cards import write_card

    with tempfile.TemporaryDirectory(prefix="spcxr-card-run-") as scratch:
        backbone = args.backbone or pretrain(Path(scratch) / "run")
        readme = write_card(backbone, repo_id=args.repo_id, output_dir=args.output_dir)
    print(f"wrote {readme} from {'a synthetic pretraining run' if args.backbone is None else backbone}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
