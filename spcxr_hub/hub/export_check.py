"""The accuracy check of a runtime export (`runtime_export.py`): the exported graph against the fp32 PyTorch model on
held-out images of the model's task, through the same evaluation code as `spcxr evaluate` (`evaluation/evaluate.py`).

Numbers: top-1 agreement (classification: same top class, multi-label: same decisions; segmentation: same class
per pixel), the largest absolute logit difference, and every metric of the task before and after; the headline
metric (AUROC, else Dice, else accuracy) decides whether the export is accepted (`MAX_METRIC_DROP`). Where the model
has OOD statistics, the input gate is compared too: how often the exported graph's OOD flag agrees with the fp32
model's, and the largest OOD-score difference (quantisation noise moves the pooled features; the Mahalanobis distance
magnifies it most where the training features vary least). Below `MIN_GATE_AGREEMENT` the export warns.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .card_facts import describe_source, read_json

MAX_METRIC_DROP = 0.5  # points (percent of the metric's [0, 1] range) of the headline metric
MAX_CHECK_IMAGES = 256  # held-out images: enough for agreement in % to mean something, quick on a CPU
SYNTHETIC_PER_CLASS = 16  # phantoms per class when the model's own evaluation split is not on this machine
HEADLINE_METRICS = ("auroc", "macro_auroc", "roc_auc", "dice", "accuracy")
MIN_GATE_AGREEMENT = 0.97  # the false-flag bound of the gate's own tests (≤ 3% of clean phantoms)


@dataclass
class AccuracyCheck:
    images: int
    source: str
    agreement: float
    max_logit_difference: float
    metric: str
    reference: dict = field(default_factory=dict)  # the fp32 PyTorch model's metrics
    exported: dict = field(default_factory=dict)
    gate_agreement: float | None = None  # share of images whose OOD flag is the fp32 model's (None: no statistics)
    max_ood_difference: float | None = None

    @property
    def drop_points(self) -> float:
        """How far the headline metric fell, in points (positive = worse); rounded, so that a drop of exactly the
        limit (AUROC 0.735 → 0.730 is 0.5000000000000004 in floats) is not refused as above it."""
        return round(100 * (self.reference[self.metric] - self.exported[self.metric]), 9)

    def line(self) -> str:
        return (f"accuracy check on {self.images} {self.source}: top-1 agreement {100 * self.agreement:.1f}%, "
                f"max |logit difference| {self.max_logit_difference:.2e}, {self.metric} "
                f"{self.reference[self.metric]:.4f} → {self.exported[self.metric]:.4f} "
                f"({-self.drop_points:+.2f} points)" + (
                    "" if self.gate_agreement is None else f", OOD flag agreement {100 * self.gate_agreement:.1f}% "
                    f"(max |OOD score difference| {self.max_ood_difference:.2f})"))

    def as_dict(self) -> dict:
        return {**asdict(self), "drop_points": self.drop_points}


class _Recording(nn.Module):
    """Passes calls to `model` and keeps each batch's logits (evaluation hands back probabilities only)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.logits, self.features = model, [], []

    def forward(self, pixel_values, **kwargs):
        from ..inference.features import capture_pooled_features

        with capture_pooled_features(self.model) as features:
            output = self.model(pixel_values=pixel_values)
        self.logits.append(output.logits.detach().float().cpu())
        self.features.extend(features)
        return output


def task_of(model_dir: Path) -> str | None:
    """The task the model was evaluated or fine-tuned on: metrics.json, else the training log."""
    for name, key in (("metrics.json", None), ("training_log.json", "options")):
        path = model_dir / name
        if path.is_file():
            fields = read_json(path, name)
            task = (fields.get(key) or {}).get("task") if key else fields.get("task")
            if task:
                return task
    return None


