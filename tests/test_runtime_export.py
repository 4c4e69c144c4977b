"""Runtime exports (`spcxr export --format onnx [--int8]`): round trip through `spcxr predict`, the accuracy check
in the card, and bad input in one line."""

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import spcxr
from PIL import Image

from spcxr_hub.inference import deploy

import spcxr_hub.hub.runtime_export as runtime_export
from spcxr_hub.plugins.registry import get_task

TINY = ["--init", "scratch", "--config", "tiny", "--image-size", "64", "--batch-size", "8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime")
    data = get_task("pneumonia").write_synthetic(root / "data", 12, 0)
    spcxr("finetune", "pneumonia", "--data", data, "--output-dir", root / "model", "--max-steps", 2, *TINY)
    return root, data


@pytest.mark.parametrize("int8", [False, True])
def test_onnx_export_round_trips_with_its_accuracy_check_in_card_and_manifest(trained, int8):
    root, data = trained
    out = root / f"onnx-{int8}"
    extra = ["--int8", "--calibration-data", data] if int8 else []
    result = spcxr("export", root / "model", "--repo-dir", out, "--format", "onnx", *extra)
    assert "top-1 agreement" in result.output
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["precision"] == ("int8" if int8 else "fp32") and manifest["outputs"] == ["logits", "features"]
    check = manifest["accuracy_check"]
    assert check["agreement"] >= 0.9 and check["drop_points"] <= 0.5
    assert check["max_logit_difference"] < (0.1 if int8 else 1e-4)
    assert check["gate_agreement"] >= 0.9 and check["max_ood_difference"] < (2.0 if int8 else 1e-2)
    from spcxr_hub.inference import ood

    assert manifest["ood_statistics"] == "refitted on this graph's features of the 36 training images"
    refitted, original = ood.load(out), ood.load(root / "model")
    assert refitted.num_images == original.num_images == 36 and refitted.percentile == original.percentile
    assert np.abs(refitted.mean - original.mean).max() < (0.5 if int8 else 1e-3)
    card = (out / "README.md").read_text()
    assert "Runtime export" in card and "top-1 agreement" in card and "the OOD flag agrees with the fp32" in card
    assert not (out / "model.safetensors").exists()
    predicted = json.loads(spcxr("predict", data / "test", "--model", out, "--json").stdout)
    reference = json.loads(spcxr("predict", data / "test", "--model", root / "model", "--json").stdout)
    same = [a["predictions"][0]["label"] == b["predictions"][0]["label"] for a, b in zip(predicted, reference)]
    assert len(predicted) == len(reference) and sum(same) / len(same) >= 0.9


def test_too_few_calibration_images_is_one_line(trained, tmp_path):
    root, data = trained
    few = tmp_path / "few"
    few.mkdir()
    for path in list((data / "test" / "NORMAL").iterdir())[:3]:
        (few / path.name).write_bytes(path.read_bytes())
    result = spcxr("export", root / "model", "--repo-dir", tmp_path / "out", "--format", "onnx", "--int8",
                   "--calibration-data", few, expect=2)
    assert "expected at least 32" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_metric_drop_refuses_the_export_unless_allowed(trained, tmp_path, monkeypatch):
    root, _ = trained
    real = runtime_export.check_accuracy

    def worse(*args, **kwargs):
        check = real(*args, **kwargs)
        check.exported = {k: v - 0.2 for k, v in check.exported.items()}
        return check

    monkeypatch.setattr(runtime_export, "check_accuracy", worse)
    result = spcxr("export", root / "model", "--repo-dir", tmp_path / "out", "--format", "onnx", expect=2)
    assert "--allow-drop" in result.output and not (tmp_path / "out").exists()
    spcxr("export", root / "model", "--repo-dir", tmp_path / "out", "--format", "onnx", "--allow-drop")
    assert (tmp_path / "out" / "model.onnx").is_file()


def test_an_export_whose_gate_flags_differently_warns_in_one_line(trained, tmp_path, monkeypatch):
    root, _ = trained
    from spcxr_hub.hub import export_check

    monkeypatch.setattr(export_check, "gate_comparison", lambda *_: {"gate_agreement": 0.5, "max_ood_difference": 9.0})
    result = spcxr("export", root / "model", "--repo-dir", tmp_path / "out", "--format", "onnx")
    [warning] = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert "flags differently from the fp32 model's on 50.0% of the held-out images" in warning
    assert json.loads((tmp_path / "out" / "export.json").read_text())["accuracy_check"]["gate_agreement"] == 0.5


