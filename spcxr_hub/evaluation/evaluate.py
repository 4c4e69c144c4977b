"""Evaluating a model on a task: predictions over a split, the task's `evaluate` metric modules, JSON and plots.

Evaluating on another source than the training one is the paper's drift evaluation; nothing else is needed.
"""

import json
import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.records import load_mask
from ..data.task_dataset import TaskDataset, collate
from ..inference.devices import model_device, to_device
from ..inference.features import capture_pooled_features
from ..errors import UsageError
from ..hub.saving import atomic_file
from ..plugins.tasks import MULTI_LABEL, SEGMENTATION, Task


class LabelMismatchError(UsageError):
    """A model whose labels are not the task's."""


def check_model_labels(model, task: Task, source: str) -> None:
    labels = [model.config.id2label[i] for i in sorted(model.config.id2label)]
    if [label.lower() for label in labels] != [label.lower() for label in task.labels]:
        raise LabelMismatchError(f"{source}: model labels {labels} do not match task {task.name!r} labels {list(task.labels)}")


@torch.no_grad()
def predict(model, processor, task: Task, records, *, batch_size: int = 16, strict: bool = False, progress: bool = True):
    """Runs the model over records, on the model's device. Returns a dict with `indices` (of the records that decoded), `scores`
    (probabilities: (N, K) for classification; per-image (K, H, W) at the original size for segmentation), `logits`
    ((N, K), classification), `features` ((N, D) pooled features of a classifier, else None) and the list of
    skipped files."""
    device = model_device(model)  # batches go where the model is (a GPU after fine-tuning under accelerate)
    dataset = TaskDataset(records, task, processor, strict=strict)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate,
                                         pin_memory=device.type == "cuda")
    model.eval()
    indices, scores, all_logits, features = [], [], [], []
    for batch in tqdm(loader, desc=f"evaluate {task.name}", disable=not progress, unit="batch"):
        if batch is None:
            continue
        batch_indices = batch["index"].tolist()
        with capture_pooled_features(model) as pooled:  # the OOD score's input; empty for a segmenter
            logits = model(pixel_values=to_device(batch, device)["pixel_values"]).logits.float().cpu()
        features.extend(pooled[0] if pooled else [])
        indices.extend(batch_indices)
        if task.kind == SEGMENTATION:
            for index, item in zip(batch_indices, logits):
                height, width = load_mask(records[index]["label"]).shape
                scores.append(original_size_probabilities(processor, item, height, width))
        elif task.kind == MULTI_LABEL:
            scores.extend(torch.sigmoid(logits).numpy())
        else:
            scores.extend(torch.softmax(logits, dim=-1).numpy())
        if task.kind != SEGMENTATION:
            all_logits.extend(logits.numpy())
    return {"indices": indices, "scores": scores, "logits": all_logits, "skipped": dataset.skipped,
            "features": np.stack(features) if len(features) == len(indices) and features else None}


