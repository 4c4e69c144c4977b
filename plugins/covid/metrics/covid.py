"""COVIDx metrics as an `evaluate` module: per-class accuracy, sensitivity, specificity, PPV, accuracy and AUROC.

Load it by path (works offline): `evaluate.load("<path>/covid.py")`; the same file can be pushed to the Hub as a
metric Space.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score

_DESCRIPTION = """Binary COVID-19 detection metrics in the COVID-Net / COVIDx convention. Classes: 0 negative,
1 positive. `accuracy_<class>` is the recall of that class (the per-class accuracy tables of COVIDx papers report),
so `accuracy_positive` equals sensitivity and `accuracy_negative` specificity. PPV is the precision of positive
predictions; AUROC uses the positive-class probability and is NaN when the references hold one class only."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids (0 negative, 1 positive).
    references (list of int): true class ids.
    prediction_scores (list of list of float): per-class probabilities, two per image.
Returns:
    accuracy, accuracy_negative, accuracy_positive, sensitivity, specificity, ppv, auroc (floats).
Example:
    >>> metric = evaluate.load("plugins/covid/metrics/covid.py")
    >>> metric.compute(predictions=[1, 0], references=[1, 0], prediction_scores=[[0.2, 0.8], [0.9, 0.1]])["ppv"]
    1.0
"""

_CITATION = """@article{wang2020covidnet,
  title   = {{COVID-Net}: a tailored deep convolutional neural network design for detection of {COVID-19} cases
             from chest {X-ray} images},
  author  = {Wang, Linda and Lin, Zhong Qiu and Wong, Alexander},
  journal = {Scientific Reports},
  volume  = {10},
  pages   = {19549},
  year    = {2020}
}"""

CLASSES = ("negative", "positive")
FEATURES = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64"),
                              "prediction_scores": datasets.Sequence(datasets.Value("float64"), length=len(CLASSES))})


class Covid(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
                                   features=FEATURES, reference_urls=["https://github.com/lindawangg/COVID-Net"])

    def _compute(self, predictions, references, prediction_scores):
        references, predictions = np.asarray(references), np.asarray(predictions)
        per_class = recall_score(references, predictions, labels=[0, 1], average=None, zero_division=0.0)
        scores = np.asarray(prediction_scores, dtype=np.float64)[:, 1]
        results = {f"accuracy_{name}": float(value) for name, value in zip(CLASSES, per_class)}
        results.update(
            accuracy=float(accuracy_score(references, predictions)),
            sensitivity=float(per_class[1]),
            specificity=float(per_class[0]),
            ppv=float(precision_score(references, predictions, pos_label=1, zero_division=0.0)),
            auroc=float(roc_auc_score(references, scores)) if len(set(references.tolist())) == 2 else float("nan"),
        )
        return results