def test_without_its_training_images_an_export_keeps_the_models_ood_statistics_and_says_so(trained, tmp_path):
    root, _ = trained
    model = tmp_path / "model"
    shutil.copytree(root / "model", model)
    log = json.loads((model / "training_log.json").read_text())
    log["options"]["data"] = str(tmp_path / "moved-away")
    (model / "training_log.json").write_text(json.dumps(log))
    spcxr("export", model, "--repo-dir", tmp_path / "out", "--format", "onnx", "--check-data", root / "data")
    manifest = json.loads((tmp_path / "out" / "export.json").read_text())
    assert manifest["ood_statistics"].startswith("copied from the model (fitted on fp32 features")
    assert (tmp_path / "out" / "ood_statistics.safetensors").read_bytes() == (model / "ood_statistics.safetensors").read_bytes()


def test_a_drop_of_exactly_the_limit_is_not_above_it():
    from spcxr_hub.hub.export_check import MAX_METRIC_DROP, AccuracyCheck

    check = AccuracyCheck(60, "held-out images", 1.0, 1e-3, "auroc", {"auroc": 0.735}, {"auroc": 0.730})
    assert 100 * (0.735 - 0.730) > MAX_METRIC_DROP and not check.drop_points > MAX_METRIC_DROP


def test_a_folder_from_a_newer_export_format_is_refused_in_one_line(trained):
    root, data = trained
    out = root / "onnx-False"
    manifest = json.loads((out / "export.json").read_text())
    (out / "export.json").write_text(json.dumps({**manifest, "format_version": 99}))
    try:
        result = spcxr("predict", data / "test", "--model", out, expect=2)
        assert "newer format" in result.output
    finally:
        (out / "export.json").write_text(json.dumps(manifest))


def test_an_unsupported_format_is_one_line(trained, tmp_path):
    root, _ = trained
    result = spcxr("export", root / "model", "--repo-dir", tmp_path / "o", "--format", "tflite", expect=2)
    assert "expected one of" in result.output


def test_an_exported_folder_keeps_the_gate_calibration_and_decisions_of_its_model(trained):
    """The export runs the same input gate (OOD statistics copied, features from the graph), the temperature in the
    graph, and the stored operating point and prediction sets: predict's JSON matches the PyTorch model's."""
    root, data = trained
    out = root / "onnx-gate"
    spcxr("export", root / "model", "--repo-dir", out, "--format", "onnx")
    config = json.loads((out / "config.json").read_text())
    assert config.get("temperature") not in (None, 1.0)  # finetune calibrated it: the graph must apply it
    assert (out / "ood_statistics.safetensors").is_file()
    exported = json.loads(spcxr("predict", data / "test", "--model", out, "--json").stdout)
    reference = json.loads(spcxr("predict", data / "test", "--model", root / "model", "--json").stdout)
    for a, b in zip(exported, reference):
        assert a["ood_score"] is not None and a["ood_score"] == pytest.approx(b["ood_score"], rel=1e-3, abs=1e-3)
        assert [f["code"] for f in a["findings"]] == [f["code"] for f in b["findings"]]
        assert a["predictions"][0]["score"] == pytest.approx(b["predictions"][0]["score"], abs=1e-4)
        for key in ("positive", "prediction_set"):
            assert key in b and a[key] == b[key]
    result = spcxr("predict", data / "test", "--model", out, "--explain", "--output-dir", root / "x", expect=2)
    assert "exported" in result.output and len(result.output.strip().splitlines()) == 1


# --- OpenVINO, predict --fast choosing a registered export, segmenters ---------------------------------------------

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
    reason="openvino and nncf are not installed (pip install 'spcxr-hub[runtimes]')")


@needs_openvino
@pytest.mark.parametrize("int8", [False, True])
def test_openvino_export_round_trips_with_its_accuracy_check(trained, int8):
    root, data = trained
    out = root / f"openvino-{int8}"
    extra = ["--int8", "--calibration-data", data] if int8 else []
    spcxr("export", root / "model", "--repo-dir", out, "--format", "openvino", *extra)
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["format"] == "openvino" and manifest["precision"] == ("int8" if int8 else "fp32")
    assert (out / "openvino_model.xml").is_file() and (out / "openvino_model.bin").is_file()
    check = manifest["accuracy_check"]
    assert check["agreement"] >= 0.9 and check["drop_points"] <= 0.5
    assert check["max_logit_difference"] < (0.1 if int8 else 1e-4)
    predicted = json.loads(spcxr("predict", data / "test", "--model", out, "--json").stdout)
    reference = json.loads(spcxr("predict", data / "test", "--model", root / "model", "--json").stdout)
    same = [a["predictions"][0]["label"] == b["predictions"][0]["label"] for a, b in zip(predicted, reference)]
    assert len(predicted) == len(reference) and sum(same) / len(same) >= 0.9


@pytest.mark.parametrize("native_bf16", [False, pytest.param(True, marks=pytest.mark.skipif(
    not deploy.bf16_is_native(), reason="bf16 is not native on this CPU"))])
