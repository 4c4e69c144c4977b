"""Pictures of the input gate and the explanations: `evaluate --explain N`'s grid of the N most confident errors with
their saliency maps, and a grid of flagged inputs with their findings (for cards and the README)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch

from .plots import plt, save
from ..models.spcxr.imaging import load_image
from ..plugins.tasks import MULTI_LABEL, SEGMENTATION

__all__ = ["EXPLANATION_PICTURE", "confident_errors", "error_grid", "findings_grid"]

EXPLANATION_PICTURE = "explanations.png"


def confident_errors(task, records, predictions: dict, count: int) -> list[tuple[int, int, float]]:
    """(record index, the wrongly scored label, its score) of the `count` most confident errors: single-label, the
    predicted class of a misclassified image; multi-label, the label scored furthest on the wrong side of 0.5."""
    errors = []
    for index, scores in zip(predictions["indices"], predictions["scores"]):
        scores, truth = np.asarray(scores), records[index]["label"]
        if task.kind == MULTI_LABEL:
            wrong = [(abs(s - 0.5), k) for k, s in enumerate(scores) if (s > 0.5) != bool(truth[k])]
            if wrong:
                _, label = max(wrong)
                errors.append((index, label, float(scores[label])))
        elif int(scores.argmax()) != int(truth):
            errors.append((index, int(scores.argmax()), float(scores.max())))
    errors.sort(key=lambda error: -abs(error[2] - (0.5 if task.kind == MULTI_LABEL else 0.0)))
    return errors[:count]


def error_grid(model, processor, task, records, predictions: dict, count: int, path: Path, *,
               method: str = "gradcam") -> Path | None:
    """The grid of the `count` most confident errors, each film with the map of the label it got wrong; None when
    the model made no error (nothing to show) or the task is segmentation (the overlays are its pictures)."""
    from ..inference.explain import explain, overlay, to_image

    if task.kind == SEGMENTATION:
        return None
    errors = confident_errors(task, records, predictions, count)
    if not errors:
        return None
    columns = min(4, len(errors))
    rows = -(-len(errors) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.5 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, (index, label, score) in zip(axes.ravel(), errors):
        source = records[index]["image"]
        film = load_image(source, max_pixels=processor.max_pixels)
        pixels = torch.from_numpy(processor(film, return_tensors="np")["pixel_values"])
        saliency = to_image(processor, explain(model, pixels, label, method)[0], *film.shape)
        axis.imshow(overlay(film, saliency))
        truth = records[index]["label"]
        truth = (", ".join(task.labels[k] for k, v in enumerate(truth) if v) or "none") if task.kind == MULTI_LABEL \
            else task.labels[int(truth)]
        axis.set_title(f"{Path(str(source)).name[:28]}\ntrue {truth}\nscored {task.labels[label]} {score:.2f}",
                       fontsize=8)
    figure.suptitle(f"{task.name}: the {len(errors)} most confident errors ({method} maps of the wrong label)",
                    fontsize=10)
    return save(figure, path)


def findings_grid(items: list[tuple[str, list[dict]]], path: Path, columns: int = 4) -> Path:
    """Films with the gate's findings under each: (file, findings) pairs."""
    rows = -(-len(items) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.9 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, (file, findings) in zip(axes.ravel(), items):
        axis.imshow(load_image(file), cmap="gray", vmin=0, vmax=1)
        lines = [f"{f['code']}: " + textwrap.shorten(f["reason"], 70) for f in findings] or ["no findings"]
        axis.set_title(Path(file).name, fontsize=8)
        axis.text(0.0, -0.04, "\n".join(textwrap.fill(line, 44) for line in lines), transform=axis.transAxes,
                  fontsize=6, va="top", color="darkred" if findings else "darkgreen")
    return save(figure, path)
