"""Calibration through the real commands: `finetune` fits temperature scaling, operating points and conformal sets
on the validation split; `spcxr calibrate` does it for a saved model; `evaluate` reports ECE before and after,
intervals, the operating points and the sets' coverage; every user path (pipeline, predict, native export) returns
the calibrated probabilities and the decisions."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json

import numpy as np
import pytest
import torch
from conftest import fresh_python, spcxr, tiny_config_kwargs
from safetensors.torch import load_file, save_file

from spcxr_hub.plugins.registry import get_task

TINY = ["--init", "scratch", "--config", "tiny", "--image-size", "64", "--batch-size", "8"]
OVERCONFIDENCE = 8.0  # logits × 8: over-confident, yet float32 softmax does not saturate (ties would move AUROC)


def metrics(directory):
    return json.loads((directory / "metrics.json").read_text())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Kermany layout (train/val/test) with 10 normal, 10 bacterial and 10 viral phantoms per split."""
    return get_task("pneumonia").write_synthetic(tmp_path_factory.mktemp("data") / "pneumonia", 10, 0)


@pytest.fixture(scope="module")
def calibrated(data, tmp_path_factory):
    """`finetune` with the defaults: calibrated on the validation split."""
    out = tmp_path_factory.mktemp("models") / "calibrated"
    spcxr("finetune", "pneumonia", "--data", data, "--output-dir", out, "--max-steps", 20, *TINY)
    return out


@pytest.fixture(scope="module")
def overconfident(data, tmp_path_factory):
    """A model fine-tuned without calibration whose classifier is then scaled to be over-confident, evaluated,
    calibrated with `spcxr calibrate` and evaluated again: (model directory, report before, report after)."""
    root = tmp_path_factory.mktemp("overconfident")
    model = root / "model"
    # CLS pooling, so that the same model also has a native transformers export (ViT pools the CLS token).
    settings = {k: v for k, v in tiny_config_kwargs().items() if k != "image_size"}
    (root / "vit.json").write_text(json.dumps({**settings, "classifier_pooling": "cls"}))
    spcxr("finetune", "pneumonia", "--data", data, "--output-dir", model, "--max-steps", 20, "--no-calibrate",
          "--init", "scratch", "--config", root / "vit.json", "--image-size", 64, "--batch-size", 8)
    weights = load_file(model / "model.safetensors")
    for name in ("classifier.weight", "classifier.bias"):
        weights[name] = weights[name] * OVERCONFIDENCE
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    spcxr("evaluate", "pneumonia", "--model", model, "--data", data, "--output-dir", root / "before")
    spcxr("calibrate", "pneumonia", "--model", model, "--data", data)
    spcxr("evaluate", "pneumonia", "--model", model, "--data", data, "--output-dir", root / "after")
    return model, metrics(root / "before"), metrics(root / "after")


def test_temperature_scaling_lowers_ece_of_an_overconfident_model_and_keeps_accuracy_and_auroc(overconfident):
    model, before, after = overconfident
    assert before["calibration"]["temperature"] is None and before["calibration"]["ece_after"] is None
    temperature = json.loads((model / "config.json").read_text())["temperature"]
    assert temperature > 1  # over-confident: the fitted temperature softens the logits
    assert after["calibration"]["temperature"] == temperature
    # The "before" of the calibrated model is the uncalibrated model's ECE, recovered from the same forward pass.
    assert after["calibration"]["ece_before"] == pytest.approx(before["calibration"]["ece_before"], abs=1e-6)
    assert after["calibration"]["ece_after"] < 0.6 * before["calibration"]["ece_before"]
    assert after["calibration"]["calibrated"]["nll"] < before["calibration"]["uncalibrated"]["nll"]
    for name in ("accuracy", "auroc"):
        assert after["metrics"][name] == pytest.approx(before["metrics"][name], abs=1e-9), name
    for report in (before, after):
        assert set(report["calibration"]["uncalibrated"]) >= {"ece", "adaptive_ece", "brier", "nll"}


def test_finetune_calibrates_on_the_validation_split_by_default(calibrated):
    config = json.loads((calibrated / "config.json").read_text())
    assert isinstance(config["temperature"], float) and config["temperature"] > 0
    assert config["operating_points"]["split"] == "val" and config["prediction_sets"]["split"] == "val"
    report = metrics(calibrated)
    assert report["calibration"]["ece_before"] is not None and report["calibration"]["ece_after"] is not None
    assert (calibrated / "reliability_diagram.png").stat().st_size > 1000
    log = json.loads((calibrated / "training_log.json").read_text())
    assert log["validation_fit"]["temperature"] == config["temperature"]


