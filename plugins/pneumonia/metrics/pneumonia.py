"""Pneumonia classification metrics as an `evaluate` module: accuracy, F1 and AUROC, for two or more classes.

Load it by path (works offline): `evaluate.load("<path>/pneumonia.py")`; the same file can be pushed to the Hub.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

_DESCRIPTION = """Accuracy, F1 and area under the ROC curve of a pneumonia classifier.
Two classes (0 normal, 1 pneumonia): binary F1 of the pneumonia class and AUROC of its probability.
More classes (normal, bacterial, viral): macro F1 and one-vs-rest macro AUROC. AUROC is NaN when a class is missing
from the references."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    prediction_scores (list of list of float): per-class probabilities (K per image, summing to 1).
Returns:
    accuracy, f1, auroc (floats).
Example:
    >>> metric = evaluate.load("plugins/pneumonia/metrics/pneumonia.py")
    >>> metric.compute(predictions=[0, 1], references=[0, 1], prediction_scores=[[0.7, 0.3], [0.1, 0.9]])["f1"]
    1.0
"""

_CITATION = """@article{pedregosa2011scikit,
  title   = {Scikit-learn: Machine Learning in {P}ython},
  author  = {Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
             Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
             Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal = {Journal of Machine Learning Research},
  volume  = {12},
  pages   = {2825--2830},
  year    = {2011}
}"""

KERMANY_URL = "https://data.mendeley.com/datasets/rscbjbr9sj/2"
# K class probabilities per image: two for the `pneumonia` task, three for `pneumonia-3class`.
FEATURES = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64"),
                              "prediction_scores": datasets.Sequence(datasets.Value("float64"))})


class Pneumonia(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
                                   features=FEATURES, reference_urls=[KERMANY_URL])

    def _compute(self, predictions, references, prediction_scores):
        scores = np.asarray(prediction_scores, dtype=np.float64)
        classes = list(range(scores.shape[1]))
        binary = len(classes) == 2
        average = "binary" if binary else "macro"
        f1 = f1_score(references, predictions, labels=classes, average=average, zero_division=0.0)
        if set(references) != set(classes):
            auroc = float("nan")
        elif binary:
            auroc = roc_auc_score(references, scores[:, 1])
        else:
            auroc = roc_auc_score(references, scores, multi_class="ovr", average="macro", labels=classes)
        return {"accuracy": float(accuracy_score(references, predictions)), "f1": float(f1), "auroc": float(auroc)}
