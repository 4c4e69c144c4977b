import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import fresh_python, phantom_ids, phantoms, tiny_config_kwargs
from typer.testing import CliRunner

from spcxr_hub import (SpcxrConfig, SpcxrForImageClassification, SpcxrForSemanticSegmentation, SpcxrImageProcessor,
                       SpcxrModel, synthetic)
from spcxr_hub.inference import deploy
from spcxr_hub.cli import app
from spcxr_hub.inference.predictions import decoded_batches
from spcxr_hub.inference.deploy import (LEAN_CONFIG_DEFAULTS, LeanProcessor, bf16_is_native, fused_blocks_available,
                              load_lean_classifier, optimize_for_cpu)
from spcxr_hub.hub.saving import save_model_directory
from spcxr_hub.models.spcxr.modeling_spcxr import SpcxrLayer
from spcxr_hub.models.spcxr.vit_layers import SpcxrBlock

MODES = ["int8", pytest.param("bf16", marks=pytest.mark.skipif(not bf16_is_native(), reason="no native bf16 here")),
         pytest.param("fp32", marks=pytest.mark.skipif(not fused_blocks_available(), reason="no oneDNN fused linear"))]


@pytest.fixture(scope="module")
def trained(pneumonia_classifier, tmp_path_factory):
    """The shared tiny pneumonia-vs-normal classifier, saved as `spcxr finetune` saves one."""
    directory = tmp_path_factory.mktemp("deploy") / "classifier"
    return save_model_directory(directory, pneumonia_classifier, SpcxrImageProcessor(size={"height": 64, "width": 64}))


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    root = tmp_path_factory.mktemp("films")
    paths = []
    for seed in range(6):
        image = synthetic.generate(seed, (150, 120), ("pneumonia",) if seed % 2 else ()).image
        paths.append(synthetic.write_png8(root / f"{seed}-8bit.png", image))
        paths.append(synthetic.write_png16(root / f"{seed}-16bit.png", image))
        paths.append(synthetic.write_dicom(root / f"{seed}.dcm", image, photometric="MONOCHROME1"))
    return paths


def test_lean_defaults_are_spcxr_configs_defaults():
    defaults = {f.name: f.default for f in dataclasses.fields(SpcxrConfig) if f.name in LEAN_CONFIG_DEFAULTS}
    assert defaults == LEAN_CONFIG_DEFAULTS


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_lean_classifier_gives_the_transformers_classifiers_logits(tmp_path, pooling):
    torch.manual_seed(0)
    config = SpcxrConfig(**tiny_config_kwargs(id2label={0: "a", 1: "b", 2: "c"}, classifier_pooling=pooling))
    model = SpcxrForImageClassification(config).eval()
    save_model_directory(tmp_path / "m", model, SpcxrImageProcessor(size={"height": 64, "width": 64}))
    lean = load_lean_classifier(tmp_path / "m")
    assert lean.config.id2label == {0: "a", 1: "b", 2: "c"}
    with torch.no_grad():
        for size in (64, 96):  # 96: position embeddings interpolated
            x = torch.randn(3, 1, size, size)
            torch.testing.assert_close(lean(pixel_values=x), model(pixel_values=x).logits, rtol=0, atol=1e-6)


def test_lean_processor_matches_the_image_processor(films):
    for mode in ("pad", "stretch"):
        reference = SpcxrImageProcessor(size={"height": 64, "width": 48}, resize_mode=mode)
        lean = LeanProcessor(size={"height": 64, "width": 48}, resize_mode=mode)
        for path in films:
            expected = reference(str(path), return_tensors="np")["pixel_values"][0]
            np.testing.assert_array_equal(lean(str(path)), expected)


def test_lean_processor_reads_the_saved_preprocessor_config(trained):
    processor = LeanProcessor.from_directory(trained)
    assert processor.size == (64, 64) and processor.resize_mode == "pad"


def test_lean_loader_declines_what_it_does_not_cover(tmp_path):
    kwargs = tiny_config_kwargs(id2label={0: "background", 1: "lung"})
    processor = SpcxrImageProcessor(size={"height": 64, "width": 64})
    save_model_directory(tmp_path / "seg", SpcxrForSemanticSegmentation(SpcxrConfig(**kwargs)), processor)
    save_model_directory(tmp_path / "backbone", SpcxrModel(SpcxrConfig(**tiny_config_kwargs())), processor)
    assert load_lean_classifier(tmp_path / "seg") is None
    assert load_lean_classifier(tmp_path / "backbone") is None
    assert load_lean_classifier(tmp_path / "missing") is None


