import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import shutil

import pytest
from conftest import spcxr, tiny_config_kwargs

import spcxr_hub.evaluation.evaluate
from spcxr_hub import SpcxrConfig, SpcxrImageProcessor, SpcxrModel
from spcxr_hub.plugins.registry import get_task
from spcxr_hub.hub.saving import save_model_directory

RECIPE = ["--config", "tiny", "--image-size", "64", "--max-steps", "1", "--batch-size", "4"]
MODELS = ["ss-cxr", "scratch", "timm:densenet121"]


def kermany_layout(root, images_per_class, seed, keep_test=2):
    """The Kermany layout with a small test split (the evaluation is what the tests check, not its precision)."""
    data = get_task("pneumonia").write_synthetic(root, images_per_class, seed)
    for folder in (data / "test").iterdir():
        for film in sorted(folder.iterdir())[keep_test:]:
            film.unlink()
    shutil.rmtree(data / "val")
    return data


@pytest.fixture(scope="module")
def kermany(tmp_path_factory):
    return kermany_layout(tmp_path_factory.mktemp("kermany"), 10, 0)


@pytest.fixture(scope="module")
def ss_cxr(tmp_path_factory):
    """A tiny pretrained SS-CXR backbone directory."""
    return save_model_directory(tmp_path_factory.mktemp("ss-cxr") / "backbone",
                                SpcxrModel(SpcxrConfig(**tiny_config_kwargs())),
                                SpcxrImageProcessor(size={"height": 64, "width": 64}))


@pytest.fixture(scope="module")
def reproduced(kermany, ss_cxr, tmp_path_factory):
    other_hospital = kermany_layout(tmp_path_factory.mktemp("other"), 1, 7)
    out = tmp_path_factory.mktemp("reproduce") / "out"
    result = spcxr("reproduce", "pneumonia", "--data", kermany, "--models", ",".join(MODELS), "--shots", 10,
                   "--ss-cxr", ss_cxr, "--eval-data", other_hospital, "--output-dir", out, "--weight-decay", "0.01",
                   "--warmup-epochs", "0", *RECIPE)
    return out, result.output


def table(markdown, heading=None):
    """Rows of the first Markdown table after `heading` (or of the first table) as dicts."""
    lines = markdown.split(heading, 1)[1].splitlines() if heading else markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| task |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))))
    return rows


def test_reproduce_writes_a_paper_style_row_per_model_and_metric(reproduced):
    out, printed = reproduced
    markdown = (out / "results.md").read_text()
    assert markdown in printed
    assert "synthetic phantom radiographs" in markdown
    rows = table(markdown)
    assert {(r["metric"], r["model"]) for r in rows} == {(m, model) for m in ("accuracy", "f1", "auroc")
                                                         for model in MODELS}
    assert all(r["task"] == "pneumonia" and r["dataset"].endswith("(synthetic)") for r in rows)
    assert all(0 <= float(r["value"]) <= 1 for r in rows)  # one seed: a plain value


def test_reproduce_records_every_run_and_keeps_its_model(reproduced):
    out, _ = reproduced
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0] and results["shots"] == 10
    assert [(run["model"], run["seed"]) for run in results["runs"]] == [(m, 0) for m in MODELS]
    assert {run["backbone"] for run in results["runs"]} == {"spcxr", "timm:densenet121"}
    for run in results["runs"]:
        assert run["train_images"] == 20 and run["steps"] == 1
        assert set(run["test"]["metrics"]) >= {"accuracy", "f1", "auroc"} and run["test"]["num_images"] == 4
        assert (out / run["dir"] / "model.safetensors").is_file()
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["scratch-seed0", "ss-cxr-seed0",
                                                                 "timm-densenet121-seed0"]
    assert results["recipe"]["max_steps"] == 1 and results["options"]["ss_cxr"].endswith("backbone")


def test_every_run_is_fine_tuned_with_the_one_recipe_given(reproduced):
    out, _ = reproduced
    results = json.loads((out / "results.json").read_text())
    given = {"config": "tiny", "image_size": 64, "max_steps": 1, "batch_size": 4, "weight_decay": 0.01,
             "warmup_epochs": 0}
    assert {key: results["recipe"][key] for key in given} == given
    for run in results["runs"]:
        options = json.loads((out / run["dir"] / "training_log.json").read_text())["options"]
        assert {key: options[key] for key in given} == given and options["shots"] == 10
        assert options["seed"] == run["seed"] and options["backbone"] == run["backbone"]


def test_eval_data_adds_a_drift_table(reproduced):
    out, _ = reproduced
    rows = table((out / "results.md").read_text(), "## Drift")
    assert {r["model"] for r in rows} == set(MODELS) and all(r["dataset"].startswith("other") for r in rows)
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert all(run["drift"]["num_images"] == 3 for run in runs)  # 1 normal + 2 pneumonia phantoms in "other"


def test_several_seeds_give_mean_and_standard_deviation(kermany, tmp_path):
    spcxr("reproduce", "pneumonia", "--data", kermany, "--models", "scratch", "--seeds", "0,1", "--shots", 2,
          "--output-dir", tmp_path / "out", *RECIPE)
    rows = table((tmp_path / "out" / "results.md").read_text())
    assert rows and all(" ± " in r["value"] for r in rows)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    auroc = next(r for r in results["table"] if r["metric"] == "auroc")
    assert auroc["n"] == 2 and auroc["value"] == f"{auroc['mean']:.3f} ± {auroc['std']:.3f}"
    assert sorted(p.name for p in (tmp_path / "out" / "runs").iterdir()) == ["scratch-seed0", "scratch-seed1"]


def test_unknown_model_is_one_line_listing_the_known_ones(kermany, tmp_path):
    result = spcxr("reproduce", "pneumonia", "--data", kermany, "--models", "ss-cxr,resnet", "--output-dir",
                   tmp_path / "out", expect=2)
    assert len(result.output.strip().splitlines()) == 1
    assert "unknown model 'resnet'" in result.output
    assert all(name in result.output for name in ("ss-cxr", "scratch", "timm:densenet121", "timm:efficientnet_b2"))
    assert not (tmp_path / "out").exists()


def test_a_failing_run_leaves_nothing_half_written(kermany, ss_cxr, tmp_path, monkeypatch):
    real, calls = spcxr_hub.evaluation.evaluate.evaluate_model, []

    def second_call_crashes(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash in the second run")
        return real(*args, **kwargs)

    monkeypatch.setattr(spcxr_hub.evaluation.evaluate, "evaluate_model", second_call_crashes)
    result = spcxr("reproduce", "pneumonia", "--data", kermany, "--models", "ss-cxr,scratch", "--ss-cxr", ss_cxr,
                   "--shots", 2, "--output-dir", tmp_path / "out", *RECIPE, expect=1)  # a crash: a bug, not bad input
    assert "simulated crash" in result.output
    assert list(tmp_path.iterdir()) == []