def held_out_records(model_dir: Path, task, check_data: str | None, split: str, workdir: Path):
    """(records, how the card names them): `check_data` (a folder in the task's layout or a Hub dataset id), else
    the split `spcxr finetune` evaluated the model on where its folder is still here, else synthetic phantoms."""
    from ..data.records import load_records

    if check_data is not None:
        return load_records(task, check_data, split)[:MAX_CHECK_IMAGES], f"held-out images ({split} split of " \
            f"{describe_source(check_data)})"
    log = model_dir / "training_log.json"
    options = (read_json(log, "the training log").get("options") or {}) if log.is_file() else {}
    data, evaluated = options.get("eval_data") or options.get("data"), options.get("eval_split")
    if data and evaluated and Path(data).is_dir():
        from ..errors import SpcxrError

        try:
            records = load_records(task, data, evaluated)[:MAX_CHECK_IMAGES]
            if records:
                return records, f"held-out images ({evaluated} split of {describe_source(data)})"
        except SpcxrError:  # the folder changed since training: phantoms rather than a failed export
            pass
    if task.write_synthetic is None:
        from .runtime_export import RuntimeExportError

        raise RuntimeExportError(f"{model_dir}: no held-out images for the accuracy check: pass --check-data")
    folder = task.write_synthetic(workdir / "phantoms", SYNTHETIC_PER_CLASS, 900_000)
    return load_records(task, folder, "test")[:MAX_CHECK_IMAGES], "synthetic phantoms (spcxr_hub.data.synthetic)"


def agreement_of(task, reference: torch.Tensor, exported: torch.Tensor) -> float:
    from ..plugins.tasks import MULTI_LABEL, SEGMENTATION

    if task.kind == MULTI_LABEL:
        return float(((reference > 0) == (exported > 0)).float().mean())
    dim = 1 if task.kind == SEGMENTATION else -1
    return float((reference.argmax(dim) == exported.argmax(dim)).float().mean())


def scalar_metrics(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def check_accuracy(reference, exported, processor, model_dir: Path, *, check_data: str | None = None,
                   split: str = "test") -> AccuracyCheck:
    """Runs both models over the held-out records and compares them (see the module docstring)."""
    from ..evaluation.evaluate import compute_metrics, metric_inputs, predict
    from ..plugins.registry import get_task
    from .runtime_export import RuntimeExportError

    name = task_of(model_dir)
    if name is None:
        raise RuntimeExportError(f"{model_dir}: neither metrics.json nor training_log.json names the task; the "
                                 "accuracy check needs it (evaluate the model with `spcxr evaluate` first)")
    task = get_task(name)
    with tempfile.TemporaryDirectory(prefix="spcxr-check-") as workdir:
        records, source = held_out_records(model_dir, task, check_data, split, Path(workdir))
        if not records:
            raise RuntimeExportError(f"{check_data or model_dir}: no held-out images for the accuracy check")
        sides, features = {}, {}
        for side, model in (("reference", reference), ("exported", exported)):
            recording = _Recording(model)
            predictions = predict(recording, processor, task, records, progress=False)
            if not predictions["indices"]:
                raise RuntimeExportError(f"{source}: none of the held-out images could be decoded")
            metrics = compute_metrics(task, metric_inputs(task, records, predictions))
            sides[side] = (torch.cat(recording.logits), scalar_metrics(metrics), len(predictions["indices"]))
            features[side] = np.concatenate(recording.features) if recording.features else None
    (ref_logits, ref_metrics, count), (exp_logits, exp_metrics, _) = sides["reference"], sides["exported"]
    metric = next((m for m in HEADLINE_METRICS if m in ref_metrics), next(iter(ref_metrics), None))
    if metric is None:
        raise RuntimeExportError(f"task {name!r}: its metrics give no number to compare")
    return AccuracyCheck(images=count, source=source, agreement=agreement_of(task, ref_logits, exp_logits),
                         max_logit_difference=float((ref_logits - exp_logits).abs().max()), metric=metric,
                         reference=ref_metrics, exported=exp_metrics,
                         **gate_comparison(model_dir, getattr(exported, "folder", model_dir), features))


def gate_comparison(model_dir: Path, export_dir: Path, features: dict) -> dict:
    """How often the two sides' OOD flags agree, each scored with its own folder's statistics (an export may refit
    them on its graph's features), and the largest score difference."""
    from ..inference import ood

    statistics = ood.load(model_dir), ood.load(export_dir)
    if None in statistics or features.get("reference") is None or features.get("exported") is None:
        return {}
    scores = [stats.score(features[side]) for stats, side in zip(statistics, ("reference", "exported"))]
    flags = (scores[0] > statistics[0].threshold) == (scores[1] > statistics[1].threshold)
    return {"gate_agreement": float(flags.mean()), "max_ood_difference": float(np.abs(scores[0] - scores[1]).max())}