@pytest.mark.training
@pytest.mark.parametrize("mode", MODES)
def test_deployment_path_agrees_with_fp32_on_phantoms(trained, mode, seed, record_property):
    x, y = phantoms(phantom_ids(seed, 5000, 64))
    reference = load_lean_classifier(trained)
    fast = optimize_for_cpu(load_lean_classifier(trained), mode=mode)
    with torch.inference_mode():
        expected, got = reference(pixel_values=x), fast(pixel_values=x)
    agreement = (got.argmax(-1) == expected.argmax(-1)).float().mean().item()
    # Over the whole batch: one image's two logits near zero make its own cosine meaningless (0.65 seen for int8).
    cosine = torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0).item()
    probability_error = (got.softmax(-1) - expected.softmax(-1)).abs().max().item()
    accuracy = (expected.argmax(-1) == y).float().mean().item()
    record_property("top1_agreement", agreement)
    record_property("logit_cosine", cosine)
    record_property("max_probability_difference", probability_error)
    record_property("fp32_accuracy", accuracy)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert agreement >= 0.95
    assert cosine >= 0.99
    assert probability_error <= 0.1
    assert accuracy >= 0.7  # the model did learn something to agree about


@pytest.mark.parametrize("mode", MODES)
def test_deployment_path_rewrites_transformers_models_too(mode):
    torch.manual_seed(0)
    config = SpcxrConfig(**tiny_config_kwargs(id2label={0: "background", 1: "lung"}))
    segmenter = SpcxrForSemanticSegmentation(config).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.inference_mode():
        expected = segmenter(pixel_values=x)
        got = optimize_for_cpu(segmenter, mode=mode)(pixel_values=x, output_hidden_states=True)
    assert got.logits.shape == expected.logits.shape and len(got.hidden_states) == config.num_hidden_layers + 1
    cosine = torch.nn.functional.cosine_similarity(got.logits.float().flatten(1), expected.logits.flatten(1))
    assert cosine.min() >= 0.99


@pytest.mark.skipif(not fused_blocks_available(), reason="no oneDNN fused linear")
def test_lean_and_fused_paths_run_the_model_familys_block(trained):
    lean = load_lean_classifier(trained)
    assert type(lean.spcxr.layers[0]) is SpcxrBlock and issubclass(SpcxrLayer, SpcxrBlock)
    fused = optimize_for_cpu(load_lean_classifier(trained), mode="fp32")
    block = fused.spcxr.layers[0]
    assert type(block) is SpcxrBlock  # fusion swaps the block's Linear layers, not the block
    assert not isinstance(block.attention.qkv, torch.nn.Linear) and isinstance(block.mlp.act, torch.nn.Identity)


def test_bf16_mode_refuses_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(deploy, "bf16_is_native", lambda: False)
    with pytest.raises(RuntimeError, match="bf16"):
        optimize_for_cpu(SpcxrModel(SpcxrConfig(**tiny_config_kwargs())), mode="bf16")
    assert isinstance(optimize_for_cpu(SpcxrModel(SpcxrConfig(**tiny_config_kwargs())), mode="auto").layers[0].attention.qkv,
                      torch.ao.nn.quantized.dynamic.Linear)


def cpu_probes(monkeypatch, *, bf16: bool, capability: str, amx: bool = False):
    """This CPU's capability probes replaced, so both branches of the decision are tested on any machine."""
    monkeypatch.setattr(deploy, "fused_blocks_available", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)


def test_cpu_path_is_bf16_with_fused_onednn_where_bf16_is_native(monkeypatch):
    cpu_probes(monkeypatch, bf16=True, capability="AVX512", amx=True)
    chosen = deploy.choose_cpu_path()
    assert chosen.mode == "bf16"
    assert chosen.line == "fast path: bf16 + fused oneDNN (native bf16: AMX)"
    cpu_probes(monkeypatch, bf16=True, capability="AVX512", amx=False)
    assert deploy.choose_cpu_path().reason == "native bf16: AVX512-BF16"


def test_cpu_path_is_dynamic_int8_without_native_bf16(monkeypatch):
    cpu_probes(monkeypatch, bf16=False, capability="AVX2")
    chosen = deploy.choose_cpu_path()
    assert chosen.mode == "int8"
    assert chosen.line == "fast path: dynamic int8 Linear (no native bf16 on this CPU: avx2)"


def test_optimize_takes_the_chosen_cpu_path(monkeypatch):
    cpu_probes(monkeypatch, bf16=False, capability="AVX2")
    model = deploy.optimize(SpcxrModel(SpcxrConfig(**tiny_config_kwargs())), "cpu")
    assert isinstance(model.layers[0].attention.qkv, torch.ao.nn.quantized.dynamic.Linear)