def test_headline_metrics_have_stratified_bootstrap_intervals(calibrated):
    intervals = metrics(calibrated)["confidence_intervals"]
    assert intervals["resamples"] >= 1000 and intervals["level"] == 0.95 and intervals["stratified_by"] == "class"
    for name in ("accuracy", "auroc/pneumonia", "ece"):
        row = intervals["metrics"][name]
        assert row["low"] <= row["value"] <= row["high"], name
    assert intervals["metrics"]["accuracy"]["value"] == pytest.approx(metrics(calibrated)["metrics"]["accuracy"])


def test_evaluate_reports_the_operating_points_and_the_coverage_of_the_sets(calibrated):
    report = metrics(calibrated)
    rows = {(row["label"], row["criterion"]): row for row in report["operating_points"]["rows"]}
    assert set(rows) == {("pneumonia", "sensitivity"), ("pneumonia", "specificity")}
    for row in rows.values():
        for name in ("sensitivity", "specificity", "ppv", "npv"):
            assert row[name]["value"] is None or row[name]["low"] <= row[name]["value"] <= row[name]["high"]
    assert rows["pneumonia", "sensitivity"]["threshold"] <= rows["pneumonia", "specificity"]["threshold"]
    sets = report["prediction_sets"]
    assert sets["target_coverage"] == 0.9 and 0 <= sets["empirical_coverage"] <= 1 and 1 <= sets["mean_set_size"] <= 2


def test_predict_reports_positive_at_the_operating_point_and_the_prediction_set(calibrated, data):
    config = json.loads((calibrated / "config.json").read_text())
    threshold = config["operating_points"]["thresholds"]["pneumonia"]["sensitivity"]
    results = json.loads(spcxr("predict", "--model", calibrated, data / "test", "--json").stdout)
    assert len(results) == 30
    for result in results:
        score = {p["label"]: p["score"] for p in result["predictions"]}["pneumonia"]
        assert result["positive"] == {"pneumonia": score >= threshold} or abs(score - threshold) < 1e-6
        assert result["operating_point"] == "sensitivity"
        assert result["prediction_set"] and set(result["prediction_set"]) <= {"normal", "pneumonia"}


