"""What a model card states, read from the model directory: the kind of model, its training summary, whether its
data were synthetic, its repository id, its size, and its evaluation report's numbers (see `cards.py`)."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from ..errors import UsageError

TRAINING_LOG = "training_log.json"
PRETRAINING_SUMMARY = "trainer_state.json"
METRICS = "metrics.json"


class CardError(UsageError):
    """A directory a card cannot be written for; the message names the file or field."""


def read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CardError(f"{path}: cannot read {what} ({error})") from None
    if not isinstance(value, dict):
        raise CardError(f"{path}: {what} must be a JSON object")
    return value


def model_kind(config: dict, source: Path) -> str:
    """`backbone`, `classification` or `segmentation`, from `architectures` in config.json."""
    architectures = config.get("architectures") or []
    if not architectures:
        raise CardError(f"{source}: config.json names no architecture (save the model with save_pretrained)")
    name = architectures[0]
    if name.endswith("ForSemanticSegmentation"):
        return "segmentation"
    if name.endswith("ForImageClassification"):
        return "classification"
    return "backbone"


def training_summary_for(model_dir: Path, explicit: str | os.PathLike | None) -> tuple[dict | None, str | None]:
    """(summary, "finetune" | "pretrain") from an explicit JSON, `training_log.json`, or the pretraining summary
    in the directory or beside it (pretrain.py writes OUTPUT_DIR/trainer_state.json next to OUTPUT_DIR/backbone)."""
    candidates = [Path(explicit)] if explicit else [
        model_dir / TRAINING_LOG, model_dir / PRETRAINING_SUMMARY, model_dir.parent / PRETRAINING_SUMMARY]
    for path in candidates:
        if not path.is_file():
            if explicit:
                raise CardError(f"{path}: training summary not found")
            continue
        summary = read_json(path, "training summary")
        if path == model_dir.parent / PRETRAINING_SUMMARY and not explicit:
            # Only a summary that names this folder as its backbone describes it.
            if Path(str(summary.get("backbone", ""))).name != model_dir.name:
                continue
        flavour = "pretrain" if "global_step" in summary or "log_history" in summary else "finetune"
        return summary, flavour
    return None, None


def synthetic_flag(summary: dict | None, flavour: str | None) -> bool | None:
    """True / False when the training log says, None when it does not."""
    if not summary:
        return None
    if isinstance(summary.get("synthetic_data"), bool):
        return summary["synthetic_data"]
    if flavour == "pretrain":
        data = (summary.get("args") or {}).get("data")
        if data is not None:
            return data == "synthetic"
    options = summary.get("options") or {}
    if isinstance(options.get("synthetic_data"), bool):
        return options["synthetic_data"]
    return None


def is_hub_id(value: str | None) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not value or value.count("/") != 1 or Path(value).exists():
        return False
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def declared_repo_id(directory: Path) -> str | None:
    """The Hub id a local model directory is known by: a Hugging Face cache snapshot path, or its own card."""
    match = re.search(r"models--([^/]+?)--([^/]+)/snapshots/", str(directory.resolve()).replace(os.sep, "/") + "/")
    if match:
        return f"{match.group(1)}/{match.group(2)}"
    readme = directory / "README.md"
    if readme.is_file():
        from huggingface_hub import ModelCard

        try:
            name = ModelCard(readme.read_text(), ignore_metadata_errors=True).data.model_name
        except Exception:  # a hand-written README without (valid) YAML
            return None
        if is_hub_id(name):
            return name
    return None


def local_synthetic(directory: Path) -> bool | None:
    """Whether the model in a local directory was trained on synthetic data, as far as its files say."""
    summary, flavour = training_summary_for(directory, None)
    flag = synthetic_flag(summary, flavour)
    if flag is not None:
        return flag
    readme = directory / "README.md"
    if readme.is_file():
        from huggingface_hub import ModelCard

        try:
            tags = ModelCard(readme.read_text(), ignore_metadata_errors=True).data.tags or []
        except Exception:
            return None
        if "synthetic-data" in tags:
            return True
    return None


def lookup_task(name: str | None):
    if not name:
        return None
    from ..plugins.registry import get_task

    try:
        return get_task(name)
    except Exception:  # the plugin is not installed here: the card says less, but still says the truth
        return None


def parameter_count(model_dir: Path) -> int | None:
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with safe_open(path, framework="numpy") as handle:
            for key in handle.keys():
                total += math.prod(handle.get_slice(key).get_shape())
    return total


# ------------------------------------------------------------------------------------------------- evaluation


def scalar_metrics(metrics: dict) -> list[tuple[str, float | int]]:
    """(name, value) for every finite number in a metrics dict; nested dicts (per-label values) flattened with '/'.
    Lists (per-image values) and nulls (undefined metrics) are left out."""
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows.extend((f"{key}/{sub}", v) for sub, v in scalar_metrics(value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            rows.append((str(key), value))
    return rows


def undefined_metrics(metrics: dict, prefix: str = "") -> list[str]:
    names = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            names.extend(undefined_metrics(value, f"{prefix}{key}/"))
        elif value is None or (isinstance(value, float) and not math.isfinite(value)):
            names.append(f"{prefix}{key}")
    return names


def describe_source(source: str) -> str:
    """A data source as a card may show it: Hub ids as they are, local folders by their name only."""
    if not source:
        return "unknown"
    if is_hub_id(source):
        return f"`{source}` (Hugging Face dataset)"
    return f"local folder `{Path(source).name or source}`"


def format_value(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.4f}"
