"""Split conformal prediction sets with APS scores (Romano, Sesia & Candès, NeurIPS 2020; the recipe as in
Angelopoulos & Bates, "A Gentle Introduction to Conformal Prediction and Distribution-Free Uncertainty
Quantification", 2021, section 2.1): on a validation (calibration) split of n images, the score of an image is the
probability mass of the classes ranked at or above its true class; the threshold is the ⌈(n + 1)(1 − α)⌉-th smallest
score. On exchangeable new images the sets of classes within that mass contain the true class with probability
between 1 − α and 1 − α + 1/(n + 1); the sets returned add the top class where that set is empty (≥ 1 − α still).

A small implementation rather than TorchCP or MAPIE: they expect a torch model or an sklearn estimator to wrap,
while here the probabilities are already computed, and the whole method is the ten lines below. Single-label tasks
only: for multi-label tasks each label is a yes/no question the operating points answer.
"""

import math

import numpy as np

from ..inference.decisions import aps_included

DEFAULT_COVERAGE = 0.9


def aps_scores(probabilities: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Per image, the summed probability of the classes at least as probable as the true one (ties: the stable
    order `aps_included` uses)."""
    order = np.argsort(-probabilities, axis=1, kind="stable")
    ranked = np.take_along_axis(probabilities, order, axis=1)
    rank_of_truth = np.argmax(order == references[:, None], axis=1)
    return np.cumsum(ranked, axis=1)[np.arange(len(references)), rank_of_truth]


def calibrate(probabilities, references, coverage: float = DEFAULT_COVERAGE, *, split: str) -> dict:
    """The config's `prediction_sets` from a calibration split."""
    if not 0 < coverage < 1:
        from ..errors import UsageError

        raise UsageError(f"--coverage must be between 0 and 1 (exclusive), got {coverage}")
    scores = aps_scores(np.asarray(probabilities, float), np.asarray(references, int))
    n = len(scores)
    rank = math.ceil((n + 1) * coverage)
    # Too few calibration images for this coverage: only the full set is guaranteed (threshold above any mass).
    threshold = float(np.sort(scores)[rank - 1]) if rank <= n else 1.0 + 1e-9
    return {"method": "APS", "coverage": coverage, "threshold": threshold, "split": split, "num_calibration": n}


def set_report(probabilities, references, sets: dict) -> dict:
    """Empirical coverage and set sizes of the stored prediction sets on a split."""
    included = aps_included(np.asarray(probabilities, float), sets["threshold"])
    references = np.asarray(references, int)
    sizes = included.sum(axis=1)
    return {"method": sets["method"], "target_coverage": sets["coverage"], "calibration_split": sets["split"],
            "num_calibration": sets["num_calibration"],
            "empirical_coverage": float(included[np.arange(len(references)), references].mean()),
            "mean_set_size": float(sizes.mean()),
            "exact_set_empty_fraction": float((~aps_included(probabilities, sets["threshold"], False)).all(1).mean()),
            "set_size_counts": {str(size): int((sizes == size).sum()) for size in range(1, included.shape[1] + 1)}}
