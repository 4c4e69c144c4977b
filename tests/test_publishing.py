import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json

import pytest
import torch
from conftest import fresh_python, spcxr
from huggingface_hub import ModelCard
from hub_cache import publish_to_cache
from test_auto_classes import WITHOUT_PROJECT
from test_cards import make_model

import spcxr_hub.hub.publishing as publishing
from spcxr_hub.hub.publishing import PublishError, export_repository


def one_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def no_hub(monkeypatch):
    """Any attempt to reach the Hub fails the test."""

    class Unreachable:
        def __init__(self, *args, **kwargs):
            raise AssertionError("the Hub was contacted")

    monkeypatch.setattr("huggingface_hub.HfApi", Unreachable)


def test_export_writes_a_complete_hub_repository(tmp_path):
    model = make_model(tmp_path, "pneumonia", synthetic=True)
    (model / "loss_curve.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (model / "notes.txt").write_text("private scribbles")
    repo = export_repository(model, tmp_path / "repo", repo_id="org/pneumonia-demo")
    files = set(snapshot(repo))
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "configuration_spcxr.py",
            "modeling_spcxr.py", "vit_layers.py", "image_processing_spcxr.py", "imaging.py", "README.md", "metrics.json",
            "training_log.json", "loss_curve.png", "examples/chest-1.png", "examples/chest-2.png"} <= files
    assert "notes.txt" not in files and not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    assert json.loads((repo / "config.json").read_text())["auto_map"]["AutoModelForImageClassification"]
    card = ModelCard((repo / "README.md").read_text())
    assert card.data.model_name == "org/pneumonia-demo" and "synthetic-data" in card.data.tags
    assert all(entry["src"].startswith("https://huggingface.co/org/pneumonia-demo/resolve/main/examples/")
               for entry in card.data.widget)
    assert not (model / "README.md").exists()  # the model directory itself is left as it was


def test_exported_repository_loads_without_the_project_from_its_folder_and_as_org_name(tmp_path):
    repo = export_repository(make_model(tmp_path, "pneumonia"), tmp_path / "repo", repo_id="acme/cxr-pneumonia")
    cache = tmp_path / "hub"
    publish_to_cache(repo, "acme/cxr-pneumonia", cache)
    from spcxr_hub import SpcxrForImageClassification

    with torch.no_grad():
        expected = SpcxrForImageClassification.from_pretrained(repo)(torch.ones(1, 1, 64, 64)).logits[0].tolist()
    out = fresh_python(
        WITHOUT_PROJECT
        + "import json, torch\nfrom transformers import AutoModelForImageClassification, pipeline\n"
        + "results = []\n"
        + f"for source in ({str(repo)!r}, 'acme/cxr-pneumonia'):\n"
        + "    model = AutoModelForImageClassification.from_pretrained(source, trust_remote_code=True)\n"
        + "    assert type(model).__module__.startswith('transformers_modules')\n"
        + "    classify = pipeline('image-classification', model=source, trust_remote_code=True)\n"
        + f"    labels = sorted(p['label'] for p in classify({str(repo / 'examples' / 'chest-1.png')!r}))\n"
        + "    results.append([model(torch.ones(1, 1, 64, 64)).logits[0].tolist(), labels])\n"
        + "print(json.dumps(results))\n",
        env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
        cwd=tmp_path,
    )
    for logits, labels in json.loads(out.strip().splitlines()[-1]):
        assert logits == pytest.approx(expected, abs=1e-6) and labels == ["normal", "pneumonia"]


@pytest.mark.parametrize("pickle_name", ["pytorch_model.bin", "model.pt"])
def test_export_refuses_pickled_weights_and_writes_nothing(tmp_path, pickle_name):
    model = make_model(tmp_path, "pneumonia")
    (model / pickle_name).write_bytes(b"not today")
    result = spcxr("export", model, "--repo-dir", tmp_path / "repo", expect=2)
    assert pickle_name in one_line(result) and "pickle" in result.output
    assert not (tmp_path / "repo").exists()


def test_export_refuses_a_directory_without_weights_or_an_existing_folder(tmp_path):
    model = make_model(tmp_path, "pneumonia")
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "keep.txt").write_text("precious")
    assert "already exists" in one_line(spcxr("export", model, "--repo-dir", tmp_path / "repo", expect=2))
    assert (tmp_path / "repo" / "keep.txt").read_text() == "precious"
    (model / "model.safetensors").unlink()
    assert "safetensors" in one_line(spcxr("export", model, "--repo-dir", tmp_path / "other", expect=2))
    assert not (tmp_path / "other").exists()


