"""The input gate of `spcxr predict`: findings with reasons from DICOM tags and pixels, the OOD score, --gate."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import spcxr
from gate_inputs import write_bad_inputs

from spcxr_hub.inference import gate, ood
from spcxr_hub.plugins.registry import get_task

TINY = ["--init", "scratch", "--config", "tiny", "--image-size", "64", "--batch-size", "16"]


@pytest.fixture(scope="module")
def model(tmp_path_factory, seed):
    """A tiny pneumonia classifier fine-tuned on 90 phantoms through `spcxr finetune` (which writes the OOD statistics)."""
    root = tmp_path_factory.mktemp("gate")
    data = get_task("pneumonia").write_synthetic(root / "data", 30, seed)
    spcxr("finetune", "pneumonia", "--data", data, "--output-dir", root / "model", "--max-steps", 30, *TINY)
    return root / "model"


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    return root, write_bad_inputs(root)


def predict_json(*args, expect=0):
    return json.loads(spcxr("predict", *args, "--json", expect=expect).stdout)


def test_finetune_writes_ood_statistics_with_a_percentile_threshold(model):
    statistics = ood.load(model)
    assert statistics.num_images == 90 and statistics.percentile == 99.5
    assert statistics.mean.shape == (64,) and statistics.precision.shape == (64, 64) and statistics.threshold > 0


@pytest.mark.training
def test_clean_held_out_phantoms_are_rarely_flagged(model, seed, tmp_path, record_property):
    held_out = get_task("pneumonia").write_synthetic(tmp_path / "held", 23, 1000 + seed)  # 207 unseen phantoms
    results = predict_json("--model", model, held_out)
    flagged = [r for r in results if r["findings"]]
    rate = len(flagged) / len(results)
    record_property("false_flag_rate", rate)
    assert len(results) >= 200 and all(r["ood_score"] is not None for r in results)
    assert rate <= 0.03, [(r["file"], r["findings"]) for r in flagged]


def test_every_kind_of_bad_input_is_flagged_with_its_code_and_a_reason(model, bad_inputs):
    root, expected = bad_inputs
    results = {Path(r["file"]).name: r for r in predict_json("--model", model, root)}
    assert set(results) == set(expected)
    for name, code in expected.items():
        codes = [f["code"] for f in results[name]["findings"]]
        assert code in codes, (name, results[name]["findings"])
        assert all(f["reason"] for f in results[name]["findings"]) and results[name]["predictions"]


def test_non_chest_and_noise_images_are_out_of_distribution(model, bad_inputs):
    root, _ = bad_inputs
    for name in ("hand.png", "noise.png", "blank.png"):
        [result] = predict_json("--model", model, root / name)
        assert "out-of-distribution" in [f["code"] for f in result["findings"]], result


def test_the_table_marks_flagged_images_only(model, bad_inputs, tmp_path):
    root, _ = bad_inputs
    clean = get_task("pneumonia").write_synthetic(tmp_path / "clean", 1, 3) / "test" / "NORMAL"
    lines = spcxr("predict", "--model", model, root / "inverted.png", clean).stdout.strip().splitlines()
    marked = {Path(line.split("\t")[0]).name: line for line in lines}
    assert "FLAGGED(inverted" in marked["inverted.png"]
    assert all("FLAGGED" not in line for name, line in marked.items() if name != "inverted.png")


def test_gate_refuse_withholds_flagged_predictions_and_fails_when_all_are_refused(model, bad_inputs, tmp_path):
    root, _ = bad_inputs
    clean = get_task("pneumonia").write_synthetic(tmp_path / "clean", 1, 3) / "test" / "NORMAL"
    results = {Path(r["file"]).name: r for r in predict_json("--model", model, root / "ct.dcm", clean, "--gate", "refuse")}
    assert results["ct.dcm"]["refused"] and "predictions" not in results["ct.dcm"]
    assert all(r["predictions"] and not r.get("refused") for n, r in results.items() if n != "ct.dcm")
    failed = spcxr("predict", "--model", model, root / "ct.dcm", root / "noise.png", "--gate", "refuse", expect=2)
    assert "REFUSED(modality)" in failed.stdout and "all 2 image(s) were flagged" in failed.output


GATED_PIPELINE = """
import json, sys
from transformers import pipeline
from spcxr_hub.inference.gated_pipeline import GatedImageClassificationPipeline
classify = pipeline("image-classification", model=sys.argv[1], pipeline_class=GatedImageClassificationPipeline)
files = sys.argv[2:]
from PIL import Image
answers = {"files": classify(files), "batched": classify(files, batch_size=3),
           "refuse": classify(files, gate="refuse"), "off": classify(files[0], gate="off"),
           "pil": classify(Image.open(files[-1]))}
