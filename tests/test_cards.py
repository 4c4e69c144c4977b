import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config_kwargs
from huggingface_hub import ModelCard
from PIL import Image
from typer.testing import CliRunner

from spcxr_hub import (SpcxrConfig, SpcxrForImageClassification, SpcxrForSemanticSegmentation, SpcxrImageProcessor,
                       SpcxrModel)
from spcxr_hub.hub.cards import render_card, write_card
from spcxr_hub.cli import app
from spcxr_hub.evaluation.evaluate import original_size_probabilities
from spcxr_hub.plugins.registry import get_task
from spcxr_hub.hub.saving import save_model_directory

SCREENING = get_task("screening-14").labels
REPORTS = {
    "pneumonia": {"accuracy": 0.75, "f1": 0.8, "auroc": 0.8125},
    "screening-14": {"auroc": 0.61, "auroc_labels": 2.0, "accuracy": 0.9, "exact_match": 0.25, "f1": 0.3,
                     "f1_macro": None,
                     "auroc_per_label": {label: 0.5 + i / 100 if i < 2 else None
                                         for i, label in enumerate(SCREENING)}},
    "lungseg": {"dice": 0.91, "iou": 0.84, "mean_dice": 0.9, "per_image_dice": [0.88, 0.92]},
}


def make_model(root: Path, task: str | None, *, metrics=True, synthetic=None, init="spcxr/vit-s", name=None) -> Path:
    """A tiny saved model of the task (None: a backbone) with the files `spcxr finetune` leaves beside it."""
    torch.manual_seed(0)
    if task is None:
        model = SpcxrModel(SpcxrConfig(**tiny_config_kwargs()))
    else:
        labels = get_task(task).labels
        fields = dict(id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
        if task == "screening-14":
            fields["problem_type"] = "multi_label_classification"
        head = SpcxrForSemanticSegmentation if task == "lungseg" else SpcxrForImageClassification
        model = head(SpcxrConfig(**tiny_config_kwargs(**fields)))
    directory = save_model_directory(root / (name or task or "backbone"), model.eval(),
                                     SpcxrImageProcessor(size={"height": 64, "width": 64}))
    if task is not None and metrics:
        (directory / "metrics.json").write_text(json.dumps({
            "task": task, "split": "test", "source": str(root / "data"), "num_images": 12, "num_skipped": 0,
            "skipped": [], "metrics": REPORTS[task]}))
    if task is not None:
        log = {"options": {"task": task, "data": str(root / "data"), "init": init, "max_steps": 2, "seed": 0},
               "task": task, "train_images": 12, "steps": 2, "losses": [0.71, 0.69]}
        if synthetic is not None:
            log["synthetic_data"] = synthetic
        (directory / "training_log.json").write_text(json.dumps(log))
    return directory


def flat_numbers(metrics: dict, prefix="") -> dict:
    numbers = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            numbers.update(flat_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)):
            numbers[f"{prefix}{key}"] = value
    return numbers


def body_lines(card) -> list[str]:
    return [line for line in card.text.splitlines() if line.strip()]


@pytest.mark.parametrize("task, pipeline_tag", [("pneumonia", "image-classification"),
                                                 ("screening-14", "image-classification"),
                                                 ("lungseg", "image-segmentation")])
def test_card_validates_and_its_model_index_is_metrics_json(tmp_path, task, pipeline_tag):
    directory = make_model(tmp_path, task, synthetic=False)
    parsed = ModelCard(str(render_card(directory, repo_id=f"org/{task}")))  # YAML through the card data classes
    data = parsed.data
    assert data.library_name == "transformers" and data.pipeline_tag == pipeline_tag and data.license
    assert {"chest-x-ray", "medical-imaging", "self-supervised", task} <= set(data.tags)
    assert "synthetic-data" not in data.tags and data.base_model == "spcxr/vit-s"  # the log's --init
    assert data.datasets == list(get_task(task).card.hub_datasets)
    assert data.model_name == f"org/{task}"
    reported = {r.metric_type: r.metric_value for r in data.eval_results}
    assert reported == flat_numbers(REPORTS[task])  # every number, and only numbers, from metrics.json
    assert {r.dataset_split for r in data.eval_results} == {"test"}
    assert all(r.task_type == pipeline_tag for r in data.eval_results)
    assert sorted(data.metrics) == sorted(reported)
    for section in ("## Intended use", "## Out-of-scope use", "## How to use", "## Training data", "## Evaluation",
                    "## Limitations and bias", "## Citation"):
        assert section in parsed.text, section
    assert "Not a medical device" in parsed.text and "trust_remote_code=True" in parsed.text
    assert "import spcxr_hub" in parsed.text and "arXiv:2211.12944" in parsed.text
    assert get_task(task).card.dataset_citation.splitlines()[0] in parsed.text
    assert str(tmp_path) not in parsed.text  # local paths are not published


