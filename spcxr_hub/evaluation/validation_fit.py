"""Post-hoc fitting on a validation split, after fine-tuning (`finetune`) or on any saved classifier
(`spcxr calibrate`): temperature scaling, the operating points and the conformal threshold, stored in the model's
config so that `forward`, `predict` and exports apply them.

Order matters: the temperature is fitted first, and the thresholds are chosen on the calibrated probabilities the
model will return. The validation split is the calibration set of the conformal guarantee, so it must not be the
split that is evaluated.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .calibration import calibration_metrics, fit_temperature, probabilities
from .conformal import DEFAULT_COVERAGE, calibrate as calibrate_sets
from .operating_points import DEFAULT_TARGET_SENSITIVITY, DEFAULT_TARGET_SPECIFICITY, fit_operating_points
from ..errors import UsageError
from ..plugins.tasks import MULTI_LABEL, SEGMENTATION

VALIDATION_SPLIT = "val"
FITTED_FIELDS = ("temperature", "operating_points", "prediction_sets")


@dataclass(kw_only=True)
class ValidationFitOptions:
    calibrate: bool | None = None  # temperature scaling; None: whenever the task has a validation split
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY
    target_specificity: float = DEFAULT_TARGET_SPECIFICITY
    coverage: float = DEFAULT_COVERAGE
    split: str = VALIDATION_SPLIT


def check_targets(options: ValidationFitOptions) -> None:
    for name, value in (("--target-sensitivity", options.target_sensitivity),
                        ("--target-specificity", options.target_specificity), ("--coverage", options.coverage)):
        if not 0 < value < 1:
            raise UsageError(f"{name} must be between 0 and 1 (exclusive), got {value}")


def validation_records(task, data, options: ValidationFitOptions):
    """(the validation split's records, None), or (None, the one line saying what is missing and what is skipped)
    when the task or the data has no validation split — a UsageError instead when `--calibrate` was asked for
    explicitly: better before training than after. Segmentation has nothing to fit: (None, None)."""
    from ..data.records import LayoutError, load_records

    check_targets(options)
    if task.kind == SEGMENTATION:
        return None, None
    if options.split not in task.splits:
        line = f"task {task.name!r} has no validation split {options.split!r} (its splits: {', '.join(task.splits)})"
    else:
        try:
            return load_records(task, data, options.split), None
        except LayoutError as error:  # a folder laid out without val/ (common for downloads with train/test only)
            line = f"the data has no validation split ({error})"
    if options.calibrate:
        raise UsageError(f"--calibrate: {line}; run with --no-calibrate to fine-tune without calibration")
    return None, f"{line}: temperature scaling, operating points and prediction sets skipped"


def supports_temperature(model) -> bool:
    """SS-CXR classifiers apply `config.temperature` in forward; timm baselines (transformers' TimmWrapper) do not."""
    return hasattr(model.config, "temperature")


def fit_on_validation(model, processor, task, records, options: ValidationFitOptions, *, batch_size: int = 16,
                      strict: bool = False, progress: bool = True) -> tuple[dict, list[str]]:
    """Fits and stores the fields of `FITTED_FIELDS` on `model.config` from `records` (the validation split).
    Returns (a summary for the training log, notes on what was skipped)."""
    from .evaluate import predict

    multi_label = task.kind == MULTI_LABEL
    notes = []
    temperature_ok = supports_temperature(model)
    if temperature_ok:
        model.config.temperature = None  # refitting: the thresholds below must see raw logits first
    predictions = predict(model, processor, task, records, batch_size=batch_size, strict=strict, progress=progress)
    if not predictions["indices"]:
        raise UsageError(f"split {options.split!r}: no image could be decoded, nothing fitted")
    logits = np.asarray(predictions["logits"], float)
    references = np.asarray([records[i]["label"] for i in predictions["indices"]])
    references = references.astype(int)
    summary = {"split": options.split, "num_images": len(references)}
    before = calibration_metrics(probabilities(logits, multi_label), references, multi_label)
    summary["validation_ece_before"] = before["ece"]
    if options.calibrate is not False and temperature_ok:
        temperature = fit_temperature(logits, references, multi_label)
        model.config.temperature = temperature
        logits = logits / np.asarray(temperature, float)
        summary["temperature"] = temperature
        summary["validation_ece_after"] = calibration_metrics(probabilities(logits, multi_label), references,
                                                              multi_label)["ece"]
    elif not temperature_ok:
        notes.append(f"temperature scaling not applied: {type(model).__name__} (a timm baseline) has no temperature in "
                     f"its forward; its probabilities are uncalibrated (operating points and sets still fitted)")
    scores = probabilities(logits, multi_label)
    points, point_notes = fit_operating_points(scores, references, list(task.labels), multi_label, split=options.split,
                                               target_sensitivity=options.target_sensitivity,
                                               target_specificity=options.target_specificity)
    model.config.operating_points = points
    notes += point_notes
    model.config.prediction_sets = calibrate_sets(scores, references, options.coverage, split=options.split,
                                                  multi_label=multi_label)
    summary.update(operating_points=points, prediction_sets=getattr(model.config, "prediction_sets", None))
    return summary, notes


def store_fitted_fields(model_dir: Path, config) -> None:
    """Writes the fitted fields into `model_dir/config.json`, leaving every other field (and the weights) as saved."""
    from ..hub.saving import atomic_file

    path = Path(model_dir) / "config.json"
    fields = json.loads(path.read_text())
    fields.update({key: getattr(config, key, None) for key in FITTED_FIELDS})
    with atomic_file(path) as staging:
        staging.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