def test_export_command_with_overwrite_replaces_the_folder(tmp_path):
    model = make_model(tmp_path, "lungseg")
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "stale.txt").write_text("old")
    result = spcxr("export", model, "--repo-dir", tmp_path / "repo", "--repo-id", "org/lungs", "--overwrite")
    assert "wrote" in result.output and not (tmp_path / "repo" / "stale.txt").exists()
    assert (tmp_path / "repo" / "examples" / "chest-1-mask.png").is_file()


def test_push_offline_fails_fast_with_one_line_and_writes_nothing(tmp_path, monkeypatch, no_hub):
    model = make_model(tmp_path, "pneumonia")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # a staging folder would show up here
    before = snapshot(tmp_path)
    line = one_line(spcxr("push", model, "--repo-id", "org/name", expect=2))
    assert "HF_HUB_OFFLINE" in line and "org/name" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("repo_id", ["no-namespace", "org/na me", "a/b/c", "org/double--dash", "-org/name"])
def test_push_rejects_an_invalid_repo_id_in_one_line(tmp_path, repo_id, no_hub):
    line = one_line(spcxr("push", make_model(tmp_path, "pneumonia", metrics=False), "--repo-id", repo_id, expect=2))
    assert "invalid repo id" in line and repo_id in line


def test_push_without_a_token_says_so_in_one_line(tmp_path, monkeypatch, no_hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(publishing, "get_token", lambda: None)
    line = one_line(spcxr("push", make_model(tmp_path, "pneumonia"), "--repo-id", "org/name", expect=2))
    assert "no Hugging Face token" in line


def test_push_creates_the_repository_and_uploads_the_exported_folder(tmp_path, monkeypatch):
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def create_branch(self, repo_id, **kwargs):
            calls.append(("create_branch", repo_id, kwargs))

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            files = sorted(str(p.relative_to(folder_path)) for p in folder_path.rglob("*") if p.is_file())
            readme = ModelCard((folder_path / "README.md").read_text())
            calls.append(("upload_folder", repo_id, files, readme.data.widget[0]["src"], kwargs))
            return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    model = make_model(tmp_path, "pneumonia")
    url = publishing.push_to_hub(model, "acme/pneumonia", private=True, revision="v1", token="hf_test")
    assert url == "https://huggingface.co/acme/pneumonia/commit/abc"
    assert calls[0] == ("init", "hf_test")
    assert calls[1] == ("create_repo", "acme/pneumonia", {"private": True, "exist_ok": True})
    assert calls[2] == ("create_branch", "acme/pneumonia", {"branch": "v1", "exist_ok": True})
    _, repo_id, files, src, kwargs = calls[3]
    assert {"model.safetensors", "config.json", "README.md", "metrics.json", "examples/chest-1.png"} <= set(files)
    assert src == "https://huggingface.co/acme/pneumonia/resolve/v1/examples/chest-1.png"
    assert kwargs["revision"] == "v1"


def test_push_of_an_invalid_model_directory_is_one_line(tmp_path, no_hub):
    with pytest.raises(PublishError, match="no such model directory"):
        publishing.push_to_hub(tmp_path / "missing", "org/name")


def test_export_of_a_backbone_publishes_its_pretraining_summary(tmp_path):
    backbone = make_model(tmp_path, None)
    summary = tmp_path / "elsewhere.json"
    summary.write_text(json.dumps({"global_step": 3, "final_loss": 0.5, "synthetic_data": True,
                                   "args": {"data": "synthetic"}, "backbone": "somewhere/else"}))
    repo = export_repository(backbone, tmp_path / "repo", repo_id="org/backbone", training_summary=summary)
    assert json.loads((repo / "trainer_state.json").read_text())["global_step"] == 3
    card = ModelCard((repo / "README.md").read_text())
    assert card.data.pipeline_tag == "image-feature-extraction" and "synthetic-data" in card.data.tags
    assert card.data.eval_results is None and "Not evaluated" in card.text


def test_exported_repository_and_card_get_ordinary_permissions(tmp_path):
    """Atomic writes stage in private temporary paths; what a person publishes must be readable like any file."""
    model = make_model(tmp_path, "pneumonia", synthetic=True)
    old = os.umask(0o022)
    try:
        repo = export_repository(model, tmp_path / "repo", repo_id="org/pneumonia-demo")
    finally:
        os.umask(old)
    assert repo.stat().st_mode & 0o777 == 0o755
    assert (repo / "examples").stat().st_mode & 0o777 == 0o755
    for name in ("README.md", "config.json", "examples/chest-1.png"):
        assert (repo / name).stat().st_mode & 0o777 == 0o644, name