print(json.dumps(answers))
"""


def test_the_gated_pipeline_answers_as_predict_does(model, bad_inputs, tmp_path):
    """pipeline(..., pipeline_class=GatedImageClassificationPipeline) in a fresh process: for files (DICOM tags too),
    batched or not, the same scores, decisions, findings and OOD score as `spcxr predict --json`."""
    from conftest import fresh_python

    root, _ = bad_inputs
    clean = sorted((get_task("pneumonia").write_synthetic(tmp_path / "clean", 1, 3) / "test").rglob("*.jpeg"))
    files = [root / "ct.dcm", root / "lateral.dcm", root / "inverted.png", clean[0]]
    answers = json.loads(fresh_python(GATED_PIPELINE, model, *files))
    expected = predict_json("--model", model, *files)
    assert [Path(a["file"]).name for a in answers["files"]] == [f.name for f in files]
    for mode in ("files", "batched"):
        for got, want in zip(answers[mode], expected, strict=True):
            assert [f["code"] for f in got["findings"]] == [f["code"] for f in want["findings"]]
            assert got["ood_score"] == pytest.approx(want["ood_score"], abs=1e-3)
            assert [p["label"] for p in got["predictions"]] == [p["label"] for p in want["predictions"]]
            assert [p["score"] for p in got["predictions"]] == pytest.approx(
                [p["score"] for p in want["predictions"]], abs=1e-4)
            assert got.get("positive") == want.get("positive")
            assert got.get("prediction_set") == want.get("prediction_set")
    assert [f["code"] for f in answers["files"][0]["findings"]][:1] == ["modality"]
    assert answers["refuse"][0]["refused"] and "predictions" not in answers["refuse"][0]
    assert "predictions" in answers["refuse"][-1] and not answers["refuse"][-1]["findings"]
    assert isinstance(answers["off"], list) and set(answers["off"][0]) == {"label", "score"}
    assert "file" not in answers["pil"] and answers["pil"]["findings"] == [] and answers["pil"]["predictions"]


def test_gate_off_reports_nothing(model, bad_inputs):
    root, _ = bad_inputs
    [result] = predict_json("--model", model, root / "inverted.png", "--gate", "off")
    assert "findings" not in result and result["predictions"]
    spcxr("predict", "--model", model, root / "inverted.png", "--gate", "sometimes", expect=2)


def test_an_older_model_says_ood_is_unavailable_and_one_command_adds_it(model, tmp_path, seed):
    import shutil

    older = tmp_path / "older"
    shutil.copytree(model, older)
    (older / ood.OOD_FILE).unlink()
    film = get_task("pneumonia").write_synthetic(tmp_path / "data", 1, seed) / "test" / "NORMAL"
    results = predict_json("--model", older, film)
    assert all(r["ood_score"] is None and "ood_score is unavailable" in r["ood_note"] for r in results)
    table = spcxr("predict", "--model", older, film)
    assert "ood_score is unavailable" in table.stderr and f"spcxr ood-statistics TASK --model {older}" in table.stderr
    data = get_task("pneumonia").write_synthetic(tmp_path / "train", 30, seed)
    spcxr("ood-statistics", "pneumonia", "--model", older, "--data", data)
    assert all(r["ood_score"] is not None for r in predict_json("--model", older, film))


def test_an_unreadable_dicom_header_is_a_finding_not_a_crash(tmp_path):
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)  # pydicom parses it leniently, to no tags
    [found] = gate.dicom_tag_findings(broken)
    assert found["code"] == "unreadable-tags" and "tag checks skipped" in found["reason"]


def test_ood_covariance_is_scikit_learns_ledoit_wolf():
    from sklearn.covariance import ledoit_wolf

    features = np.random.default_rng(0).normal(size=(40, 16)) @ np.random.default_rng(1).normal(size=(16, 16))
    np.testing.assert_allclose(ood.ledoit_wolf(features), ledoit_wolf(features)[0], atol=1e-10)


def test_ood_threshold_holds_for_new_samples_of_the_training_distribution():
    rng = np.random.default_rng(0)
    statistics = ood.fit(rng.normal(size=(1000, 16)))
    fresh = statistics.score(rng.normal(size=(2000, 16)))
    assert (fresh > statistics.threshold).mean() < 0.02  # 99.5th percentile, cross-fitted: ~0.5% expected
    assert (statistics.score(rng.normal(size=(200, 16)) + 2.0) > statistics.threshold).mean() > 0.95


def test_evaluate_reports_which_images_of_a_split_the_gate_flags_with_a_picture(model, bad_inputs, tmp_path):
    """`spcxr evaluate` runs the same gate as predict over the split: metrics.json's input_gate section counts the
    flagged images by code and lists them, and flagged_examples.png shows some with their reasons."""
    root, expected = bad_inputs
    data = get_task("pneumonia").write_synthetic(tmp_path / "data", 6, 77)
    planted = data / "test" / "NORMAL"
    for path in root.iterdir():
        (planted / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "eval"
    result = spcxr("evaluate", "pneumonia", "--model", model, "--data", data, "--output-dir", out)
    report = json.loads((out / "metrics.json").read_text())
    section = report["input_gate"]
    flagged = {Path(item["file"]).name: item["codes"] for item in section["flagged_files"]}
    for name, code in expected.items():
        assert code in flagged.get(name, []), (name, flagged.get(name))
    clean_flagged = set(flagged) - set(expected)
    assert len(clean_flagged) <= 1, clean_flagged  # phantoms of the model's own distribution
    assert section["images"] == report["num_images"] and section["flagged"] == len(flagged)
    assert sum(section["codes"].values()) == sum(len(codes) for codes in flagged.values())
    assert section["ood_threshold"] == pytest.approx(ood.load(model).threshold)
    assert (out / section["picture"]).is_file() and len(section["examples"]) == 4
    assert all(example["reasons"] and len(example["reasons"]) == len(example["codes"]) for example in section["examples"])
    assert f"{len(flagged)} of {section['images']} image(s) flagged" in result.output

    spcxr("evaluate", "pneumonia", "--model", model, "--data", data, "--output-dir", tmp_path / "off", "--gate", "off")
    report = json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert "input_gate" not in report and "input gate: not run (--gate off)" in report["notes"]
    assert not (tmp_path / "off" / "flagged_examples.png").exists()


def test_finetune_metrics_carry_the_gate_and_the_explanation_grid(model):
    report = json.loads((model / "metrics.json").read_text())
    assert report["input_gate"]["images"] == report["num_images"] and report["input_gate"]["ood_threshold"]
    drawn = report.get("explanations")
    assert (drawn and (model / drawn["picture"]).is_file() and drawn["errors_shown"] >= 1) or \
        "explanations: the model made no error on this split; no grid drawn" in report["notes"]
    assert not any(Path(item["file"]).is_absolute() for item in report["input_gate"]["flagged_files"])
