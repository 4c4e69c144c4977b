"""Runtime exports (`export_runtime`, `spcxr export --format onnx|openvino [--int8 --calibration-data SRC]`): an
SS-CXR classifier or segmenter as an ONNX (onnxruntime) or OpenVINO graph with a dynamic batch size, for CPUs where
PyTorch's own fast path is slow (no native bf16: most hospital workstations).

The graph is the model's own forward (so temperature calibration in the forward is exported with it), traced by
`torch.onnx.export` (TorchScript tracing), with two outputs: `logits` and `features` (the backbone's pooled features, for
out-of-distribution scores). `--int8` is static post-training quantisation: weights and activations of the matmuls
and the patch convolution in int8, activation ranges calibrated on a few hundred images of SRC (onnxruntime: QDQ
`quantize_static`; OpenVINO: NNCF `quantize`). The folder keeps config.json, the processor and the card, plus
`export.json` (format, precision, the accuracy check); `spcxr predict --model FOLDER` runs it
(`inference/runtimes.py`). Every export ends with the accuracy check of `export_check.py`, written into the card;
a headline-metric drop above 0.5 points refuses the export unless `allow_drop`. Each export is registered under the
SHA-256 of the source's weights (`inference/export_registry.py`), so that `spcxr predict --fast --model MODEL_DIR`
on a CPU without native bf16 runs the int8 one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..inference.export_registry import register, weights_digest
from ..inference.ood import OOD_FILE
from ..inference.runtimes import EXPORT_FILE, FORMAT_VERSION, GRAPH_FILES, load_runtime, require_runtime
from .card_facts import describe_source, model_kind, read_json
from .export_check import MAX_METRIC_DROP, MIN_GATE_AGREEMENT, check_accuracy, task_of
from .publishing import LOG_FILES, PLOT_SUFFIX, PublishError, check_export_paths
from .saving import atomic_directory

MIN_CALIBRATION_IMAGES = 32  # fewer images give activation ranges that depend on which films happened to be there
MAX_CALIBRATION_IMAGES = 300  # "a few hundred": more changes the ranges little and costs minutes
CALIBRATION_BATCH = 16
OPSET = 17
KEPT_FILES = ("config.json", "preprocessor_config.json", OOD_FILE)  # OOD_FILE: the input gate's statistics
QUANTIZED_OPS = ["MatMul", "Gemm", "Conv"]  # the FLOPs; LayerNorm, softmax, GELU stay float (accuracy, no speed lost)


class RuntimeExportError(PublishError):
    """A model, option or calibration source a runtime export cannot use."""


class ExportGraph(nn.Module):
    """The model's forward as a graph with outputs (logits, features): features are the backbone's pooled output,
    taken by a forward hook so the logits stay exactly what the model's own forward computes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self._features, self._normed = model, None, None
        model.spcxr.register_forward_hook(self._keep)
        # The segmenter calls the encoder's `encode`, not its forward: its features are the final norm's CLS token.
        model.spcxr.layernorm.register_forward_hook(lambda module, args, output: setattr(self, "_normed", output))

    def _keep(self, module, args, output):
        self._features = output.pooler_output if hasattr(output, "pooler_output") else output[1]

    def forward(self, pixel_values: torch.Tensor):
        self._features = None
        logits = self.model(pixel_values=pixel_values, return_dict=True).logits
        return logits, self._features if self._features is not None else self._normed[:, 0]