def test_predict_fast_says_on_stderr_which_path_ran_and_records_it_in_json(trained, films):
    result = CliRunner().invoke(app, ["predict", "--model", str(trained), "--fast", "--json", str(films[0])])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    chosen = deploy.choose_cpu_path()
    assert result.stderr.splitlines() == [chosen.line]
    assert json.loads(result.stdout)[0]["fast_path"] == json.loads(json.dumps(dataclasses.asdict(chosen)))  # notes: a list in JSON


def test_predict_without_fast_prints_no_path_line(trained, films):
    result = CliRunner().invoke(app, ["predict", "--model", str(trained), "--json", str(films[0])])
    assert result.exit_code == 0 and "fast path" not in result.stderr
    assert "fast_path" not in json.loads(result.stdout)[0]


def predictions(*args):
    result = CliRunner().invoke(app, ["predict", *map(str, args), "--json"])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return json.loads(result.stdout)


def test_predict_fast_gives_the_same_labels_as_fp32(trained, films):
    plain = predictions("--model", trained, *films)
    fast = predictions("--model", trained, "--fast", *films)
    assert [r["file"] for r in fast] == [r["file"] for r in plain] == [str(p) for p in films]
    agree = [a["predictions"][0]["label"] == b["predictions"][0]["label"] for a, b in zip(plain, fast)]
    assert np.mean(agree) >= 0.95
    for a, b in zip(plain, fast):
        assert abs(a["predictions"][0]["score"] - b["predictions"][0]["score"]) < 0.02


def test_predict_gives_the_transformers_pipelines_scores(trained, films):
    from transformers import pipeline

    from spcxr_hub.models.spcxr.imaging import load_image

    classify = pipeline("image-classification", model=str(trained))
    for result in predictions("--model", trained, *films[:3]):
        expected = {p["label"]: p["score"] for p in classify(load_image(result["file"]))}
        for p in result["predictions"]:
            assert p["score"] == pytest.approx(expected[p["label"]], abs=1e-5)


def test_predict_fast_works_on_a_segmentation_model(tmp_path, films):
    config = SpcxrConfig(**tiny_config_kwargs(id2label={0: "background", 1: "lung"}))
    directory = save_model_directory(tmp_path / "seg", SpcxrForSemanticSegmentation(config).eval(),
                                     SpcxrImageProcessor(size={"height": 64, "width": 64}))
    results = predictions("--model", directory, "--fast", "--output-dir", tmp_path / "masks", films[0])
    assert (tmp_path / "masks" / f"{films[0].stem}_mask.png").is_file() and set(results[0]["fractions"]) == {"background", "lung"}


def test_decoded_batches_keep_the_order_and_skip_unreadable_files(films, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths = [films[0], broken, *films[1:7]]
    skipped = []
    batches = list(decoded_batches(paths, LeanProcessor(size={"height": 32, "width": 32}), 3, False, skipped, workers=2))
    assert [path for batch in batches for path, _ in batch] == [films[0], *films[1:7]]
    assert [len(batch) for batch in batches] == [3, 3, 1] and batches[0][0][1].shape == (1, 1, 32, 32)
    assert len(skipped) == 1 and "broken.png" in skipped[0]
    with pytest.raises(ValueError, match="broken.png"):
        list(decoded_batches(paths, LeanProcessor(size={"height": 32, "width": 32}), 3, True, [], workers=2))


HEAVY = ("transformers.modeling_utils", "transformers.image_processing_utils", "timm", "torchvision", "datasets",
         "accelerate", "matplotlib", "evaluate")




def test_importing_the_package_imports_neither_torch_nor_transformers():
    out = fresh_python("import sys, spcxr_hub\nprint(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    assert out.strip() == "[]"


def test_predict_on_a_classifier_keeps_heavy_imports_out(trained, films):
    out = fresh_python(
        "import atexit, runpy, sys\n"
        f"atexit.register(lambda: print(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
        f"sys.argv = ['spcxr', 'predict', '--model', {str(trained)!r}, {str(films[0])!r}]\n"
        "runpy.run_module('spcxr_hub.cli', run_name='__main__')\n"
    )
    assert out.strip().splitlines()[-1] == "[]"


def test_inference_path_of_the_blocks_equals_the_training_path_without_dropout():
    torch.manual_seed(0)
    model = SpcxrModel(SpcxrConfig(**tiny_config_kwargs()))
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        training_path = model.train()(pixel_values=x, output_hidden_states=True)
        inference_path = model.eval()(pixel_values=x, output_hidden_states=True)
    for a, b in zip(training_path.hidden_states, inference_path.hidden_states):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not fused_blocks_available(), reason="no oneDNN fused linear")
def test_fp32_fused_blocks_give_the_plain_models_outputs(trained):
    x, _ = phantoms(range(7000, 7016))
    with torch.inference_mode():
        expected = load_lean_classifier(trained)(pixel_values=x)
        got = optimize_for_cpu(load_lean_classifier(trained), mode="fp32")(pixel_values=x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
