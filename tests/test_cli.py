import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import spcxr
from safetensors.torch import load_file
from transformers import pipeline

import spcxr_hub.evaluation.evaluate
from spcxr_hub.plugins.registry import get_task

TINY = ["--init", "scratch", "--config", "tiny", "--image-size", "64", "--batch-size", "8"]
TASKS = ["covid", "pneumonia", "screening", "screening-14", "lungseg", "tuberculosis"]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """Each task's dataset in its native layout, written from the phantom generator."""
    root = tmp_path_factory.mktemp("layouts")
    return {name: get_task(name).write_synthetic(root / name, 4, 0) for name in TASKS}


@pytest.fixture(scope="module")
def trained(layouts, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for name in TASKS:
        spcxr("finetune", name, "--data", layouts[name], "--output-dir", root / name, "--max-steps", 2, *TINY)
    return root


def test_plugins_lists_builtins_and_the_example_with_distribution_and_version():
    rows = {row["name"]: row for row in json.loads(spcxr("plugins", "--json").stdout)}
    assert {"covid", "pneumonia", "screening", "lungseg", "tuberculosis"} <= set(rows)
    assert rows["pneumonia"]["distribution"] == "spcxr-hub" and rows["pneumonia"]["version"]
    assert rows["pneumonia"]["tasks"] == ["pneumonia", "pneumonia-3class"]
    assert rows["tuberculosis"]["distribution"] == "spcxr-tuberculosis"
    text = spcxr("plugins").output
    assert "spcxr-tuberculosis" in text and "screening-14" in text


@pytest.mark.parametrize("name", TASKS)
def test_finetune_writes_a_pipeline_ready_model_with_metrics_and_plots(trained, name):
    directory = trained / name
    for file in ("model.safetensors", "config.json", "preprocessor_config.json", "modeling_spcxr.py",
                 "metrics.json", "training_log.json", "loss_curve.png"):
        assert (directory / file).is_file(), file
    plots = ["mask_overlays.png"] if name == "lungseg" else ["confusion_matrix.png", "roc_curve.png"]
    assert all((directory / plot).is_file() for plot in plots)
    report = json.loads((directory / "metrics.json").read_text())
    assert report["task"] == name and report["num_images"] > 0 and report["metrics"]
    assert not Path(f"{directory}-checkpoints").exists()


@pytest.mark.parametrize("name", TASKS)
def test_evaluate_writes_metrics_and_plots(trained, layouts, name, tmp_path):
    spcxr("evaluate", name, "--model", trained / name, "--data", layouts[name], "--output-dir", tmp_path / "eval")
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    expected_key = {"covid": "accuracy_positive", "lungseg": "dice", "screening-14": "auroc_per_label"}.get(name, "accuracy")
    assert expected_key in report["metrics"], report["metrics"].keys()


@pytest.mark.parametrize("name", ["pneumonia", "screening-14", "tuberculosis"])
def test_predict_prints_labels_and_scores(trained, layouts, name):
    task = get_task(name)
    results = json.loads(spcxr("predict", "--model", trained / name, layouts[name], "--json").stdout)
    assert len(results) >= 4
    assert all(p["label"] in task.labels and 0 <= p["score"] <= 1 for r in results for p in r["predictions"])


def test_predict_writes_masks_and_overlays_at_the_film_size(trained, layouts, tmp_path):
    films = sorted((layouts["lungseg"] / "CXR_png").glob("*.png"))[:2]
    results = json.loads(spcxr("predict", "--model", trained / "lungseg", *films, "--json", "--output-dir", tmp_path).stdout)
    from PIL import Image

    for film, result in zip(films, results):
        assert Image.open(result["mask"]).size == Image.open(film).size
        assert Image.open(result["overlay"]).size == Image.open(film).size
        assert set(result["fractions"]) == {"background", "lung"}


def test_embed_writes_one_cls_and_mean_vector_per_image(trained, layouts, tmp_path):
    spcxr("embed", "--model", trained / "pneumonia", layouts["pneumonia"] / "test", "--output", tmp_path / "e.parquet")
    table = pq.read_table(tmp_path / "e.parquet").to_pydict()
    assert len(table["file"]) == len(list((layouts["pneumonia"] / "test").rglob("*.jpeg")))
    assert len(table["cls"][0]) == len(table["mean"][0]) == 64


def test_fine_tuned_model_loads_in_the_hf_pipeline(trained, layouts):
    classify = pipeline("image-classification", model=str(trained / "covid"))
    image = next((layouts["covid"] / "test").iterdir())
    assert {r["label"] for r in classify(str(image))} == {"negative", "positive"}


def test_shots_sample_n_images_per_class(layouts, tmp_path):
    spcxr("finetune", "pneumonia", "--data", layouts["pneumonia"], "--output-dir", tmp_path / "out", "--shots", 2,
          "--max-steps", 1, *TINY)
    log = json.loads((tmp_path / "out" / "training_log.json").read_text())
    assert log["train_images"] == 4


@pytest.mark.training
def test_fine_tuned_pneumonia_model_beats_chance_on_held_out_films(tmp_path, seed, record_property):
    data = get_task("pneumonia").write_synthetic(tmp_path / "kermany", 100, 1 + seed)
    spcxr("finetune", "pneumonia", "--data", data, "--output-dir", tmp_path / "out", "--epochs", 12, "--seed", seed,
          "--lr", "2e-3", "--warmup-epochs", 1, "--drop-path", 0, *TINY[:-2], "--batch-size", 32)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    record_property("held_out_auroc", float(metrics["auroc"]))
    # Chance is 0.5; the test split is held out (other phantoms, a third of them the subtle viral pattern). Worst of
    # seeds 0-9 (tests/seed_sweep.py): 0.75, mean 0.79; the bar leaves room for other CPUs' rounding.
    assert metrics["auroc"] > 0.65, metrics


def test_resume_after_a_crash_ends_with_the_same_weights(layouts, tmp_path, monkeypatch):
    args = ["finetune", "pneumonia", "--data", layouts["pneumonia"], "--max-steps", 5, "--checkpoint-every", 2, *TINY]
    spcxr(*args, "--output-dir", tmp_path / "straight")

    def crash(*_, **__):
        raise RuntimeError("simulated crash after training")

    monkeypatch.setattr(spcxr_hub.evaluation.evaluate, "evaluate_model", crash)
    spcxr(*args, "--output-dir", tmp_path / "resumed", expect=1)  # a crash is not bad input
    assert not (tmp_path / "resumed").exists()  # nothing half-written
    checkpoints = tmp_path / "resumed-checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-2", "step-4"]
    monkeypatch.undo()
    spcxr(*args, "--output-dir", tmp_path / "resumed", "--resume", checkpoints / "step-2")
    straight, resumed = (load_file(tmp_path / d / "model.safetensors") for d in ("straight", "resumed"))
    assert straight.keys() == resumed.keys()
    assert all((straight[k] == resumed[k]).all() for k in straight)


