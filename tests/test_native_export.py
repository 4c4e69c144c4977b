"""Native exports (`spcxr export --native`): a model made by `spcxr finetune` published as transformers' own ViT,
loaded where the project is not importable and without trust_remote_code, from its folder and as `org/name`."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fresh_python, spcxr, tiny_config_kwargs
from huggingface_hub import ModelCard
from hub_cache import publish_to_cache
from PIL import Image
from test_auto_classes import WITHOUT_PROJECT
from test_cards import make_model

import spcxr_hub.hub.native_export as native_export
from spcxr_hub import SpcxrConfig, SpcxrForImageClassification, SpcxrImageProcessor, SpcxrModel
from spcxr_hub.data import synthetic
from spcxr_hub.hub.native_export import export_native
from spcxr_hub.hub.saving import save_model_directory
from spcxr_hub.plugins.registry import get_task

REPO_ID = "acme/cxr-native"
TOLERANCE = 1e-4  # float32 rounding of two orders of the same sums; a wrong mapping is off by ~0.1 or more


def one_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def grey_png(path, seed=7, size=64):
    """An 8-bit grey phantom at the model's size (no resizing in either processor)."""
    Image.fromarray(np.round(synthetic.generate(seed, size, ("pneumonia",)).image * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`spcxr finetune` (tiny ViT with CLS pooling, 2 steps, synthetic Kermany layout) → `spcxr export --native`."""
    root = tmp_path_factory.mktemp("native")
    data = get_task("pneumonia").write_synthetic(root / "data", 4, 0)
    settings = {k: v for k, v in tiny_config_kwargs().items() if k != "image_size"}
    (root / "vit.json").write_text(json.dumps({**settings, "classifier_pooling": "cls"}))
    spcxr("finetune", "pneumonia", "--data", data, "--output-dir", root / "model", "--max-steps", 2, "--init",
          "scratch", "--config", root / "vit.json", "--image-size", 64, "--batch-size", 8)
    result = spcxr("export", root / "model", "--repo-dir", root / "repo", "--native", "--repo-id", REPO_ID)
    return root / "model", root / "repo", result.output


def test_native_export_is_stock_transformers_with_the_equivalence_in_the_card(exported):
    model_dir, repo, output = exported
    files = {str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "metrics.json",
            "training_log.json", "examples/chest-1.png"} <= files
    assert not [name for name in files if name.endswith((".py", ".bin", ".pt", ".pth"))]
    config = json.loads((repo / "config.json").read_text())
    source = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "vit" and config["architectures"] == ["ViTForImageClassification"]
    assert "auto_map" not in config and config["num_channels"] == 3
    assert config["id2label"] == source["id2label"] and config["layer_norm_eps"] == source["layer_norm_eps"]
    processor = json.loads((repo / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "ViTImageProcessor" and "auto_map" not in processor
    assert processor["image_mean"] == [0.5] * 3 and processor["image_std"] == [0.25] * 3
    assert processor["resample"] == 3 and processor["size"] == {"height": 64, "width": 64}

    text = (repo / "README.md").read_text()
    card = ModelCard(text)
    assert card.data.library_name == "transformers" and card.data.model_name == REPO_ID
    assert card.data.eval_results  # the model-index, from the fine-tuning run's metrics.json
    assert all(entry["output"] for entry in card.data.widget)
    body = text.split("\n---\n", 1)[1].strip().splitlines()
    first = "\n".join(body[:5])
    assert "No remote code" in first and "top-1 agreement 100.0%" in first
    # Checked on the split the fine-tuning run evaluated on, named as a card names local data (no absolute path).
    assert "held-out images (the pneumonia test split, local folder `data`)" in first
    assert str(model_dir.parent) not in text
    assert "trust_remote_code=True" not in text and "stretches non-square films" in text
    # The terminal: the processor's limits in one line, then what was written with its equivalence numbers.
    assert "note: the native ViTImageProcessor stretches" in output and "top-1 agreement 100.0%" in output


def test_native_repository_loads_without_the_project_and_without_remote_code(exported, tmp_path):
    model_dir, repo, _ = exported
    png = grey_png(tmp_path / "film.png")
    cache = tmp_path / "hub"
    publish_to_cache(repo, REPO_ID, cache)
    with torch.no_grad():
        ss_cxr = SpcxrForImageClassification.from_pretrained(model_dir).eval()
        expected = ss_cxr(**SpcxrImageProcessor(size={"height": 64, "width": 64})(str(png))).logits[0].tolist()
    out = fresh_python(
        WITHOUT_PROJECT
        + "import json, torch\nfrom PIL import Image\n"
        + "from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline\n"
        + "results = []\n"
        + f"for source in ({str(repo)!r}, {REPO_ID!r}):\n"
        + "    backbone = AutoModel.from_pretrained(source)\n"
        + "    model = AutoModelForImageClassification.from_pretrained(source).eval()\n"
        + "    assert type(model).__module__ == 'transformers.models.vit.modeling_vit', type(model).__module__\n"
        + "    assert type(backbone).__name__ == 'ViTModel'\n"
        + "    processor = AutoImageProcessor.from_pretrained(source)\n"
        + f"    inputs = processor(Image.open({str(png)!r}).convert('RGB'), return_tensors='pt')\n"
        + "    with torch.no_grad():\n"
        + "        logits = model(**inputs).logits[0].tolist()\n"
        + "    classify = pipeline('image-classification', model=source)\n"
        + f"    scores = classify({str(png)!r}, function_to_apply='none')\n"
        + "    by_label = {p['label']: p['score'] for p in scores}\n"
        + "    results.append([logits, [by_label[model.config.id2label[i]] for i in range(len(logits))]])\n"
        + "print(json.dumps(results))\n",
        env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
        cwd=tmp_path,
    )
    results = json.loads(out.strip().splitlines()[-1])
    assert len(results) == 2
    for logits, pipeline_logits in results:
        assert logits == pytest.approx(expected, abs=TOLERANCE)
        assert pipeline_logits == pytest.approx(expected, abs=TOLERANCE)


def test_backbone_export_gives_ss_cxr_features_on_a_grey_film_given_as_rgb(tmp_path):
    backbone = make_model(tmp_path, None)
    repo, equivalence = export_native(backbone, tmp_path / "repo")
    assert equivalence.kind == "backbone" and equivalence.agreement > 0.9999
    png = grey_png(tmp_path / "film.png", seed=11)
    with torch.no_grad():
        reference = SpcxrModel.from_pretrained(backbone).eval()(
            **SpcxrImageProcessor(size={"height": 64, "width": 64})(str(png)))
    out = fresh_python(
        WITHOUT_PROJECT
        + "import json, torch\nfrom PIL import Image\nfrom transformers import AutoImageProcessor, AutoModel\n"
        + f"model, info = AutoModel.from_pretrained({str(repo)!r}, output_loading_info=True)\n"
        + "assert not info['missing_keys'] and not info['unexpected_keys'], info\n"
        + f"processor = AutoImageProcessor.from_pretrained({str(repo)!r})\n"
        + f"inputs = processor(Image.open({str(png)!r}).convert('RGB'), return_tensors='pt')\n"
        + "with torch.no_grad():\n"
        + "    output = model.eval()(**inputs)\n"
        + "print(json.dumps([output.last_hidden_state[0].tolist(), output.pooler_output[0].tolist()]))\n",
        cwd=tmp_path,
    )
    features, pooled = json.loads(out.strip().splitlines()[-1])
    assert np.abs(np.array(features) - reference.last_hidden_state[0].numpy()).max() < TOLERANCE
    assert np.abs(np.array(pooled) - reference.pooler_output[0].numpy()).max() < TOLERANCE


def test_multi_label_classifier_keeps_its_problem_type_and_labels(tmp_path):
    model = make_model(tmp_path, "screening-14")
    repo, equivalence = export_native(model, tmp_path / "repo", repo_id="acme/screening")
    config = json.loads((repo / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert list(config["id2label"].values()) == list(get_task("screening-14").labels)
    assert config["label2id"] == {label: i for i, label in enumerate(get_task("screening-14").labels)}
    assert equivalence.agreement == 1.0 and equivalence.max_difference < TOLERANCE


def mean_pooled(tmp_path):
    config = SpcxrConfig(**tiny_config_kwargs(id2label={0: "normal", 1: "pneumonia"}, classifier_pooling="mean"))
    return save_model_directory(tmp_path / "mean", SpcxrForImageClassification(config).eval())


def timm_like(tmp_path):
    folder = tmp_path / "timm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "timm_wrapper", "architectures": [
        "TimmWrapperForImageClassification"], "architecture": "densenet121"}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.mark.parametrize(("make", "reason"), [
    (lambda tmp: make_model(tmp, "lungseg"), "transformers has no native UNETR; the remote-code export"),
    (mean_pooled, "classifier_pooling 'mean' cannot be native"),
    (timm_like, "model_type 'timm_wrapper' is not an SS-CXR ViT"),
])
def test_what_cannot_be_native_is_refused_in_one_line_and_nothing_is_written(tmp_path, make, reason):
    model = make(tmp_path)
    result = spcxr("export", model, "--repo-dir", tmp_path / "repo", "--native", expect=2)
    assert reason in one_line(result)
    assert not (tmp_path / "repo").exists() and not list(tmp_path.glob(".repo.partial-*"))


def test_disagreement_refuses_and_writes_nothing_unless_allowed(tmp_path, monkeypatch):
    model = make_model(tmp_path, "pneumonia")
    measured = native_export.measure_equivalence

    def disagreeing(*args):
        equivalence = measured(*args)
        equivalence.agreement = 0.5
        return equivalence

    monkeypatch.setattr(native_export, "measure_equivalence", disagreeing)
    result = spcxr("export", model, "--repo-dir", tmp_path / "repo", "--native", expect=2)
    assert "disagrees" in one_line(result) and "top-1 agreement 50.0%" in result.output
    assert not (tmp_path / "repo").exists() and not list(tmp_path.glob(".repo.partial-*"))
    result = spcxr("export", model, "--repo-dir", tmp_path / "repo", "--native", "--allow-disagreement")
    assert "warning: " in result.output and "top-1 agreement 50.0%" in (tmp_path / "repo" / "README.md").read_text()


def test_held_out_images_of_another_size_are_checked_through_each_side_s_own_resizing(tmp_path):
    backbone = make_model(tmp_path, None)
    folder = tmp_path / "held-out"
    folder.mkdir()
    for seed in range(3):
        grey_png(folder / f"film-{seed}.png", seed=seed, size=128)
    result = spcxr("export", backbone, "--repo-dir", tmp_path / "repo", "--native", "--check-images", folder)
    line = result.output.strip().splitlines()[-1]
    assert "equivalence on 3 held-out images" in line
    # Pillow-on-float (SS-CXR) and the stock processor resize 128² → 64² differently: close, not identical.
    assert 0.99 <= float(line.rsplit("min CLS cosine ", 1)[1].rstrip(")")) <= 1.0
    assert "equivalence on 3 held-out images" in (tmp_path / "repo" / "README.md").read_text()


@pytest.fixture
def fake_hub(monkeypatch):
    """HfApi recording what each upload_folder call sent (files and config)."""
    uploads = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            folder = Path(folder_path)
            uploads.append((repo_id, folder, sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                                                    if p.is_file()), json.loads((folder / "config.json").read_text())))
            return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    return uploads


def test_push_sends_either_kind_and_a_native_folder_as_it_is(exported, fake_hub):
    model_dir, repo, _ = exported
    spcxr("push", model_dir, "--repo-id", "acme/pushed-native", "--native")
    repo_id, _, files, config = fake_hub[-1]
    assert repo_id == "acme/pushed-native" and config["model_type"] == "vit" and "auto_map" not in config
    assert not [name for name in files if name.endswith(".py")]
    spcxr("push", repo, "--repo-id", REPO_ID)  # the exported folder, for the id its card was written for
    assert fake_hub[-1][1] == repo and fake_hub[-1][3]["model_type"] == "vit"
    line = one_line(spcxr("push", repo, "--repo-id", "acme/other", expect=2))
    assert "written for 'acme/cxr-native'" in line and "--native" in line
    spcxr("push", model_dir, "--repo-id", "acme/remote-code")
    assert "auto_map" in fake_hub[-1][3]  # without --native: the remote-code repository, as before


def test_a_native_folder_is_not_exported_again_as_remote_code(exported, tmp_path):
    _, repo, _ = exported
    line = one_line(spcxr("export", repo, "--repo-dir", tmp_path / "again", expect=2))
    assert "already a native export" in line and not (tmp_path / "again").exists()


def test_the_card_of_a_native_folder_is_not_rewritten_without_its_equivalence(exported):
    _, repo, _ = exported
    assert "a native export" in one_line(spcxr("card", repo, expect=2))


def test_the_native_processor_takes_the_saved_processor_s_size_mean_and_std(tmp_path):
    config = SpcxrConfig(**tiny_config_kwargs(id2label={0: "normal", 1: "pneumonia"}))
    torch.manual_seed(0)
    saved = SpcxrImageProcessor(size={"height": 64, "width": 64}, image_mean=0.4, image_std=0.3)
    model = save_model_directory(tmp_path / "model", SpcxrForImageClassification(config).eval(), saved)
    repo, equivalence = export_native(model, tmp_path / "repo")
    processor = json.loads((repo / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.4] * 3 and processor["image_std"] == [0.3] * 3
    assert equivalence.max_difference < TOLERANCE and equivalence.agreement == 1.0