def require_exporter(format_: str, int8: bool) -> None:
    """torch.onnx's exporter needs onnx; OpenVINO's int8 needs nncf. One line naming what is missing."""
    import importlib.util

    needed = ["onnx", "onnxruntime"] + (["nncf"] if format_ == "openvino" and int8 else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeExportError(f"--format {format_}: {', '.join(missing)} not installed "
                                 "(pip install 'spcxr-hub[runtimes]')")


def load_source(model_dir: Path):
    """(model in fp32 eval mode, SpcxrImageProcessor, kind) of a classifier or segmenter directory."""
    import spcxr_hub  # noqa: F401  (registers the SS-CXR Auto classes)
    from transformers import AutoImageProcessor, AutoModelForImageClassification, AutoModelForSemanticSegmentation

    config = read_json(model_dir / "config.json", "config.json")
    kind = model_kind(config, model_dir)
    if config.get("model_type") != "spcxr" or kind not in ("classification", "segmentation"):
        name = (config.get("architectures") or ["?"])[0]
        raise RuntimeExportError(f"{model_dir / 'config.json'}: {name} ({config.get('model_type')!r}) cannot be "
                                 "exported to a runtime: expected an SS-CXR classifier or segmenter")
    auto = AutoModelForImageClassification if kind == "classification" else AutoModelForSemanticSegmentation
    model = auto.from_pretrained(model_dir).eval().float().requires_grad_(False)
    return model, AutoImageProcessor.from_pretrained(model_dir), kind


def export_onnx(model: nn.Module, path: Path, image_size: int, channels: int) -> None:
    """fp32 ONNX with a dynamic batch dimension (height and width are the model's size, as the processor gives).
    TorchScript tracing rather than dynamo: its graph (MatMul + Add per Linear) quantises into fused int8 kernels
    in onnxruntime, measured 2.9x torch fp32 for ViT-S int8 here vs 1.3x for the dynamo graph (Gemm, non-constant
    bias)."""
    example = torch.zeros(2, channels, image_size, image_size)
    axes = {name: {0: "batch"} for name in ("pixel_values", "logits", "features")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportGraph(model), (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["pixel_values"], output_names=["logits", "features"], dynamic_axes=axes)


def calibration_arrays(source, processor, model_dir: Path) -> tuple[list[np.ndarray], str]:
    """Up to MAX_CALIBRATION_IMAGES preprocessed images (batches of CALIBRATION_BATCH) of a folder, searched
    recursively (a task's native layout works), and how the card names them."""
    from ..models.spcxr.imaging import ImageDecodeError, list_images

    if source is None:
        raise RuntimeExportError("--int8 needs --calibration-data: a folder of a few hundred images like the ones "
                                 "the model will see")
    folder = Path(source)
    if not folder.is_dir():
        raise RuntimeExportError(f"--calibration-data {folder}: not a folder of images")
    paths = list_images(folder)
    if len(paths) < MIN_CALIBRATION_IMAGES:
        raise RuntimeExportError(f"--calibration-data {folder}: {len(paths)} images, expected at least "
                                 f"{MIN_CALIBRATION_IMAGES} (a few hundred is best)")
    step = max(1, len(paths) // MAX_CALIBRATION_IMAGES)  # spread over the folder: classes are often in subfolders
    pixels = []
    for path in paths[::step][:MAX_CALIBRATION_IMAGES]:
        try:
            pixels.append(processor(str(path), return_tensors="np")["pixel_values"][0])
        except ImageDecodeError:
            continue
    if len(pixels) < MIN_CALIBRATION_IMAGES:
        raise RuntimeExportError(f"--calibration-data {folder}: only {len(pixels)} images decode, expected at "
                                 f"least {MIN_CALIBRATION_IMAGES}")
    batches = [np.stack(pixels[i : i + CALIBRATION_BATCH]).astype(np.float32)
               for i in range(0, len(pixels), CALIBRATION_BATCH)]
    return batches, f"{len(pixels)} images of {describe_source(str(folder))}"


def quantize_onnx(fp32: Path, output: Path, batches: list[np.ndarray]) -> None:
    """Static int8 QDQ: per-channel symmetric int8 weights, uint8 activations with MinMax-calibrated ranges (the
    u8s8 pair onnxruntime's x86 kernels run fastest, with VNNI where the CPU has it)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(batches)

        def get_next(self):
            batch = next(self.remaining, None)
            return None if batch is None else {"pixel_values": batch}

    import logging

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # the quantizer warns per node on root
    prepared = output.with_name("prepared.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(output), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=QUANTIZED_OPS,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    prepared.unlink()


def to_openvino(fp32: Path, output: Path, batches: list[np.ndarray] | None) -> None:
    """OpenVINO IR from the ONNX graph; with `batches`, NNCF's static int8 quantisation (transformer preset: the
    softmax and LayerNorm stay float)."""
    import openvino as ov

    model = ov.convert_model(str(fp32))
    if batches is not None:
        import nncf

        model = nncf.quantize(model, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=sum(len(b) for b in batches))
    ov.save_model(model, str(output), compress_to_fp16=False)


def runtime_version(format_: str) -> str:
    import importlib.metadata

    return importlib.metadata.version("onnxruntime" if format_ == "onnx" else "openvino")


def path_name(format_: str, int8: bool) -> str:
    runtime = "onnxruntime" if format_ == "onnx" else "OpenVINO"
    return f"{runtime} int8 (static, calibrated)" if int8 else f"{runtime} fp32"


def card_section(manifest: dict) -> str:
    check = manifest["accuracy_check"]
    drop = check["drop_points"]
    rows = "\n".join(f"| {name} | {check['reference'][name]:.4f} | {check['exported'][name]:.4f} |"
                     for name in check["reference"] if name in check["exported"])
    calibration = f", calibrated on {manifest['calibration']}" if manifest.get("calibration") else ""
    gate = ("" if check.get("gate_agreement") is None else
            f" Input gate: the OOD flag agrees with the fp32 model's on **{100 * check['gate_agreement']:.1f}%** of "
            f"these images (max |OOD score difference| {check['max_ood_difference']:.2f}).")
    return (f"\n## Runtime export: {manifest['path']}\n\n"
            f"This folder holds `{GRAPH_FILES[manifest['format']]}`: format **{manifest['format']}**, precision "
            f"**{manifest['precision']}**{calibration} ({manifest['runtime']} {manifest['runtime_version']}). "
            f"Run it with `spcxr predict FILES --model <this folder>`.\n\n"
            f"Accuracy check against the fp32 PyTorch model on {check['images']} {check['source']}: top-1 agreement "
            f"**{100 * check['agreement']:.1f}%**, max |logit difference| **{check['max_logit_difference']:.2e}**, "
            f"{check['metric']} change **{-drop:+.2f} points** (exports refuse a drop above {MAX_METRIC_DROP} "
            f"points unless told otherwise).{gate}\n\n| metric | fp32 PyTorch | this export |\n|---|---|---|\n"
            f"{rows}\n")


def write_card(model_dir: Path, staging: Path, manifest: dict, repo_id, example_images, synthetic) -> None:
    """The source model's card (rendered from its metrics and log) with the export's section after the title."""
    from .cards import build_card, write_bundle

    bundle = build_card(model_dir, repo_id=repo_id, example_images=example_images, synthetic=synthetic)
    readme = write_bundle(bundle, staging)
    lines = readme.read_text(encoding="utf-8").split("\n")
    title = next((i for i, line in enumerate(lines) if line.startswith("# ")), len(lines) - 1)
    lines.insert(title + 1, card_section(manifest))
    readme.write_text("\n".join(lines), encoding="utf-8")


def refit_ood_statistics(model_dir: Path, exported, processor, staging: Path) -> str | None:
    """The input gate's OOD statistics for the exported graph: refitted on its own pooled features of the images
    `spcxr finetune` fitted the model's on (its training split, the same shots), where that folder is still here, so
    that quantisation noise in the features does not move every distance past a threshold set in fp32. Otherwise the
    model's statistics stay as copied. Returns how the folder's statistics were made (the manifest records it)."""
    from ..inference import ood
    from ..inference.features import records_features

    if not (model_dir / OOD_FILE).is_file():
        return None
    original = ood.load(model_dir)
    records = training_records(model_dir)
    if records:
        from ..plugins.registry import get_task

        features = records_features(exported, processor, get_task(task_of(model_dir)), records, progress=False)
        if len(features) >= 2 * ood.FOLDS:
            ood.fit(features, original.percentile).save(staging)
            return f"refitted on this graph's features of the {len(features)} training images"
    return "copied from the model (fitted on fp32 features; its training images are not on this machine)"


def training_records(model_dir: Path):
    """The records `spcxr finetune` trained `model_dir` on (its training log's `data`, split `train`, `--shots`),
    or None where the log, the task or the folder is missing."""
    from ..data.records import load_records
    from ..errors import SpcxrError
    from ..plugins.registry import get_task

    log = model_dir / "training_log.json"
    options = (read_json(log, "the training log").get("options") or {}) if log.is_file() else {}
    data, name = options.get("data"), options.get("task")
    if not data or not name or not Path(data).is_dir():
        return None
    try:
        task = get_task(name)
        records = load_records(task, data, "train")
    except SpcxrError:
        return None
    if options.get("shots"):
        from ..training.finetuning import sample_shots

        records = sample_shots(task, records, options["shots"], options.get("seed", 0))
    return records


def export_runtime(model_dir, repo_dir, *, format: str = "onnx", int8: bool = False, calibration_data=None,
                   check_data: str | None = None, check_split: str = "test", allow_drop: bool = False,
                   overwrite: bool = False, repo_id: str | None = None, example_images=None,
                   synthetic: bool | None = None, warn=None):
    """Writes the runtime export of `model_dir` to `repo_dir` (all or nothing) and returns (repo_dir, check)."""
    require_runtime(format)
    require_exporter(format, int8)
    model_dir, repo_dir = check_export_paths(model_dir, repo_dir, repo_id)
    if not int8 and calibration_data is not None:
        raise RuntimeExportError("--calibration-data is for --int8 exports (fp32 needs no calibration)")
    model, processor, kind = load_source(model_dir)
    digest = weights_digest(model_dir)
    batches, calibration = calibration_arrays(calibration_data, processor, model_dir) if int8 else (None, None)
    with atomic_directory(repo_dir, overwrite=overwrite) as staging, tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        export_onnx(model, fp32, model.config.image_size, model.config.num_channels)
        graph = staging / GRAPH_FILES[format]
        if format == "onnx" and int8:
            quantize_onnx(fp32, graph, batches)
        elif format == "onnx":
            shutil.copyfile(fp32, graph)
        else:
            to_openvino(fp32, graph, batches)
        for path in sorted(model_dir.iterdir()):
            if path.is_file() and (path.name in KEPT_FILES or path.name in LOG_FILES or path.suffix == PLOT_SUFFIX):
                shutil.copyfile(path, staging / path.name)
        manifest = {"format_version": FORMAT_VERSION, "format": format, "precision": "int8" if int8 else "fp32",
                    "kind": kind, "path": path_name(format, int8), "opset": OPSET,
                    "runtime": "onnxruntime" if format == "onnx" else "openvino",
                    "runtime_version": runtime_version(format), "inputs": ["pixel_values"],
                    "outputs": ["logits", "features"], "calibration": calibration, "source_sha256": digest}
        (staging / EXPORT_FILE).write_text(json.dumps(manifest, indent=2))
        exported, _, _ = load_runtime(staging)
        manifest["ood_statistics"] = refit_ood_statistics(model_dir, exported, processor, staging)
        (staging / EXPORT_FILE).write_text(json.dumps(manifest, indent=2))
        check = check_accuracy(model, exported, processor, model_dir, check_data=check_data, split=check_split)
        manifest["accuracy_check"] = check.as_dict()
        (staging / EXPORT_FILE).write_text(json.dumps(manifest, indent=2))
        if check.drop_points > MAX_METRIC_DROP:
            message = (f"{model_dir}: the {manifest['path']} export loses {check.drop_points:.2f} points of "
                       f"{check.metric} (more than {MAX_METRIC_DROP}; {check.line()})")
            if not allow_drop:
                raise RuntimeExportError(message + "; --allow-drop writes it anyway")
            if warn is not None:
                warn("warning: " + message)
        if warn is not None and check.gate_agreement is not None and check.gate_agreement < MIN_GATE_AGREEMENT:
            warn(f"warning: {model_dir}: the {manifest['path']} export's input gate flags differently from the fp32 "
                 f"model's on {100 * (1 - check.gate_agreement):.1f}% of the held-out images (OOD score moves by up "
                 f"to {check.max_ood_difference:.2f}); its OOD findings are less reliable than the model's")
        write_card(model_dir, staging, manifest, repo_id, example_images, synthetic)
    if digest is not None:  # so that `spcxr predict --fast --model MODEL_DIR` finds it (inference/export_registry.py)
        try:
            register(digest, repo_dir, manifest)
        except OSError as error:
            if warn is not None:
                warn(f"warning: {repo_dir} written, but not registered for predict --fast ({error})")
    return repo_dir, check