def test_unknown_task_lists_the_known_ones(layouts, tmp_path):
    result = spcxr("finetune", "bronchitis", "--data", layouts["covid"], "--output-dir", tmp_path / "o", *TINY, expect=2)
    assert "unknown task 'bronchitis'" in result.output and "pneumonia" in result.output


def test_folder_not_in_the_layout_names_the_missing_file(layouts, tmp_path):
    result = spcxr("finetune", "covid", "--data", layouts["pneumonia"], "--output-dir", tmp_path / "o", *TINY, expect=2)
    assert "train.txt" in result.output
    assert not (tmp_path / "o").exists()


def test_unknown_label_names_the_file(layouts, tmp_path):
    broken = tmp_path / "covidx"
    broken.mkdir()
    for item in layouts["covid"].iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "train.txt").unlink()
    lines = (layouts["covid"] / "train.txt").read_text().splitlines()
    lines[0] = lines[0].rsplit(" ", 2)[0] + " bronchitis " + lines[0].rsplit(" ", 1)[1]
    (broken / "train.txt").write_text("\n".join(lines))
    result = spcxr("finetune", "covid", "--data", broken, "--output-dir", tmp_path / "o", *TINY, expect=2)
    assert "train.txt" in result.output and "bronchitis" in result.output


def test_undecodable_image_is_skipped_and_counted_or_fails_with_strict(layouts, tmp_path):
    data = tmp_path / "kermany"
    get_task("pneumonia").write_synthetic(data, 3, 2)
    victim = sorted((data / "test" / "NORMAL").iterdir())[0]
    victim.write_text("not a jpeg")
    spcxr("evaluate", "pneumonia", "--model", _model(tmp_path, layouts), "--data", data, "--output-dir", tmp_path / "eval")
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["num_skipped"] == 1 and victim.name in report["skipped"][0]
    result = spcxr("evaluate", "pneumonia", "--model", _model(tmp_path, layouts), "--data", data, "--output-dir",
                   tmp_path / "strict", "--strict", expect=2)
    assert victim.name in result.output and not (tmp_path / "strict" / "metrics.json").exists()


def _model(tmp_path, layouts):
    directory = tmp_path / "model"
    if not directory.exists():
        spcxr("finetune", "pneumonia", "--data", layouts["pneumonia"], "--output-dir", directory, "--max-steps", 1, *TINY)
    return directory


def test_model_with_other_labels_is_refused(trained, layouts):
    result = spcxr("evaluate", "covid", "--model", trained / "pneumonia", "--data", layouts["covid"], expect=2)
    assert "do not match" in result.output


def test_existing_output_directory_is_not_overwritten(layouts, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep").write_text("x")
    result = spcxr("finetune", "pneumonia", "--data", layouts["pneumonia"], "--output-dir", tmp_path / "o", *TINY, expect=2)
    assert "already exists" in result.output and (tmp_path / "o" / "keep").exists()


def test_predict_on_a_missing_file_is_one_line(trained, tmp_path):
    result = spcxr("predict", "--model", trained / "pneumonia", tmp_path / "nope.png", expect=2)
    assert result.output.strip() == f"error: {tmp_path / 'nope.png'}: no such file or folder"


def test_the_recipe_options_cover_every_recipe_field():
    """finetune and reproduce declare the recipe once (cli.RECIPE_OPTIONS); a new Recipe field must appear there."""
    import inspect
    from dataclasses import fields

    from spcxr_hub import cli
    from spcxr_hub.training.recipe import Recipe

    assert sorted(cli.RECIPE_OPTIONS.values()) == sorted(f.name for f in fields(Recipe) if f.name != "progress")
    for command in (cli.finetune, cli.reproduce):
        assert set(cli.RECIPE_OPTIONS) <= set(inspect.signature(command).parameters)
