"""Out-of-distribution score: the Mahalanobis distance of an image's pooled features (the classifier head's input)
to the training set's, numpy only, so that any runtime that outputs the pooled features (ONNX, OpenVINO) can score.

`ood_statistics.safetensors` in the model directory holds `mean` (D,) and `precision` (D, D) (the inverse of a
Ledoit-Wolf shrunk covariance: the tiny models of the tests have more feature dimensions than a class has images)
and, as metadata, the `threshold`: the stated `percentile` of the training images' distances, each computed
*cross-fitted* (its fold left out of the mean and covariance), so that the threshold holds for new images of the
training distribution rather than the images the statistics were fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["OOD_FILE", "OodStatistics", "fit", "ledoit_wolf", "load", "missing_line"]

OOD_FILE = "ood_statistics.safetensors"
DEFAULT_PERCENTILE = 99.5
FOLDS = 5


@dataclass(frozen=True)
class OodStatistics:
    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D)
    threshold: float
    percentile: float
    num_images: int

    def score(self, features: np.ndarray) -> np.ndarray:
        """(N, D) pooled features → (N,) Mahalanobis distances."""
        return _distances(np.asarray(features, dtype=np.float64), self.mean, self.precision)

    def findings(self, score: float) -> list[dict]:
        if score <= self.threshold:
            return []
        return [{"code": "out-of-distribution",
                 "reason": f"embedding distance {score:.1f} to the training set exceeds {self.threshold:.1f}, the "
                           f"{self.percentile:g}th percentile of the {self.num_images} training images' distances"}]

    def save(self, directory: str | Path) -> Path:
        from safetensors.numpy import save_file

        path = Path(directory) / OOD_FILE
        save_file({"mean": self.mean.astype(np.float64), "precision": self.precision.astype(np.float64)}, str(path),
                  metadata={"threshold": repr(self.threshold), "percentile": repr(self.percentile),
                            "num_images": str(self.num_images),
                            "features": "pooled features: the input of the classification head"})
        return path


def _distances(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    centred = features - mean
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, precision, centred), 0.0))


def ledoit_wolf(features: np.ndarray) -> np.ndarray:
    """The Ledoit-Wolf shrunk covariance (Ledoit & Wolf 2004; the formula scikit-learn's `ledoit_wolf` uses)."""
    x = features - features.mean(axis=0)
    n, p = x.shape
    empirical = x.T @ x / n
    mu = np.trace(empirical) / p
    x2 = x * x
    beta = ((x2.T @ x2).sum() / n - (empirical * empirical).sum()) / (p * n)
    delta = ((empirical - mu * np.eye(p)) ** 2).sum() / p
    shrinkage = 0.0 if delta == 0 else min(beta, delta) / delta
    return (1.0 - shrinkage) * empirical + shrinkage * mu * np.eye(p)


def _precision(features: np.ndarray) -> np.ndarray:
    covariance = ledoit_wolf(features)
    ridge = 1e-4 * max(np.trace(covariance) / len(covariance), 1e-12)  # keeps a constant feature invertible
    return np.linalg.inv(covariance + ridge * np.eye(len(covariance)))


def fit(features: np.ndarray, percentile: float = DEFAULT_PERCENTILE, folds: int = FOLDS) -> OodStatistics:
    """Statistics of (N, D) training features; the threshold from cross-fitted distances (see the module's doc)."""
    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    if n < 2 * folds:
        raise ValueError(f"OOD statistics need at least {2 * folds} training images, got {n}")
    order = np.random.default_rng(0).permutation(n)
    held_out = np.empty(n)
    for fold in np.array_split(order, folds):
        rest = np.setdiff1d(order, fold)
        held_out[fold] = _distances(features[fold], features[rest].mean(axis=0), _precision(features[rest]))
    return OodStatistics(features.mean(axis=0), _precision(features), float(np.percentile(held_out, percentile)),
                         float(percentile), n)


def load(directory: str | Path) -> OodStatistics | None:
    """The model directory's statistics, or None when it has none (a model fine-tuned before they existed)."""
    path = Path(directory) / OOD_FILE
    if not path.is_file():
        return None
    from safetensors import safe_open
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    with safe_open(str(path), framework="np") as handle:
        meta = handle.metadata() or {}
    return OodStatistics(tensors["mean"], tensors["precision"], float(meta["threshold"]), float(meta["percentile"]),
                         int(meta["num_images"]))


def missing_line(model: str) -> str:
    return (f"{model}: no {OOD_FILE} (fine-tuned before OOD statistics existed), so ood_score is unavailable; add it "
            f"with: spcxr ood-statistics TASK --model {model} --data TRAINING_DATA")