def test_predict_fast_times_the_torch_path_against_the_registered_int8_export_once(trained, tmp_path, monkeypatch,
                                                                                   native_bf16):
    """export --int8 registers the folder; the first predict --fast --model MODEL_DIR times the torch path (bf16
    where native, else dynamic int8: the CPU probes faked to AVX2-only) against it and caches the figures; later runs
    read them and run the faster (each answer forced once through the cache; the export's outputs are those of
    predicting with the export folder itself); once the folder is gone, the torch path runs with a line saying so."""
    root, data = trained
    monkeypatch.setenv("SPCXR_EXPORT_REGISTRY", str(tmp_path / "exports.json"))
    out = tmp_path / "int8"
    spcxr("export", root / "model", "--repo-dir", out, "--format", "onnx", "--int8", "--calibration-data", data)
    if not native_bf16:
        monkeypatch.setattr(deploy, "bf16_is_native", lambda: False)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    torch_path = deploy.choose_cpu_path()
    assert torch_path.mode == ("bf16" if native_bf16 else "int8")
    fast = ["predict", data / "test", "--model", root / "model", "--fast", "--json"]
    [line] = spcxr(*fast).stderr.splitlines()
    assert "measured now, cached in" in line and f"vs {torch_path.name} " in line
    cache = tmp_path / "fast_paths.json"
    [(digest, entry)] = json.loads(cache.read_text()).items()
    assert set(entry["seconds_per_batch"]) == {"torch", "export"} and entry["key"]["threads"] == torch.get_num_threads()
    own = json.loads(spcxr("predict", data / "test", "--model", out, "--json").stdout)
    for chosen in ("export", "torch"):
        cache.write_text(json.dumps({digest: {**entry, "chosen": chosen}}))
        run = spcxr(*fast)
        [line] = run.stderr.splitlines()
        assert "cached in" in line and "measured now" not in line
        got = json.loads(run.stdout)
        if chosen == "torch":
            assert line.startswith(f"fast path: {torch_path.name} ({torch_path.reason}; faster than the registered "
                                   "onnxruntime int8")
            assert got[0]["fast_path"]["mode"] == torch_path.mode and got[0]["fast_path"]["export"] is None
            continue
        assert line.startswith(f"fast path: onnxruntime int8 (static, calibrated) ({torch_path.reason}; the registered "
                               f"int8 export of these weights, {out.resolve()}, is faster: ")
        assert len(got) == len(own) and got[0]["fast_path"]["export"] == str(out.resolve())
        for a, b in zip(got, own):
            assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
            assert [p["score"] for p in a["predictions"]] == pytest.approx([p["score"] for p in b["predictions"]],
                                                                           abs=1e-6)
            assert a["ood_score"] == pytest.approx(b["ood_score"], abs=1e-6)
    shutil.rmtree(out)
    lines = spcxr(*fast).stderr.splitlines()
    assert lines[0] == f"fast path: {torch_path.name} ({torch_path.reason})" and "is gone" in lines[1]
    hint = [f"spcxr export {root / 'model'} --repo-dir" in lines[2]] if not native_bf16 else []
    assert len(lines) == 2 + len(hint) and all(hint)


def test_a_lung_segmenter_exports_to_onnx_and_writes_the_same_masks(tmp_path):
    data = get_task("lungseg").write_synthetic(tmp_path / "data", 8, 0)
    spcxr("finetune", "lungseg", "--data", data, "--output-dir", tmp_path / "model", "--max-steps", 2, *TINY)
    out = tmp_path / "onnx"
    spcxr("export", tmp_path / "model", "--repo-dir", out, "--format", "onnx")
    assert json.loads((out / "export.json").read_text())["kind"] == "segmentation"
    films = sorted((data / "CXR_png").iterdir())[:4]
    spcxr("predict", *films, "--model", out, "--output-dir", tmp_path / "exported")
    spcxr("predict", *films, "--model", tmp_path / "model", "--output-dir", tmp_path / "torch")
    for film in films:
        name = film.name.rsplit(".", 1)[0] + "_mask.png"
        exported = np.asarray(Image.open(tmp_path / "exported" / name))
        reference = np.asarray(Image.open(tmp_path / "torch" / name))
        assert exported.shape == reference.shape and (exported == reference).mean() >= 0.999  # ties at edges only
        assert 0.0 < (reference > 0).mean() < 1.0  # a real mask, not a blank one that anything would match


def test_a_backbone_is_not_a_runtime_export_in_one_line(tmp_path):
    from spcxr_hub import SpcxrConfig, SpcxrModel
    from conftest import tiny_config_kwargs

    SpcxrModel(SpcxrConfig(**tiny_config_kwargs())).save_pretrained(tmp_path / "backbone")
    result = spcxr("export", tmp_path / "backbone", "--repo-dir", tmp_path / "out", "--format", "onnx", expect=2)
    assert "cannot be exported to a runtime" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
