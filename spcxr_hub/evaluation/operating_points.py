"""Operating points: per positive class, the score threshold that reaches a target sensitivity (a rule-out screen)
and one that reaches a target specificity (a rule-in), chosen on the validation split, and what they give on the
test split: sensitivity, specificity, PPV and NPV with bootstrap intervals.

A 0.5 threshold means nothing clinically (torchxrayvision's `op_threshs` questions are about exactly this): the
thresholds are stored with the model (`SpcxrConfig.operating_points`) and `predict` reports `positive` at the
default one (`spcxr_hub.inference.decisions`).
"""

import math

import numpy as np

from . import bootstrap

DEFAULT_TARGET_SENSITIVITY = 0.95
DEFAULT_TARGET_SPECIFICITY = 0.95
CRITERIA = ("sensitivity", "specificity")


def positive_classes(labels, multi_label: bool) -> list[int]:
    """The classes an operating point is chosen for: every label (multi-label), the second class of a binary task
    (the finding; class 0 is the normal/negative one), every class one-vs-rest otherwise."""
    return [1] if not multi_label and len(labels) == 2 else list(range(len(labels)))


def one_vs_rest(scores: np.ndarray, references: np.ndarray, k: int, multi_label: bool):
    truth = references[:, k] if multi_label else references == k
    return scores[:, k], np.asarray(truth, bool)


def threshold_for_sensitivity(positive_scores: np.ndarray, target: float) -> float:
    """The highest threshold t with a fraction ≥ target of the positives scoring ≥ t."""
    ordered = np.sort(positive_scores)[::-1]
    return float(ordered[max(1, math.ceil(target * len(ordered))) - 1])


def threshold_for_specificity(negative_scores: np.ndarray, target: float) -> float:
    """The lowest threshold t with a fraction ≥ target of the negatives scoring < t."""
    ordered = np.sort(negative_scores)
    return float(np.nextafter(ordered[max(1, math.ceil(target * len(ordered))) - 1], np.inf))


def fit_operating_points(scores, references, labels, multi_label: bool, *, split: str,
                         target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
                         target_specificity: float = DEFAULT_TARGET_SPECIFICITY) -> tuple[dict | None, list[str]]:
    """Thresholds on a validation split → (the config's `operating_points`, or None; notes on what was skipped)."""
    for name, target in (("--target-sensitivity", target_sensitivity), ("--target-specificity", target_specificity)):
        if not 0 < target < 1:
            from ..errors import UsageError

            raise UsageError(f"{name} must be between 0 and 1 (exclusive), got {target}")
    scores, references = np.asarray(scores, float), np.asarray(references)
    thresholds, notes = {}, []
    for k in positive_classes(labels, multi_label):
        score, truth = one_vs_rest(scores, references, k, multi_label)
        if truth.all() or not truth.any():
            notes.append(f"operating point for {labels[k]!r} skipped: split {split!r} has no "
                         f"{'negative' if truth.all() else 'positive'} image of it")
            continue
        thresholds[labels[k]] = {"sensitivity": threshold_for_sensitivity(score[truth], target_sensitivity),
                                 "specificity": threshold_for_specificity(score[~truth], target_specificity)}
    if not thresholds:
        return None, notes
    return {"split": split, "default": "sensitivity", "target_sensitivity": target_sensitivity,
            "target_specificity": target_specificity, "thresholds": thresholds}, notes


def operating_point_table(scores, references, labels, multi_label: bool, points: dict,
                          indices: np.ndarray) -> tuple[list[dict], list[str]]:
    """One row per (class, criterion) of the stored operating points: the threshold, the target, and sensitivity,
    specificity, PPV and NPV on this split with their bootstrap intervals."""
    scores, references = np.asarray(scores, float), np.asarray(references)
    rows, notes = [], []
    for label, thresholds in points["thresholds"].items():
        k = list(labels).index(label)
        score, truth = one_vs_rest(scores, references, k, multi_label)
        if truth.all() or not truth.any():
            notes.append(f"operating point for {label!r}: this split has no {'negative' if truth.all() else 'positive'} "
                         f"image; sensitivity/specificity not evaluated")
        for criterion in CRITERIA:
            rates = bootstrap.rates_at(score, truth, thresholds[criterion])
            rows.append({"label": label, "criterion": criterion, "target": points[f"target_{criterion}"],
                         "threshold": thresholds[criterion], "default": criterion == points["default"],
                         **{name: bootstrap.interval(statistic, indices, len(score))
                            for name, statistic in rates.items()}})
    return rows, notes
