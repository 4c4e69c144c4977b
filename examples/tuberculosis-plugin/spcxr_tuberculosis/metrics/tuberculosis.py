"""Tuberculosis screening metrics as an `evaluate` module: accuracy, AUROC, sensitivity and specificity.

Load it by path (works offline): `evaluate.load("<path>/tuberculosis.py")`; the same file can be pushed to the Hub
as a metric (`evaluate-cli create`, then copy this file in).
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

_DESCRIPTION = """Binary tuberculosis screening metrics. Classes: 0 normal, 1 tuberculosis.
Sensitivity = TP / (TP + FN), specificity = TN / (TN + FP) (NaN when the references have no positive, resp. no
negative); AUROC uses the tuberculosis probability and is NaN when the references hold one class only."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    prediction_scores (list of list of float): [p(normal), p(tuberculosis)] per image.
Returns:
    accuracy, auroc, sensitivity, specificity (floats).
Example:
    >>> metric = evaluate.load("spcxr_tuberculosis/metrics/tuberculosis.py")
    >>> metric.compute(predictions=[1, 0], references=[1, 1], prediction_scores=[[0.3, 0.7], [0.6, 0.4]])["sensitivity"]
    0.5
"""

_CITATION = """@article{fawcett2006roc,
  title   = {An introduction to {ROC} analysis},
  author  = {Fawcett, Tom},
  journal = {Pattern Recognition Letters},
  volume  = {27},
  number  = {8},
  pages   = {861--874},
  year    = {2006}
}"""

FEATURES = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64"),
                              "prediction_scores": datasets.Sequence(datasets.Value("float64"), length=2)})
DATASET_PAPER = "https://doi.org/10.3978/j.issn.2223-4292.2014.11.20"  # Jaeger et al., QIMS 2014


def ratio(numerator: int, denominator: int) -> float:
    return float(numerator / denominator) if denominator else float("nan")


class Tuberculosis(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
                                   features=FEATURES, reference_urls=[DATASET_PAPER])

    def _compute(self, predictions, references, prediction_scores):
        (tn, fp), (fn, tp) = confusion_matrix(references, predictions, labels=[0, 1])
        scores = np.asarray(prediction_scores, dtype=np.float64)[:, 1]
        auroc = roc_auc_score(references, scores) if len(set(references)) == 2 else float("nan")
        return {
            "accuracy": ratio(tp + tn, tp + tn + fp + fn),
            "auroc": float(auroc),
            "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp),
        }
