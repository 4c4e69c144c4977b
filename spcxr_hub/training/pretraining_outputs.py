"""The output folder of a pretraining run: its layout, the checks before anything is written there (a non-empty
folder is refused unless resumed or --overwrite; --resume names a checkpoint), and the files besides checkpoints —
reconstruction previews, the loss curve, JSON files, the backbone as an `SpcxrModel` folder. Every file is written
atomically (a killed run leaves no half-written file)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from ..hub.saving import atomic_file, save_model_directory
from .augmentation import Augmentation
from .checkpoints import META as CHECKPOINT_META
from .checkpoints import list_checkpoints
from .pretraining_options import BACKBONE_DIR, UNREADABLE_LOG, PretrainOptions

CHECKPOINT_DIR = "checkpoints"
PREVIEW_DIR = "previews"
LOG_DIR = "logs"
TRAINER_STATE = "trainer_state.json"
LOSS_CURVE = "loss_curve.png"
OUTPUTS = (CHECKPOINT_DIR, BACKBONE_DIR, PREVIEW_DIR, LOG_DIR, TRAINER_STATE, LOSS_CURVE, UNREADABLE_LOG)


def check_output_dir(options: PretrainOptions, output_dir: Path) -> None:
    """Refuse to write into a non-empty folder unless resuming or --overwrite (then only this program's outputs go)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"--output-dir {output_dir}: a file, not a folder")
    if options.resume is None and not options.overwrite and output_dir.is_dir() and any(output_dir.iterdir()):
        raise UsageError(
            f"--output-dir {output_dir}: already exists and is not empty (use --resume to continue the run there, "
            "--overwrite to start again, or another folder)"
        )


def resolve_resume(resume: str, output_dir: Path) -> Path:
    """The checkpoint folder `--resume` names: 'latest' in OUTPUT_DIR, a checkpoint, or a run's output folder."""
    if resume == "latest":
        found = list_checkpoints(output_dir / CHECKPOINT_DIR)
        if not found:
            raise UsageError(f"--resume latest: no checkpoint under {output_dir / CHECKPOINT_DIR}")
        return found[-1][1]
    path = Path(resume)
    if not path.exists():
        raise UsageError(f"--resume {resume}: no such checkpoint")
    if (path / CHECKPOINT_META).is_file():
        return path
    found = list_checkpoints(path / CHECKPOINT_DIR) or list_checkpoints(path)
    if found:
        return found[-1][1]
    raise UsageError(f"--resume {resume}: not a checkpoint of this program (no {CHECKPOINT_META})")


def delete_outputs(output_dir: Path) -> None:
    for name in OUTPUTS:
        target = output_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _denormalise(x: torch.Tensor, augmentation: Augmentation) -> np.ndarray:
    return (x.float() * augmentation.std + augmentation.mean).clamp(0, 1).cpu().numpy()


def write_preview(path: Path, clean: torch.Tensor, corrupted: torch.Tensor, reconstruction: torch.Tensor,
                  augmentation: Augmentation, title: str) -> None:
    """A PNG with one row per image: original | corrupted | reconstruction (denormalised to [0, 1])."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = clean.shape[0]
    figure = Figure(figsize=(6, 2 * rows + 0.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 3, squeeze=False)
    for row in range(rows):
        for col, (name, images) in enumerate((("original", clean), ("corrupted", corrupted),
                                              ("reconstruction", reconstruction))):
            ax = axes[row][col]
            ax.imshow(_denormalise(images[row, 0], augmentation), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    with atomic_file(path) as staging:
        figure.savefig(staging, format="png")


def write_loss_curve(path: Path, history: list[dict]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    steps = [entry["step"] for entry in history]
    (loss_line,) = ax.plot(steps, [entry["loss"] for entry in history], lw=1, label="loss (L1, corrupted pixels)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("GMML reconstruction loss")
    ax2 = ax.twinx()
    (lr_line,) = ax2.plot(steps, [entry["lr"] for entry in history], color="tab:orange", lw=0.8, alpha=0.6,
                          label="learning rate")
    ax2.set_ylabel("learning rate")
    ax2.legend(handles=[loss_line, lr_line], loc="best", fontsize=8)
    figure.tight_layout()
    with atomic_file(path) as staging:
        figure.savefig(staging, format="png")


def save_backbone(path: Path, state_dict: dict, config) -> None:
    """The backbone of the trained model as an `SpcxrModel` folder (code files, auto_map, image processor); its model
    card is written afterwards from trainer_state.json (`spcxr_hub.hub.cards.write_card`)."""
    from ..models.spcxr.image_processing_spcxr import SpcxrImageProcessor
    from ..models.spcxr.modeling_spcxr import SpcxrModel

    backbone = SpcxrModel(copy.deepcopy(config))
    prefix = "spcxr."
    weights = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    # The pretraining model has no final LayerNorm (GMML never trains it): the backbone's stays at its init (1, 0).
    missing, unexpected = backbone.load_state_dict(weights, strict=False)
    if unexpected or set(missing) != {"layernorm.weight", "layernorm.bias"}:
        raise RuntimeError(f"backbone weights do not match SpcxrModel: missing {missing}, unexpected {unexpected}")
    processor = SpcxrImageProcessor(size={"height": config.image_size, "width": config.image_size})
    save_model_directory(path, backbone, processor, overwrite=True)


def write_json(path: Path, payload: dict) -> None:
    with atomic_file(path) as staging:
        staging.write_text(json.dumps(payload, indent=2, default=str) + "\n")
