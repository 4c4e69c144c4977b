"""Calibration: how far predicted probabilities are from observed frequencies, and temperature scaling to fix it.

Metrics (single-label on the top-1 confidence as in Guo et al., "On Calibration of Modern Neural Networks", ICML 2017;
multi-label per label on the probability of the positive class, then averaged over labels):

* ECE: expected calibration error over 15 equal-width confidence bins;
* adaptive ECE: the same over 15 equal-mass bins (Nixon et al., "Measuring Calibration in Deep Learning", 2019),
  less sensitive to empty high-confidence bins;
* Brier score (mean squared error of the probability vector) and negative log-likelihood.

Temperature scaling divides the logits by one fitted T (single-label) or one T per label (multi-label), chosen to
minimise the NLL on a validation split. It leaves the argmax and every per-label ranking unchanged, so accuracy and
AUROC do not move. The model applies it in `forward` (`SpcxrConfig.temperature`).
"""

import numpy as np
import torch

BINS = 15
EPSILON = 1e-12


def _binned_gap(confidence: np.ndarray, correct: np.ndarray, edges: np.ndarray) -> float:
    """Σ_bins (n_bin / N) · |mean confidence − observed frequency| for bins given by their edges."""
    bins = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, len(edges) - 2)
    confidence_sum = np.bincount(bins, weights=confidence, minlength=len(edges) - 1)
    correct_sum = np.bincount(bins, weights=correct.astype(float), minlength=len(edges) - 1)
    return float(np.abs(confidence_sum - correct_sum).sum() / max(1, len(confidence)))


def expected_calibration_error(confidence, correct, bins: int = BINS) -> float:
    """ECE with `bins` equal-width bins over [0, 1]."""
    return _binned_gap(np.asarray(confidence, float), np.asarray(correct), np.linspace(0, 1, bins + 1))


def adaptive_calibration_error(confidence, correct, bins: int = BINS) -> float:
    """ECE with `bins` equal-mass bins (edges at the quantiles of the confidences)."""
    confidence = np.asarray(confidence, float)
    edges = np.quantile(confidence, np.linspace(0, 1, bins + 1)) if len(confidence) else np.linspace(0, 1, bins + 1)
    return _binned_gap(confidence, np.asarray(correct), edges)


def reliability_inputs(scores: np.ndarray, references: np.ndarray, multi_label: bool) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) pairs a reliability diagram and the ECE are computed from: the top-1 confidence and
    whether it was right (single-label), or every (image, label) probability and whether the label is present."""
    if multi_label:
        return scores.ravel(), references.ravel().astype(bool)
    return scores.max(axis=1), scores.argmax(axis=1) == references


def calibration_metrics(scores, references, multi_label: bool) -> dict:
    """ECE, adaptive ECE, Brier score and NLL of probabilities `scores` (N, K) against `references` ((N,) class ids
    or (N, K) 0/1)."""
    scores, references = np.asarray(scores, float), np.asarray(references)
    if multi_label:
        eces = [expected_calibration_error(scores[:, k], references[:, k]) for k in range(scores.shape[1])]
        adaptive = [adaptive_calibration_error(scores[:, k], references[:, k]) for k in range(scores.shape[1])]
        clipped = np.clip(scores, EPSILON, 1 - EPSILON)
        nll = -(references * np.log(clipped) + (1 - references) * np.log(1 - clipped)).mean()
        return {"ece": float(np.mean(eces)), "adaptive_ece": float(np.mean(adaptive)), "ece_per_label": eces,
                "brier": float(((scores - references) ** 2).mean()), "nll": float(nll), "bins": BINS}
    confidence, correct = reliability_inputs(scores, references, multi_label)
    one_hot = np.eye(scores.shape[1])[references]
    return {"ece": expected_calibration_error(confidence, correct),
            "adaptive_ece": adaptive_calibration_error(confidence, correct),
            "brier": float(((scores - one_hot) ** 2).sum(axis=1).mean()),
            "nll": float(-np.log(np.clip(scores[np.arange(len(references)), references], EPSILON, 1)).mean()),
            "bins": BINS}


def probabilities(logits, multi_label: bool) -> np.ndarray:
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    return (torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)).numpy()


def fit_temperature(logits, references, multi_label: bool) -> float | list[float]:
    """The temperature(s) minimising the NLL of `logits / T` (L-BFGS on log T, so T stays positive): one float for
    single-label, a list with one T per label for multi-label (the per-label losses are independent, so one joint
    minimisation of their sum finds each label's own T)."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    references = torch.as_tensor(np.asarray(references))
    log_t = torch.zeros(logits.shape[1] if multi_label else 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        scaled = logits / log_t.exp()
        if multi_label:
            value = torch.nn.functional.binary_cross_entropy_with_logits(scaled, references.double(),
                                                                         reduction="none").mean(0).sum()
        else:
            value = torch.nn.functional.cross_entropy(scaled, references.long())
        value.backward()
        return value

    optimizer.step(loss)
    # Bounded: a validation split the model gets all right drives T → 0 (and all wrong → ∞); neither generalises.
    temperatures = log_t.detach().exp().clamp(0.05, 100.0).tolist()
    return [round(t, 6) for t in temperatures] if multi_label else round(temperatures[0], 6)
