"""How `spcxr predict --fast` chooses its path (`deploy.choose_fast_path` with `source`, `export_registry.py`): bf16
where bf16 is native, else a registered int8 runtime export of the same weights, else torch's dynamic int8 with the
export command to run. CPU probes and registered exports are faked, so every branch runs on any machine."""

import json
import shutil

import pytest
import torch

from spcxr_hub.inference import deploy, export_registry, runtimes


def cpu(monkeypatch, *, bf16: bool):
    """This CPU's capability probes replaced (the hook `choose_cpu_path` reads)."""
    monkeypatch.setattr(deploy, "fused_blocks_available", lambda: True)
    monkeypatch.setattr(deploy, "bf16_is_native", lambda: bf16)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512" if bf16 else "AVX2")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    path = tmp_path / "registry" / "exports.json"
    monkeypatch.setenv("SPCXR_EXPORT_REGISTRY", str(path))
    return path


def model_dir(root, weights=b"weights", architecture="SpcxrForImageClassification"):
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "spcxr", "architectures": [architecture]}))
    (root / "model.safetensors").write_bytes(weights)
    return root


def fake_export(folder, source, format_="onnx", precision="int8"):
    """An export folder as far as the registry and the manifest reader look: export.json and the graph file."""
    folder.mkdir(parents=True)
    digest = export_registry.weights_digest(source)
    manifest = {"format_version": runtimes.FORMAT_VERSION, "format": format_, "precision": precision,
                "path": f"{format_} {precision}", "source_sha256": digest}
    (folder / "export.json").write_text(json.dumps(manifest))
    (folder / runtimes.GRAPH_FILES[format_]).write_text("graph")
    export_registry.register(digest, folder, manifest)
    return folder


@pytest.fixture
def runtimes_installed(monkeypatch):
    monkeypatch.setattr(runtimes, "require_runtime", lambda format_: None)


def test_native_bf16_keeps_bf16_even_with_a_registered_int8_export(tmp_path, monkeypatch, runtimes_installed):
    cpu(monkeypatch, bf16=True)
    source = model_dir(tmp_path / "model")
    fake_export(tmp_path / "export", source)
    chosen = deploy.choose_fast_path("cpu", source=source)
    assert chosen.mode == "bf16" and chosen.export is None and chosen.notes == ()


def test_without_native_bf16_the_registered_int8_export_of_the_same_weights_runs(tmp_path, monkeypatch,
                                                                                  runtimes_installed):
    cpu(monkeypatch, bf16=False)
    source = model_dir(tmp_path / "model")
    export = fake_export(tmp_path / "export", source)
    chosen = deploy.choose_fast_path("cpu", source=source)
    assert chosen.mode == "runtime" and chosen.export == str(export.resolve())
    assert chosen.line.startswith("fast path: onnx int8 (no native bf16 on this CPU: avx2; the registered int8 export")
    copy = tmp_path / "copied"
    shutil.copytree(source, copy)  # same weights elsewhere: same export
    assert deploy.choose_fast_path("cpu", source=copy).export == str(export.resolve())


def test_without_an_export_the_torch_path_runs_with_the_export_command_in_one_note(tmp_path, monkeypatch):
    cpu(monkeypatch, bf16=False)
    source = model_dir(tmp_path / "model")
    chosen = deploy.choose_fast_path("cpu", source=source)
    assert chosen.mode == "int8" and chosen.export is None and len(chosen.notes) == 1
    assert f"spcxr export {source} --repo-dir {source}-" in chosen.notes[0] and "--int8 --calibration-data" in chosen.notes[0]
    assert chosen.lines == [chosen.line, "note: " + chosen.notes[0]]


def test_other_weights_do_not_take_an_export(tmp_path, monkeypatch, runtimes_installed):
    cpu(monkeypatch, bf16=False)
    fake_export(tmp_path / "export", model_dir(tmp_path / "model"))
    other = model_dir(tmp_path / "retrained", weights=b"other weights")
    assert deploy.choose_fast_path("cpu", source=other).mode == "int8"