def test_calibrated_probabilities_reach_the_pipeline_predict_and_the_native_export(overconfident, data, tmp_path):
    """Each path in a fresh process, as a user starts it; all agree with softmax(logits / T), not softmax(logits)."""
    import spcxr_hub  # noqa: F401
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model_dir = overconfident[0]
    image = sorted((data / "test" / "PNEUMONIA").iterdir())[0]
    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    pixels = AutoImageProcessor.from_pretrained(model_dir)(str(image), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        calibrated_scores = model(pixel_values=pixels).logits.softmax(-1)[0].tolist()
        model.config.temperature = None
        raw_scores = model(pixel_values=pixels).logits.softmax(-1)[0].tolist()
    assert abs(calibrated_scores[1] - raw_scores[1]) > 0.05  # the test could tell a path that ignores T
    expected = dict(zip(("normal", "pneumonia"), calibrated_scores))

    spcxr("export", model_dir, "--repo-dir", tmp_path / "native", "--native", "--allow-disagreement")
    out = fresh_python(
        "import json, sys\n"
        "import spcxr_hub\n"
        "from transformers import pipeline\n"
        "rows = {}\n"
        "for name, source in (('pipeline', sys.argv[1]), ('native', sys.argv[2])):\n"
        "    rows[name] = {p['label']: p['score'] for p in pipeline('image-classification', model=source)(sys.argv[3])}\n"
        "print('ROWS ' + json.dumps(rows))\n", model_dir, tmp_path / "native", image)
    rows = json.loads(out.rpartition("ROWS ")[2])
    predicted = fresh_python("from spcxr_hub.cli import main; main()", "predict", "--model", model_dir, image, "--json")
    rows["predict"] = {p["label"]: p["score"] for p in json.loads(predicted)[0]["predictions"]}
    for name, scores in rows.items():
        assert scores == pytest.approx(expected, abs=2e-3), name
    native_config = json.loads((tmp_path / "native" / "config.json").read_text())
    assert native_config["operating_points"] and "temperature" not in native_config  # folded into the weights


def test_calibrate_without_a_validation_split_is_one_line_before_training(tmp_path):
    data = get_task("screening-14").write_synthetic(tmp_path / "nih", 2, 0)
    result = spcxr("finetune", "screening-14", "--data", data, "--output-dir", tmp_path / "m", "--calibrate",
                   *TINY, expect=2)
    assert result.output.strip() == ("error: --calibrate: task 'screening-14' has no validation split 'val' (its "
                                     "splits: train, test); run with --no-calibrate to fine-tune without calibration")
    assert not (tmp_path / "m").exists()


def test_without_a_validation_split_the_report_says_what_was_skipped(tmp_path):
    data = get_task("screening-14").write_synthetic(tmp_path / "nih", 2, 0)
    spcxr("finetune", "screening-14", "--data", data, "--output-dir", tmp_path / "m", "--max-steps", 1, *TINY)
    report = metrics(tmp_path / "m")
    assert report["notes"][0] == ("task 'screening-14' has no validation split 'val' (its splits: train, test): "
                                  "temperature scaling, operating points and prediction sets skipped")
    assert report["calibration"]["ece_after"] is None and "operating_points" not in report
    assert report["calibration"]["uncalibrated"]["ece"] is not None  # measured even where not fitted
    assert np.isfinite(report["calibration"]["uncalibrated"]["nll"])


def test_a_data_folder_without_val_is_skipped_with_a_note_or_refused_under_calibrate(tmp_path):
    """The task has a validation split but the folder does not (a download with train/test only)."""
    import shutil

    data = get_task("pneumonia").write_synthetic(tmp_path / "kermany", 4, 0)
    shutil.rmtree(data / "val")
    spcxr("finetune", "pneumonia", "--data", data, "--output-dir", tmp_path / "m", "--max-steps", 1, *TINY)
    note = metrics(tmp_path / "m")["notes"][0]
    assert note.startswith("the data has no validation split (") and "val: missing" in note
    assert note.endswith("temperature scaling, operating points and prediction sets skipped")
    result = spcxr("finetune", "pneumonia", "--data", data, "--output-dir", tmp_path / "c", "--calibrate", *TINY,
                   expect=2)
    assert result.output.startswith("error: --calibrate: the data has no validation split") and \
        len(result.output.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_a_multilabel_model_gets_conformal_finding_sets_through_calibrate_evaluate_predict_and_card(tmp_path):
    """screening-14 (14 findings, no validation split): finetune, then `spcxr calibrate` on another folder's train
    split, then `evaluate` on the test split reports the sets' coverage (every present finding in the set), `predict`
    lists each image's set, and the card's prediction-set table reads those numbers."""
    data = get_task("screening-14").write_synthetic(tmp_path / "nih", 2, 0)
    held = get_task("screening-14").write_synthetic(tmp_path / "nih-cal", 12, 1)
    spcxr("finetune", "screening-14", "--data", data, "--output-dir", tmp_path / "m", "--max-steps", 1, *TINY)
    spcxr("calibrate", "screening-14", "--model", tmp_path / "m", "--data", held, "--split", "train")
    sets = json.loads((tmp_path / "m" / "config.json").read_text())["prediction_sets"]
    assert sets["method"] == "multi-label" and sets["split"] == "train" and 0 <= sets["threshold"] <= 1
    spcxr("evaluate", "screening-14", "--model", tmp_path / "m", "--data", data, "--output-dir", tmp_path / "m")
    spcxr("card", tmp_path / "m")
    report = metrics(tmp_path / "m")["prediction_sets"]
    assert report["method"] == "multi-label" and report["num_calibration"] == sets["num_calibration"]
    assert 0 <= report["empirical_coverage"] <= 1 and sum(report["set_size_counts"].values()) > 0
    labels = set(get_task("screening-14").labels)
    for result in json.loads(spcxr("predict", data, "--model", tmp_path / "m", "--json").stdout):
        assert set(result["prediction_set"]) <= labels
    card = (tmp_path / "m" / "README.md").read_text()
    assert "Multi-label conformal prediction sets" in card and "| a set covers an image when | it holds every finding present |" in card
    assert f"| empirical coverage | {report['empirical_coverage']:.3f} |" in card
