"""Pictures a person looks at: loss curves, confusion matrices, ROC curves, mask overlays. Files are written
atomically; matplotlib runs headless (Agg)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay  # noqa: E402

from ..data.records import load_mask  # noqa: E402
from ..models.spcxr.imaging import load_image  # noqa: E402
from ..hub.saving import atomic_file  # noqa: E402
from ..plugins.tasks import MULTI_LABEL  # noqa: E402


def save(figure, path: Path) -> Path:
    with atomic_file(path) as staging:
        figure.savefig(staging, dpi=120, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png")
    plt.close(figure)
    return Path(path)


def loss_curve(steps, losses, path: Path, *, title: str = "training loss", log_scale: bool = False) -> Path:
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(steps, losses, lw=1, alpha=0.4, label="per step")
    if len(losses) >= 5:
        window = max(2, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axis.plot(steps[window - 1 :], smooth, lw=2, label=f"mean of {window}")
    axis.set(xlabel="optimizer step", ylabel="loss", title=title)
    if log_scale:
        axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend()
    return save(figure, path)


def confusion_matrix(task, inputs: dict, path: Path) -> Path:
    if task.kind == MULTI_LABEL:
        # One 2×2 matrix per label would be unreadable for 14 labels: plot per-label positive rates instead.
        references, predictions = np.array(inputs["references"]), np.array(inputs["predictions"])
        figure, axis = plt.subplots(figsize=(7, 0.35 * len(task.labels) + 1))
        y = np.arange(len(task.labels))
        axis.barh(y - 0.2, references.mean(0), height=0.4, label="reference")
        axis.barh(y + 0.2, predictions.mean(0), height=0.4, label="predicted")
        axis.set(yticks=y, yticklabels=task.labels, xlabel="fraction positive", title=f"{task.name}: positives per label")
        axis.legend()
        return save(figure, path)
    figure, axis = plt.subplots(figsize=(1.2 * len(task.labels) + 2.5, 1.2 * len(task.labels) + 2))
    ConfusionMatrixDisplay.from_predictions(
        inputs["references"], inputs["predictions"], labels=list(range(len(task.labels))),
        display_labels=list(task.labels), ax=axis, colorbar=False, cmap="Blues",
    )
    axis.set_title(f"{task.name}: confusion matrix (n={len(inputs['references'])})")
    return save(figure, path)


def roc_curves(task, inputs: dict, path: Path) -> Path:
    scores = np.array(inputs["prediction_scores"])
    references = np.array(inputs["references"])
    figure, axis = plt.subplots(figsize=(5, 5))
    for k, label in enumerate(task.labels):
        if task.kind != MULTI_LABEL and len(task.labels) == 2 and k == 0:
            continue  # binary: one curve, for the positive class
        truth = references[:, k] if task.kind == MULTI_LABEL else (references == k).astype(int)
        if truth.min() == truth.max():
            continue  # undefined with one class present
        RocCurveDisplay.from_predictions(truth, scores[:, k], name=label, ax=axis)
    axis.plot([0, 1], [0, 1], "k--", lw=1, alpha=0.5)
    axis.set_title(f"{task.name}: ROC")
    return save(figure, path)


def mask_overlays(records, predictions: dict, path: Path, *, limit: int = 8) -> Path:
    """Grid of films with the reference mask outline (green) and the predicted mask (red fill)."""
    shown = list(zip(predictions["indices"], predictions["scores"]))[:limit]
    columns = min(4, len(shown))
    rows = int(np.ceil(len(shown) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, (index, score) in zip(axes.ravel(), shown):
        image = load_image(records[index]["image"])
        reference = load_mask(records[index]["label"])
        predicted = score.argmax(axis=0) > 0
        dice = 2 * (predicted & reference).sum() / max(1, predicted.sum() + reference.sum())
        axis.imshow(image, cmap="gray")
        axis.imshow(np.ma.masked_where(~predicted, predicted), cmap="autumn", alpha=0.35)
        axis.contour(reference, levels=[0.5], colors="lime", linewidths=1)
        axis.set_title(f"{Path(str(records[index]['image'])).name}  Dice {dice:.3f}", fontsize=8)
    figure.suptitle("predicted (red) vs reference (green outline)")
    return save(figure, path)


def reliability_diagram(task, before: np.ndarray, after: np.ndarray | None, references, path: Path) -> Path:
    """Observed frequency against mean confidence in 15 equal-width bins, before and (if fitted) after temperature
    scaling; bar widths are not drawn to scale of counts, the lower panel shows how many predictions fall in each bin."""
    from .calibration import BINS, expected_calibration_error, reliability_inputs

    multi = task.kind == MULTI_LABEL
    edges = np.linspace(0, 1, BINS + 1)
    figure, (axis, counts) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    axis.plot([0, 1], [0, 1], "k--", lw=1, alpha=0.5, label="perfect calibration")
    for name, scores, colour in (("uncalibrated", before, "tab:red"), ("temperature-scaled", after, "tab:blue")):
        if scores is None:
            continue
        confidence, correct = reliability_inputs(np.asarray(scores), np.asarray(references), multi)
        which = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, BINS - 1)
        n = np.bincount(which, minlength=BINS)
        shown = n > 0
        mean_confidence = np.bincount(which, weights=confidence, minlength=BINS)[shown] / n[shown]
        frequency = np.bincount(which, weights=correct.astype(float), minlength=BINS)[shown] / n[shown]
        ece = expected_calibration_error(confidence, correct)
        axis.plot(mean_confidence, frequency, "o-", color=colour, label=f"{name} (ECE {ece:.3f})")
        counts.bar((edges[:-1] + 0.5 / BINS)[shown], n[shown], width=1 / BINS, alpha=0.4, color=colour)
    axis.set(ylabel="fraction positive" if multi else "accuracy", xlim=(0, 1), ylim=(0, 1),
             title=f"{task.name}: reliability ({'every label' if multi else 'top-1 confidence'})")
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", fontsize=8)
    counts.set(xlabel="predicted probability" if multi else "confidence", ylabel="count")
    return save(figure, path)