def test_a_registered_export_whose_folder_vanished_falls_back_with_a_line_and_is_dropped(tmp_path, monkeypatch,
                                                                                       runtimes_installed, registry):
    cpu(monkeypatch, bf16=False)
    source = model_dir(tmp_path / "model")
    shutil.rmtree(fake_export(tmp_path / "export", source))
    chosen = deploy.choose_fast_path("cpu", source=source)
    assert chosen.mode == "int8" and "is gone" in chosen.notes[0] and "spcxr export" in chosen.notes[1]
    assert json.loads(registry.read_text())["exports"][export_registry.weights_digest(source)] == []


def test_a_registered_export_whose_runtime_is_missing_falls_back_with_a_line(tmp_path, monkeypatch):
    cpu(monkeypatch, bf16=False)
    source = model_dir(tmp_path / "model")
    fake_export(tmp_path / "export", source)

    def missing(format_):
        raise runtimes.ExportedFolderError(f"format {format_!r} needs onnxruntime, which is not installed")

    monkeypatch.setattr(runtimes, "require_runtime", missing)
    chosen = deploy.choose_fast_path("cpu", source=source)
    assert chosen.mode == "int8" and "not installed" in chosen.notes[0]


def test_a_folder_overwritten_by_another_models_export_is_not_taken(tmp_path, monkeypatch, runtimes_installed):
    cpu(monkeypatch, bf16=False)
    source = model_dir(tmp_path / "model")
    export = fake_export(tmp_path / "export", source)
    manifest = json.loads((export / "export.json").read_text())
    (export / "export.json").write_text(json.dumps({**manifest, "source_sha256": "0" * 64}))
    chosen = deploy.choose_fast_path("cpu", source=source)
    assert chosen.mode == "int8" and "another model" in chosen.notes[0]


def test_fp32_exports_are_never_chosen_and_openvino_int8_comes_first(tmp_path, monkeypatch, runtimes_installed):
    cpu(monkeypatch, bf16=False)
    source = model_dir(tmp_path / "model")
    fake_export(tmp_path / "fp32", source, precision="fp32")
    assert deploy.choose_fast_path("cpu", source=source).mode == "int8"
    fake_export(tmp_path / "onnx", source)
    openvino = fake_export(tmp_path / "openvino", source, format_="openvino")
    fake_export(tmp_path / "onnx-later", source)
    assert deploy.choose_fast_path("cpu", source=source).export == str(openvino.resolve())


def test_models_spcxr_export_cannot_take_get_no_lookup_and_no_hint(tmp_path, monkeypatch):
    cpu(monkeypatch, bf16=False)
    backbone = model_dir(tmp_path / "backbone", architecture="SpcxrModel")
    chosen = deploy.choose_fast_path("cpu", source=backbone)
    assert chosen.mode == "int8" and chosen.notes == ()
    assert deploy.choose_fast_path("cpu", source="spcxr/vit-s-pneumonia").notes == ()  # a Hub id


def test_a_damaged_registry_reads_as_empty(tmp_path, monkeypatch, registry):
    cpu(monkeypatch, bf16=False)
    registry.parent.mkdir(parents=True)
    registry.write_text("{not json")
    assert deploy.choose_fast_path("cpu", source=model_dir(tmp_path / "model")).mode == "int8"


def test_the_digest_is_cached_by_size_and_mtime(tmp_path, registry):
    source = model_dir(tmp_path / "model")
    digest = export_registry.weights_digest(source)
    assert digest == __import__("hashlib").sha256(b"weights").hexdigest()
    assert json.loads(registry.read_text())["digests"][str((source / "model.safetensors").resolve())]["sha256"] == digest
    (source / "model.safetensors").write_bytes(b"changed")
    assert export_registry.weights_digest(source) != digest
