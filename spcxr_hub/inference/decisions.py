"""What a prediction means for one image, beyond its scores: `positive` at the model's stored operating points and
the conformal `prediction_set` (see `spcxr_hub.evaluation.operating_points` and `.conformal`, which fit them on a
validation split and store them in the model's config).

One function, `decisions(scores, config)`, so every runtime (`spcxr predict`, the lean classifier, exported models'
runtimes) turns probabilities into the same decisions. numpy only: it runs in the lean start-up path.
"""

import numpy as np


def aps_included(probabilities: np.ndarray, threshold: float, nonempty: bool = True) -> np.ndarray:
    """Adaptive prediction sets (APS; Romano, Sesia & Candès, "Classification with Valid and Adaptive Coverage",
    NeurIPS 2020), non-randomised as in Angelopoulos & Bates (2021, section 2.1): per row, the classes whose
    summed probability, from the most probable down to and including themselves, is ≤ `threshold`. That set is
    empty when the top class alone exceeds the threshold (a confident image); with `nonempty` the top class is then
    returned, which keeps coverage ≥ 1 − α (a clinician reads an empty set as an error). (N, K) → (N, K) bool."""
    probabilities = np.atleast_2d(np.asarray(probabilities, float))
    order = np.argsort(-probabilities, axis=1, kind="stable")
    mass = np.cumsum(np.take_along_axis(probabilities, order, axis=1), axis=1)
    # float32 probabilities (every runtime's output) sum to 1 only within ~1e-7: a threshold of 1 must include all.
    ranked_in = mass <= threshold + 1e-6
    if nonempty:
        ranked_in[:, 0] = True
    included = np.zeros_like(probabilities, dtype=bool)
    np.put_along_axis(included, order, ranked_in, axis=1)
    return included


def multilabel_included(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """The multi-label conformal set (`evaluation/conformal.py`): the labels with probability ≥ 1 − `threshold`
    (float32 tolerance as above). (N, K) → (N, K) bool; a row may be empty (no finding)."""
    return np.atleast_2d(np.asarray(probabilities, float)) >= 1.0 - threshold - 1e-6


def _label(config, k: int) -> str:
    id2label = config.id2label
    return id2label[k] if k in id2label else id2label[str(k)]


def decisions(scores, config) -> dict:
    """`{"positive": {label: bool}, "prediction_set": [labels]}` for one image's probabilities (K,), each key present
    only when the model's config carries what it needs (`operating_points`, `prediction_sets`)."""
    scores = np.asarray(scores, float)
    result = {}
    points = getattr(config, "operating_points", None)
    if points:
        criterion = points["default"]
        labels = {_label(config, k): k for k in range(len(scores))}
        result["operating_point"] = criterion
        result["positive"] = {label: bool(scores[labels[label]] >= thresholds[criterion])
                              for label, thresholds in points["thresholds"].items()}
    sets = getattr(config, "prediction_sets", None)
    if sets:
        multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
        included = (multilabel_included if multi_label else aps_included)(scores[None], sets["threshold"])[0]
        order = np.argsort(-scores, kind="stable")
        result["prediction_set"] = [_label(config, int(k)) for k in order if included[k]]
    return result