def test_backbone_card_reads_the_pretraining_summary_beside_it(tmp_path):
    directory = make_model(tmp_path / "run", None)
    (tmp_path / "run" / "trainer_state.json").write_text(json.dumps({
        "global_step": 4, "epoch": 1.0, "global_batch_size": 4, "num_processes": 1, "peak_learning_rate": 7.8e-6,
        "final_loss": 0.9211, "data": "16 synthetic phantom radiographs (64×64, spcxr_hub.data.synthetic)",
        "synthetic_data": True, "backbone": str(directory), "args": {"data": "synthetic"}, "log_history": []}))
    card = ModelCard(str(render_card(directory)))
    assert card.data.pipeline_tag == "image-feature-extraction" and card.data.model_name == "spcxr/vit-s"
    assert card.data.eval_results is None and "model-index" not in str(card)
    assert "Not evaluated" in card.text and "0.9211" in card.text
    assert "synthetic-data" in card.data.tags and card.data.datasets is None
    assert "synthetic" in " ".join(body_lines(card)[:3]).lower()
    assert "GMML" in card.text and "@article{atito2022gmml" in card.text


def test_model_without_metrics_json_is_not_evaluated_and_has_no_model_index(tmp_path):
    directory = make_model(tmp_path, "pneumonia", metrics=False)
    card = render_card(directory)
    assert card.data.eval_results is None and card.data.metrics is None
    assert "model-index" not in str(card)
    evaluation = card.text.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    assert "Not evaluated" in evaluation and not any(ch.isdigit() for ch in evaluation.replace("spcxr", ""))


def test_synthetic_training_is_stated_in_the_first_lines(tmp_path):
    synthetic = render_card(make_model(tmp_path, "pneumonia", synthetic=True, name="synthetic"))
    assert "synthetic" in body_lines(synthetic)[0].lower()  # the title
    assert "synthetic phantom radiographs, not on patients" in " ".join(body_lines(synthetic)[1:3])
    assert "synthetic-data" in synthetic.data.tags and synthetic.data.datasets is None
    assert synthetic.data.eval_results[0].dataset_type == "synthetic-phantoms"
    real = render_card(make_model(tmp_path, "pneumonia", synthetic=False, name="real"))
    assert "synthetic" not in " ".join(body_lines(real)[:3]).lower()
    overridden = render_card(make_model(tmp_path, "pneumonia", name="unknown"), synthetic=True)
    assert "not on patients" in " ".join(body_lines(overridden)[:3])


def widget_file(directory: Path, entry: dict, key="src") -> Path:
    url = entry[key] if key == "src" else entry["output"]["url"]
    return directory / url.split("/resolve/main/", 1)[1]


def test_classification_widget_outputs_are_the_models_predictions(tmp_path):
    directory = make_model(tmp_path, "screening-14")
    card = ModelCard((write_card(directory, repo_id="org/screening")).read_text())
    model = SpcxrForImageClassification.from_pretrained(directory).eval()
    processor = SpcxrImageProcessor.from_pretrained(directory)
    assert len(card.data.widget) == 2
    for entry in card.data.widget:
        assert entry["src"].startswith("https://huggingface.co/org/screening/resolve/main/examples/")
        assert entry["example_title"]
        with torch.no_grad():
            inputs = processor(str(widget_file(directory, entry)), return_tensors="pt")
            scores = torch.sigmoid(model(**inputs).logits[0])
        top = scores.argsort(descending=True)[:5]
        assert [p["label"] for p in entry["output"]] == [SCREENING[i] for i in top]
        np.testing.assert_allclose([p["score"] for p in entry["output"]], scores[top].numpy(), atol=1e-4)


