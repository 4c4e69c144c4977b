"""How `spcxr predict --fast` chooses its path (`deploy.choose_fast_path` with `source`, `export_registry.py`,
`path_timing.py`): the torch path (bf16 where bf16 is native, else dynamic int8, with the export command to run),
or a registered int8 runtime export of the same weights when it measured faster here (timed once, cached). CPU
probes, registered exports and their speeds are faked, so every branch runs on any machine."""

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


def test_native_bf16_without_a_loaded_model_to_time_keeps_bf16(tmp_path, monkeypatch, runtimes_installed):
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


class FakeModel(torch.nn.Module):
    """What the measurement reads of a loaded model: its config's input shape."""

    config = type("Config", (), {"num_channels": 1, "image_size": 16})()


def timed_paths(monkeypatch, *, torch_s: float, export_s: float) -> dict:
    """The torch path and the export replaced by calls that take the given seconds; counts how often each was built."""
    import time

    built = {"torch": 0, "export": 0}

    def runner(name, seconds):
        built[name] += 1
        return lambda **_: time.sleep(seconds)

    monkeypatch.setattr(deploy, "optimize_for_cpu", lambda model, **_: runner("torch", torch_s))
    monkeypatch.setattr(runtimes, "load_runtime", lambda folder, **_: (runner("export", export_s), None, False))
    return built


@pytest.mark.parametrize("bf16", [True, False])
def test_the_faster_of_the_torch_path_and_the_registered_export_runs_measured_once(
        tmp_path, monkeypatch, runtimes_installed, registry, bf16):
    cpu(monkeypatch, bf16=bf16)
    source = model_dir(tmp_path / "model")
    export = fake_export(tmp_path / "export", source, format_="openvino")
    built = timed_paths(monkeypatch, torch_s=0.03, export_s=0.001)
    chosen = deploy.choose_fast_path("cpu", FakeModel(), source=source)
    assert chosen.mode == "runtime" and chosen.export == str(export.resolve()) and built == {"torch": 1, "export": 1}
    assert "is faster: openvino int8" in chosen.reason and "measured now, cached in" in chosen.reason
    cache = json.loads((registry.parent / "fast_paths.json").read_text())
    (entry,) = cache.values()
    assert entry["chosen"] == "export" and entry["seconds_per_batch"]["torch"] > entry["seconds_per_batch"]["export"]
    again = deploy.choose_fast_path("cpu", FakeModel(), source=source)  # the cache answers; nothing is built
    assert again.export == chosen.export and "cached in" in again.reason and built == {"torch": 1, "export": 1}

    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)  # another machine setting: measured again
    built = timed_paths(monkeypatch, torch_s=0.001, export_s=0.03)
    kept = deploy.choose_fast_path("cpu", FakeModel(), source=source)
    torch_path = deploy.choose_cpu_path()
    assert kept.mode == torch_path.mode and kept.export is None and built == {"torch": 1, "export": 1}
    assert kept.line.startswith(f"fast path: {torch_path.name} ({torch_path.reason}; faster than the registered "
                                f"openvino int8 ") and f"vs {torch_path.name} " in kept.line
    assert len(json.loads((registry.parent / "fast_paths.json").read_text())) == 2


def test_a_damaged_timing_cache_measures_again(tmp_path, monkeypatch, runtimes_installed, registry):
    cpu(monkeypatch, bf16=True)
    source = model_dir(tmp_path / "model")
    fake_export(tmp_path / "export", source)
    registry.parent.mkdir(parents=True, exist_ok=True)
    (registry.parent / "fast_paths.json").write_text("[not a dict")
    built = timed_paths(monkeypatch, torch_s=0.001, export_s=0.02)
    assert deploy.choose_fast_path("cpu", FakeModel(), source=source).mode == "bf16" and built["export"] == 1