def original_size_probabilities(processor, logits: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Class probabilities of one image mapped back onto its original pixels (undoing resize and letterbox)."""
    from ..models.spcxr.preprocessing import letterbox_geometry

    if processor.do_resize and processor.resize_mode == "pad":
        top, left, new_h, new_w = letterbox_geometry(height, width, tuple(logits.shape[-2:]))
        logits = logits[:, top : top + new_h, left : left + new_w]
    logits = torch.nn.functional.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)
    return logits[0].softmax(dim=0).numpy()


def metric_inputs(task: Task, records, predictions) -> dict:
    """The arguments the task's metric modules take (see docs/plugins.md)."""
    indices, scores = predictions["indices"], predictions["scores"]
    if task.kind == SEGMENTATION:
        return {
            "predictions": [score.argmax(axis=0).astype(np.int8).ravel() for score in scores],
            "references": [load_mask(records[i]["label"]).astype(np.int8).ravel() for i in indices],
        }
    references = [records[i]["label"] for i in indices]
    if task.kind == MULTI_LABEL:
        return {
            "predictions": [(s > 0.5).astype(int).tolist() for s in scores],
            "references": [[int(v) for v in r] for r in references],
            "prediction_scores": [s.tolist() for s in scores],
        }
    return {
        "predictions": [int(s.argmax()) for s in scores],
        "references": [int(r) for r in references],
        "prediction_scores": [s.tolist() for s in scores],
    }


def compute_metrics(task: Task, inputs: dict) -> dict:
    import evaluate  # heavy: only when metrics are computed

    results = {}
    for module in task.metrics:
        results.update(evaluate.load(str(module)).compute(**inputs))
    return results


def evaluate_model(model, processor, task: Task, records, output_dir: Path, *, split: str, source: str,
                   batch_size: int = 16, strict: bool = False, progress: bool = True, notes: list | None = None,
                   gate: bool = True, ood_statistics=None, explain: int = 0, explain_method: str = "gradcam",
                   grouping=None) -> dict:
    """Predictions → metrics → `output_dir/metrics.json` and plots. Returns the JSON's content. `notes`: lines on
    what an earlier step skipped (e.g. calibration without a validation split), kept in the JSON for the card.
    `gate`: run the input gate over the split (`input_gate_report.py`; `ood_statistics`, the model's
    `inference.ood.load(model_dir)`, adds the OOD check); `explain`: draw the N most confident errors with their
    saliency maps (`explanations.png`); `grouping` (`spcxr_hub.data.attributes.grouping`): adds the `subgroups`
    section (`subgroups.py`)."""
    predictions = predict(model, processor, task, records, batch_size=batch_size, strict=strict, progress=progress)
    if not predictions["indices"]:
        raise UsageError(f"{source}: no image of split {split!r} could be decoded")
    inputs = metric_inputs(task, records, predictions)
    report = {
        "task": task.name,
        "split": split,
        "source": str(source),
        "num_images": len(predictions["indices"]),
        "num_skipped": len(predictions["skipped"]),
        "skipped": predictions["skipped"],
        "metrics": to_json(compute_metrics(task, inputs)),
        "notes": list(notes or []),
    }
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    from . import plots  # matplotlib: only when plots are drawn

    if task.kind == SEGMENTATION:
        plots.mask_overlays(records, predictions, output_dir / "mask_overlays.png")
    else:
        plots.confusion_matrix(task, inputs, output_dir / "confusion_matrix.png")
        plots.roc_curves(task, inputs, output_dir / "roc_curve.png")
        from .trust_report import classification_sections  # calibration, intervals, operating points, sets

        sections, notes = classification_sections(task, model.config, inputs["references"], predictions["logits"],
                                                  output_dir)
        report.update(to_json(sections))
        report["notes"] += notes
        if explain > 0:
            report.update(explanation_section(model, processor, task, records, predictions, explain, explain_method,
                                              output_dir, report["notes"]))
    if gate:
        from .input_gate_report import gate_section

        section, notes = gate_section(records, predictions["indices"], predictions["features"], ood_statistics,
                                      processor.max_pixels, output_dir, source, progress=progress)
        report["input_gate"] = to_json(section)
        report["notes"] += notes
    else:
        report["notes"].append("input gate: not run (--gate off)")
    if grouping is not None:
        from .subgroups import subgroup_section

        names = list(report.get("confidence_intervals", {}).get("metrics", {}))
        section, group_notes = subgroup_section(task, records, predictions, inputs, grouping, names)
        report["subgroups"] = to_json(section)
        report["notes"] += group_notes
    with atomic_file(output_dir / "metrics.json") as staging:
        staging.write_text(json.dumps(report, indent=2))
    return report


def explanation_section(model, processor, task: Task, records, predictions, count: int, method: str,
                        output_dir: Path, notes: list) -> dict:
    """`{"explanations": …}` for metrics.json (empty, with a line in `notes`, when there is nothing to draw)."""
    from ..inference.runtimes import is_exported
    from .explanation_plots import EXPLANATION_PICTURE, confident_errors, error_grid

    if is_exported(model):
        notes.append("explanations: an exported (ONNX/OpenVINO) model has no gradients; not drawn")
        return {}
    picture = error_grid(model, processor, task, records, predictions, count, output_dir / EXPLANATION_PICTURE,
                         method=method)
    if picture is None:
        notes.append("explanations: the model made no error on this split; no grid drawn")
        return {}
    shown = len(confident_errors(task, records, predictions, count))
    return {"explanations": {"picture": picture.name, "method": method, "errors_shown": shown}}


def to_json(value):
    """Metric results → plain JSON (numpy scalars to floats, NaN to null)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    return value
