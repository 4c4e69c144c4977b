"""Exported folders (`spcxr export --format onnx|openvino`, `hub/runtime_export.py`) run on their runtime.

`load_runtime(folder)` gives an object that `spcxr predict`, `spcxr evaluate` and the Python API call exactly like the
PyTorch model: `model(pixel_values=…)` → an output with `.logits` (and `.features`, the pooled backbone features),
`.config` with `id2label` (int keys) and `problem_type`, `.eval()` / `.to()`. So predict's post-processing (scores,
masks, and whatever is added there) applies unchanged; temperature calibration lives in the model's forward and so
inside the exported graph.

The runtime (onnxruntime, openvino) is imported only here and only when such a folder is loaded: the PyTorch cold
path of `spcxr predict` never imports it.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from ..errors import UsageError

EXPORT_FILE = "export.json"  # the manifest that marks a folder as a runtime export
FORMAT_VERSION = 1  # of export.json and the folder's layout; a newer one is refused in one line
GRAPH_FILES = {"onnx": "model.onnx", "openvino": "openvino_model.xml"}
RUNTIME_PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino"}
INSTALL_HINT = "pip install 'spcxr-hub[runtimes]'"


class ExportedFolderError(UsageError):
    """An exported folder this installation cannot run: runtime missing, newer format, damaged manifest."""


def is_runtime_export(folder: str | Path) -> bool:
    return Path(folder).is_dir() and (Path(folder) / EXPORT_FILE).is_file()


def require_runtime(format_: str) -> None:
    """One line naming the missing package, before anything is loaded."""
    package = RUNTIME_PACKAGES.get(format_)
    if package is None:
        raise ExportedFolderError(f"format {format_!r}: expected one of {', '.join(sorted(RUNTIME_PACKAGES))}")
    if importlib.util.find_spec(package) is None:
        raise ExportedFolderError(f"format {format_!r} needs {package}, which is not installed ({INSTALL_HINT})")


def read_manifest(folder: Path) -> dict:
    path = folder / EXPORT_FILE
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ExportedFolderError(f"{path}: not a readable export manifest ({error})") from None
    if not isinstance(manifest, dict):
        raise ExportedFolderError(f"{path}: expected a JSON object")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise ExportedFolderError(f"{path}: field 'format_version' missing or not an integer")
    if version > FORMAT_VERSION:
        raise ExportedFolderError(f"{path}: exported with a newer format (version {version}; this spcxr-hub reads up to "
                            f"{FORMAT_VERSION}): upgrade spcxr-hub")
    if manifest.get("format") not in GRAPH_FILES:
        raise ExportedFolderError(f"{path}: field 'format' is {manifest.get('format')!r}, expected one of "
                            f"{', '.join(sorted(GRAPH_FILES))}")
    if not (folder / GRAPH_FILES[manifest["format"]]).is_file():
        raise ExportedFolderError(f"{folder}: {GRAPH_FILES[manifest['format']]} is missing")
    return manifest


@dataclass
class RuntimeOutput:
    """What the exported graph returns, as torch tensors: `logits` (B, K) or (B, K, H, W); `features` (B, hidden)."""

    logits: torch.Tensor
    features: torch.Tensor | None = None


def model_config(folder: Path) -> SimpleNamespace:
    """config.json as attributes, `id2label` with int keys (what predict's post-processing reads)."""
    fields = json.loads((folder / "config.json").read_text())
    fields["id2label"] = {int(k): v for k, v in (fields.get("id2label") or {}).items()}
    fields.setdefault("problem_type", None)
    return SimpleNamespace(**fields)


def onnx_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Same thread count as torch (the user's OMP_NUM_THREADS / torch.set_num_threads), not ORT's own default.
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = [output.name for output in session.get_outputs()]

    def run(pixels: np.ndarray) -> dict:
        return dict(zip(outputs, session.run(None, {"pixel_values": pixels})))

    return run


def openvino_session(path: Path, threads: int | None = None, precision: str = "fp32"):
    import openvino as ov

    core = ov.Core()
    settings = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
    if precision == "fp32":  # OpenVINO would run float ops in bf16 on CPUs with native bf16: not what "fp32" says
        settings["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = core.compile_model(str(path), "CPU", settings)
    names = [output.get_any_name() for output in compiled.outputs]

    def run(pixels: np.ndarray) -> dict:
        result = compiled(pixels)
        return {name: result[output] for name, output in zip(names, compiled.outputs)}

    return run


class RuntimeModel(nn.Module):
    """An exported graph behind the PyTorch model's call: `model(pixel_values=x)` → `RuntimeOutput` (float32 CPU
    tensors whatever device `x` is on). It holds no parameters, so the callers' `model_device` puts inputs on the
    CPU, where the runtime reads them."""

    def __init__(self, run, config: SimpleNamespace, manifest: dict, folder: Path):
        super().__init__()
        self._run, self.config, self.manifest, self.folder = run, config, manifest, folder

    @property
    def path_name(self) -> str:
        """E.g. `onnxruntime int8 (static QDQ)`: what `spcxr predict` says ran."""
        return self.manifest.get("path", f"{self.manifest['format']} {self.manifest.get('precision', 'fp32')}")

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> RuntimeOutput:
        pixels = pixel_values.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = self._run(pixels)
        features = outputs.get("features")
        return RuntimeOutput(logits=torch.from_numpy(np.asarray(outputs["logits"], dtype=np.float32)),
                             features=None if features is None else torch.from_numpy(np.asarray(features)))


def is_exported(model) -> bool:
    """Whether a loaded model is an exported graph (no parameters, no gradients)."""
    return isinstance(model, RuntimeModel)


def load_runtime(folder: str | Path, *, lean: bool = False, threads: int | None = None):
    """(RuntimeModel, processor, segmentation) for an exported folder. `lean`: the torch-only `LeanProcessor`
    (what `spcxr predict` uses), else transformers' `SpcxrImageProcessor` (what evaluation's datasets need)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    require_runtime(manifest["format"])
    graph = folder / GRAPH_FILES[manifest["format"]]
    if manifest["format"] == "onnx":
        run = onnx_session(graph, threads)
    else:
        run = openvino_session(graph, threads, manifest.get("precision", "fp32"))
    model = RuntimeModel(run, model_config(folder), manifest, folder)
    if lean:
        from .deploy import LeanProcessor

        processor = LeanProcessor.from_directory(folder)
    else:
        from ..models.spcxr.image_processing_spcxr import SpcxrImageProcessor

        processor = SpcxrImageProcessor.from_pretrained(folder)
    segmentation = manifest.get("kind") == "segmentation"
    return model, processor, segmentation
