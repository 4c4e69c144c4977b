"""Chest-X-ray screening metrics as an `evaluate` module: AUROC (per label and mean), accuracy and F1, for the
binary normal / abnormal task and for the 14-label ChestX-ray14 task.

Load it by path (works offline): `evaluate.load("<path>/screening.py")`; the same file can be pushed to the Hub.
"""

import warnings

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

_DESCRIPTION = """Screening metrics in the ChestX-ray14 / CheXNet convention.
Binary input (class ids 0 normal, 1 abnormal, two probabilities per image): accuracy, F1 of the abnormal class and
AUROC of its probability.
Multi-label input (0/1 per label, one probability per label): `auroc_per_label` (NaN, with a warning, for a label
whose references hold one class only: its AUROC is undefined), `auroc` the mean over the other labels,
`auroc_labels` how many labels it averages; `accuracy` the mean per-label accuracy, `exact_match` the share of
images with every label right; `f1` micro-averaged and `f1_macro` over the labels present in the references."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: int class ids (binary) or lists of 0/1 per label (multi-label).
    references: same form as predictions.
    prediction_scores: per-class probabilities (binary: two per image) or per-label probabilities (multi-label).
Returns:
    binary: accuracy, f1, auroc; multi-label: auroc, auroc_labels, auroc_per_label, accuracy, exact_match, f1,
    f1_macro.
Example:
    >>> metric = evaluate.load("plugins/screening/metrics/screening.py")
    >>> metric.compute(predictions=[[1, 0], [0, 1]], references=[[1, 0], [0, 1]],
    ...                prediction_scores=[[0.9, 0.2], [0.1, 0.7]])["auroc"]
    1.0
"""

_CITATION = """@article{rajpurkar2017chexnet,
  title   = {{CheXNet}: Radiologist-Level Pneumonia Detection on Chest {X-Rays} with Deep Learning},
  author  = {Rajpurkar, Pranav and Irvin, Jeremy and Zhu, Kaylie and Yang, Brandon and Mehta, Hershel and
             Duan, Tony and Ding, Daisy and Bagul, Aarti and Langlotz, Curtis and Shpanskaya, Katie and
             Lungren, Matthew P. and Ng, Andrew Y.},
  journal = {arXiv preprint arXiv:1711.05225},
  year    = {2017}
}"""

NIH_LABELS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)

_SCORES = datasets.Sequence(datasets.Value("float64"))
MULTI_LABEL_FEATURES = datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64")),
                                          "references": datasets.Sequence(datasets.Value("int64")),
                                          "prediction_scores": _SCORES})
BINARY_FEATURES = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64"),
                                     "prediction_scores": _SCORES})


def label_names(count: int) -> list[str]:
    return list(NIH_LABELS) if count == len(NIH_LABELS) else [f"label_{i}" for i in range(count)]


def binary_metrics(predictions, references, scores) -> dict:
    auroc = roc_auc_score(references, scores[:, 1]) if len(set(references.tolist())) == 2 else float("nan")
    return {
        "accuracy": float(accuracy_score(references, predictions)),
        "f1": float(f1_score(references, predictions, pos_label=1, zero_division=0.0)),
        "auroc": float(auroc),
    }


def multi_label_metrics(predictions, references, scores) -> dict:
    names = label_names(references.shape[1])
    per_label, skipped = {}, []
    for column, name in enumerate(names):
        if len(set(references[:, column].tolist())) < 2:
            per_label[name] = float("nan")
            skipped.append(name)
        else:
            per_label[name] = float(roc_auc_score(references[:, column], scores[:, column]))
    if skipped:
        warnings.warn(f"AUROC undefined (one class in the references) for {len(skipped)} label(s), left out of the "
                      f"mean: {', '.join(skipped)}", stacklevel=2)
    used = [value for value in per_label.values() if not np.isnan(value)]
    present = np.flatnonzero(references.sum(axis=0) > 0)
    return {
        "auroc": float(np.mean(used)) if used else float("nan"),
        "auroc_labels": float(len(used)),
        "auroc_per_label": per_label,
        "accuracy": float((predictions == references).mean()),
        "exact_match": float(accuracy_score(references, predictions)),
        "f1": float(f1_score(references, predictions, average="micro", zero_division=0.0)),
        "f1_macro": float(f1_score(references, predictions, labels=present, average="macro", zero_division=0.0))
        if present.size else float("nan"),
    }


class Screening(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
                                   features=[MULTI_LABEL_FEATURES, BINARY_FEATURES],
                                   reference_urls=["https://nihcc.app.box.com/v/ChestXray-NIHCC"])

    def _compute(self, predictions, references, prediction_scores):
        predictions, references = np.asarray(predictions), np.asarray(references)
        scores = np.asarray(prediction_scores, dtype=np.float64)
        if references.ndim == 2:
            return multi_label_metrics(predictions, references, scores)
        return binary_metrics(predictions, references, scores)
