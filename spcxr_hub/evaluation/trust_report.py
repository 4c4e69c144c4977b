"""The parts of a classification evaluation a clinician-researcher needs beyond the task's metrics, for
`metrics.json` and the card: calibration before and after the model's temperature (and a reliability diagram),
bootstrap intervals for the headline metrics, the stored operating points on this split and the empirical coverage
of the conformal prediction sets. Each part that cannot be evaluated is left out with a note saying why.
"""

from pathlib import Path

import numpy as np

from . import bootstrap, conformal
from .calibration import calibration_metrics, probabilities, reliability_inputs
from .operating_points import operating_point_table, positive_classes
from ..plugins.tasks import MULTI_LABEL

RELIABILITY_DIAGRAM = "reliability_diagram.png"


def uncalibrated_logits(logits: np.ndarray, temperature) -> np.ndarray:
    """The logits before the model's temperature scaling (forward divides by T outside training)."""
    return logits if temperature is None else logits * np.asarray(temperature, float)


def headline_intervals(scores: np.ndarray, references: np.ndarray, labels, multi_label: bool,
                       indices: np.ndarray) -> dict:
    """95% stratified bootstrap intervals of accuracy (single-label), AUROC per positive class and macro, and ECE."""
    count, statistics = len(references), {}
    if not multi_label:
        statistics["accuracy"] = bootstrap.mean_of(scores.argmax(axis=1) == references)
    per_class = {}
    for k in positive_classes(labels, multi_label):
        truth = references[:, k] if multi_label else references == k
        if truth.any() and not truth.all():
            per_class[labels[k]] = bootstrap.auroc(scores[:, k], truth)
    statistics.update({f"auroc/{label}": statistic for label, statistic in per_class.items()})
    if len(per_class) > 1:
        members = list(per_class.values())
        statistics["auroc/macro"] = lambda idx: np.mean([statistic(idx) for statistic in members], axis=0)
    confidence, correct = reliability_inputs(scores, references, multi_label)
    if multi_label:  # the mean of the per-label ECEs, as calibration_metrics reports it
        per_label = [bootstrap.calibration_error(scores[:, k], references[:, k].astype(bool))
                     for k in range(scores.shape[1])]
        statistics["ece"] = lambda idx: np.mean([statistic(idx) for statistic in per_label], axis=0)
    else:
        statistics["ece"] = bootstrap.calibration_error(confidence, correct)
    intervals = {name: bootstrap.interval(statistic, indices, count) for name, statistic in statistics.items()}
    return {"level": bootstrap.LEVEL, "resamples": indices.shape[0], "seed": bootstrap.SEED,
            "stratified_by": "any label present" if multi_label else "class", "metrics": intervals}


def classification_sections(task, config, references, logits, output_dir: Path) -> tuple[dict, list[str]]:
    """(sections to add to metrics.json, notes on what was not evaluated and why)."""
    multi_label = task.kind == MULTI_LABEL
    labels = list(task.labels)
    references, logits = np.asarray(references), np.asarray(logits, float)
    temperature = getattr(config, "temperature", None)
    scores = probabilities(logits, multi_label)
    before = probabilities(uncalibrated_logits(logits, temperature), multi_label)
    notes, sections = [], {}

    calibration = {"temperature": temperature, "bins": 15,
                   "uncalibrated": calibration_metrics(before, references, multi_label),
                   "calibrated": calibration_metrics(scores, references, multi_label) if temperature is not None else None,
                   "reliability_diagram": RELIABILITY_DIAGRAM}
    calibration["ece_before"] = calibration["uncalibrated"]["ece"]
    calibration["ece_after"] = calibration["calibrated"]["ece"] if temperature is not None else None
    if temperature is None:
        notes.append("calibration: the model has no fitted temperature (fine-tune with a validation split or run "
                     "`spcxr calibrate`); ECE after calibration not evaluated")
    sections["calibration"] = calibration
    from . import plots

    plots.reliability_diagram(task, before, scores if temperature is not None else None, references,
                              Path(output_dir) / RELIABILITY_DIAGRAM)

    indices = bootstrap.resample_indices(bootstrap.strata_of(references))
    sections["confidence_intervals"] = headline_intervals(scores, references, labels, multi_label, indices)

    points = getattr(config, "operating_points", None)
    if points:
        rows, point_notes = operating_point_table(scores, references, labels, multi_label, points, indices)
        sections["operating_points"] = {"chosen_on": points["split"], "default": points["default"], "rows": rows}
        notes += point_notes
    else:
        notes.append("operating points: the model has none stored (they are chosen on a validation split); "
                     "sensitivity/specificity/PPV/NPV not evaluated")

    sets = getattr(config, "prediction_sets", None)
    if sets and (sets.get("method") == "multi-label") != multi_label:
        notes.append(f"prediction sets: the stored {sets.get('method')} sets do not fit this task's kind; coverage "
                     "not evaluated (refit them with `spcxr calibrate`)")
    elif sets:
        sections["prediction_sets"] = conformal.set_report(scores, references, sets)
    else:
        notes.append("prediction sets: the model has no conformal threshold (calibrated on a validation split); "
                     "coverage not evaluated")
    return sections, notes
