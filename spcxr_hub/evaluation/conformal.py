"""Split conformal prediction sets with APS scores (Romano, Sesia & Candès, NeurIPS 2020; the recipe as in
Angelopoulos & Bates, "A Gentle Introduction to Conformal Prediction and Distribution-Free Uncertainty
Quantification", 2021, section 2.1): on a validation (calibration) split of n images, the score of an image is the
probability mass of the classes ranked at or above its true class; the threshold is the ⌈(n + 1)(1 − α)⌉-th smallest
score. On exchangeable new images the sets of classes within that mass contain the true class with probability
between 1 − α and 1 − α + 1/(n + 1); the sets returned add the top class where that set is empty (≥ 1 − α still).

Multi-label tasks get the same guarantee for the whole set of findings present: the score of an image is one minus
the lowest probability among its present labels (0 when it has none), and the set of labels with probability at
least 1 − threshold contains every present label with probability ≥ 1 − α (split conformal on that score, as in
Angelopoulos & Bates 2021, section 4.4, with the "contains all true labels" loss). That set may be empty: no finding.

A small implementation rather than TorchCP or MAPIE: they expect a torch model or an sklearn estimator to wrap,
while here the probabilities are already computed, and the whole method is the lines below.
"""

import math

import numpy as np

from ..inference.decisions import aps_included, multilabel_included

DEFAULT_COVERAGE = 0.9


def aps_scores(probabilities: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Per image, the summed probability of the classes at least as probable as the true one (ties: the stable
    order `aps_included` uses)."""
    order = np.argsort(-probabilities, axis=1, kind="stable")
    ranked = np.take_along_axis(probabilities, order, axis=1)
    rank_of_truth = np.argmax(order == references[:, None], axis=1)
    return np.cumsum(ranked, axis=1)[np.arange(len(references)), rank_of_truth]


def multilabel_scores(probabilities: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Per image, 1 − the lowest probability of its present labels (0 for none): the smallest threshold whose set
    `multilabel_included` holds all of them."""
    present = np.asarray(references) > 0.5
    lowest = np.where(present, probabilities, np.inf).min(axis=1)
    return np.where(present.any(axis=1), 1.0 - lowest, 0.0)


def calibrate(probabilities, references, coverage: float = DEFAULT_COVERAGE, *, split: str,
              multi_label: bool = False) -> dict:
    """The config's `prediction_sets` from a calibration split."""
    if not 0 < coverage < 1:
        from ..errors import UsageError

        raise UsageError(f"--coverage must be between 0 and 1 (exclusive), got {coverage}")
    probabilities = np.asarray(probabilities, float)
    scores = multilabel_scores(probabilities, references) if multi_label else \
        aps_scores(probabilities, np.asarray(references, int))
    n = len(scores)
    rank = math.ceil((n + 1) * coverage)
    # Too few calibration images for this coverage: only the full set is guaranteed (threshold above any score).
    threshold = float(np.sort(scores)[rank - 1]) if rank <= n else 1.0 + 1e-9
    return {"method": "multi-label" if multi_label else "APS", "coverage": coverage, "threshold": threshold,
            "split": split, "num_calibration": n}


def set_report(probabilities, references, sets: dict) -> dict:
    """Empirical coverage and set sizes of the stored prediction sets on a split (multi-label: a set covers an image
    when it holds every present label)."""
    probabilities = np.asarray(probabilities, float)
    multi_label = sets["method"] == "multi-label"
    if multi_label:
        included = multilabel_included(probabilities, sets["threshold"])
        covered = ~(~included & (np.asarray(references) > 0.5)).any(axis=1)
    else:
        included = aps_included(probabilities, sets["threshold"])
        references = np.asarray(references, int)
        covered = included[np.arange(len(references)), references]
    sizes = included.sum(axis=1)
    report = {"method": sets["method"], "target_coverage": sets["coverage"], "calibration_split": sets["split"],
              "num_calibration": sets["num_calibration"], "empirical_coverage": float(covered.mean()),
              "mean_set_size": float(sizes.mean()),
              "set_size_counts": {str(size): int((sizes == size).sum())
                                  for size in range(0 if multi_label else 1, included.shape[1] + 1)}}
    if not multi_label:
        report["exact_set_empty_fraction"] = float((~aps_included(probabilities, sets["threshold"], False)).all(1).mean())
    return report