def test_segmentation_widget_masks_are_the_models_predictions(tmp_path):
    directory = make_model(tmp_path, "lungseg")
    card = ModelCard(write_card(directory).read_text())
    model = SpcxrForSemanticSegmentation.from_pretrained(directory).eval()
    processor = SpcxrImageProcessor.from_pretrained(directory)
    for entry in card.data.widget:
        image = widget_file(directory, entry)
        with torch.no_grad():
            logits = model(**processor(str(image), return_tensors="pt")).logits[0]
        film = np.asarray(Image.open(image))
        expected = original_size_probabilities(processor, logits, *film.shape).argmax(axis=0) * 255
        mask = np.asarray(Image.open(widget_file(directory, entry, "output")))
        assert mask.shape == film.shape and (mask != expected).mean() < 0.001  # ties at class borders aside


def test_user_examples_are_written_and_kept_when_the_card_is_written_again(tmp_path):
    directory = make_model(tmp_path, "pneumonia")
    example = tmp_path / "film.png"
    Image.fromarray(np.linspace(0, 255, 80 * 60).reshape(80, 60).astype(np.uint8)).save(example)
    write_card(directory, example_images=[example])
    assert sorted(p.name for p in (directory / "examples").iterdir()) == ["chest-1.png"]
    first = ModelCard((directory / "README.md").read_text()).data.widget
    assert first[0]["example_title"] == "film"
    write_card(directory)  # no examples given: the ones there stay, with their titles and outputs
    assert ModelCard((directory / "README.md").read_text()).data.widget == first


def test_a_model_trained_from_scratch_has_no_base_model_and_does_not_claim_pretraining(tmp_path):
    card = render_card(make_model(tmp_path, "pneumonia", init="scratch"))
    assert card.data.base_model is None and "base_model" not in str(card)
    assert "self-supervised" not in card.data.tags and "gmml" not in card.data.tags
    assert "trained from scratch" in card.text and "without any pretraining" in card.text


def test_base_model_is_the_hub_id_or_the_local_backbones_declared_id(tmp_path):
    from_hub = render_card(make_model(tmp_path, "pneumonia", init="spcxr/vit-s", name="hub"))
    assert from_hub.data.base_model == "spcxr/vit-s" and "spcxr/vit-s" in from_hub.text
    backbone = make_model(tmp_path / "run", None)
    (tmp_path / "run" / "trainer_state.json").write_text(json.dumps(
        {"global_step": 1, "synthetic_data": True, "backbone": str(backbone), "args": {"data": "synthetic"}}))
    write_card(backbone, repo_id="org/my-backbone")
    local = render_card(make_model(tmp_path, "pneumonia", init=str(backbone), name="local", synthetic=False))
    assert local.data.base_model == "org/my-backbone"
    assert "synthetic-data" in local.data.tags  # the backbone's phantoms are not hidden by a real-data fine-tune
    assert "backbone was pretrained on synthetic" in " ".join(body_lines(local)[:3])


def test_card_command_writes_the_readme_and_bad_input_is_one_line(tmp_path):
    directory = make_model(tmp_path, "pneumonia")
    result = CliRunner().invoke(app, ["card", str(directory), "--repo-id", "org/pneumonia"])
    assert result.exit_code == 0, result.output
    assert "model-index from metrics.json" in result.output
    assert ModelCard((directory / "README.md").read_text()).data.model_name == "org/pneumonia"
    for args in (["card", str(tmp_path / "missing")], ["card", str(directory), "--repo-id", "not a/repo id"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output


def test_the_card_of_a_real_finetuning_run(tmp_path):
    data = get_task("pneumonia").write_synthetic(tmp_path / "kermany", 2, 0)
    result = CliRunner().invoke(app, ["finetune", "pneumonia", "--data", str(data), "--output-dir", str(tmp_path / "m"),
                                      "--init", "scratch", "--config", "tiny", "--image-size", "32", "--max-steps", "1",
                                      "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m" / "metrics.json").read_text())
    card = ModelCard(str(render_card(tmp_path / "m", synthetic=True)))
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == flat_numbers(report["metrics"])
    assert f"{report['num_images']} images" in card.text


def test_the_published_base_model_card_validates_and_says_synthetic_first():
    folder = Path(__file__).resolve().parent.parent / "model_cards" / "spcxr-vit-s"
    card = ModelCard((folder / "README.md").read_text())  # generated by model_cards/generate.py, never by hand
    assert card.data.model_name == "spcxr/vit-s" and card.data.pipeline_tag == "image-feature-extraction"
    assert card.data.library_name == "transformers" and card.data.eval_results is None
    assert "synthetic-data" in card.data.tags and "not on patients" in " ".join(body_lines(card)[:3])
    assert "ViT-S/16" in card.text and "Not evaluated" in card.text
    for entry in card.data.widget:
        assert widget_file(folder, entry).is_file()
