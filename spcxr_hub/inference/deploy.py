"""Fast inference without a GPU: a lean loader for SS-CXR classifiers and a bf16 path with fused oneDNN kernels.

Two independent pieces, both used by `spcxr predict`:

* **Lean loading** (`load_lean_classifier`, `LeanProcessor`): a fine-tuned SS-CXR classifier directory
  (`config.json`, `model.safetensors`, `preprocessor_config.json`) → the model family's own torch-only encoder
  (`models/spcxr/vit_encoder.py`: the parameter names, blocks and so the outputs of `SpcxrForImageClassification`)
  and its preprocessing function (`models/spcxr/preprocessing.py`, what `SpcxrImageProcessor` runs), without
  importing transformers. transformers' model and image-processor base classes import torch.distributed, dynamo,
  sympy and scipy (~3 s and ~250 MB on a 2-core machine) before the first image is read; `spcxr predict` starts in
  about half the time without them. Directories this loader does not cover (segmentation, other backbones, sharded
  weights) make it return None, and the caller loads through transformers.

* **The CPU deployment path** (`optimize_for_cpu`, `spcxr predict --fast`): a transformation of a loaded model, not
  other blocks: the model is cast to bfloat16 and each block's Linear layers are swapped for oneDNN ones with the
  weights prepacked once, fc1's bias and GELU fused into its matmul, the residual additions fused into proj's and
  fc2's matmuls (the block's `linear_plus` hands them to the layer), attention through PyTorch's fused SDPA kernel.
  On a CPU with AMX or AVX-512-BF16 (`torch.ops.mkldnn._is_mkldnn_bf16_supported()`) this runs ViT-S several times
  faster than fp32 (see benchmarks/); logits agree with fp32 to a cosine of ~0.9999. Where bf16 is not native
  (older CPUs), it falls back to dynamic int8 quantisation of the Linear layers
  (`torch.ao.quantization.quantize_dynamic`), which is the classic ~1.6× path. Works on the lean classifier and on
  every transformers SS-CXR model (backbone, classifier, segmenter: the decoder runs in bf16 too). On a CUDA device
  `optimize_for_cuda` casts to bf16 and keeps the SDPA attention. `choose_fast_path(device)` says which path runs
  and why, as data (`spcxr predict --fast` prints it, the benchmarks record it).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from ..models.spcxr.imaging import DEFAULT_MAX_PIXELS
from ..models.spcxr.preprocessing import preprocess_image
from ..models.spcxr.vit_encoder import SpcxrEncoder
from ..models.spcxr.vit_layers import ACTIVATIONS, SpcxrBlock

__all__ = [
    "LEAN_CONFIG_DEFAULTS",
    "FastPath",
    "LeanProcessor",
    "LeanSpcxrClassifier",
    "bf16_is_native",
    "choose_cpu_path",
    "choose_fast_path",
    "fused_blocks_available",
    "load_lean_classifier",
    "optimize",
    "optimize_for_cpu",
    "optimize_for_cuda",
]

# The SpcxrConfig fields the lean classifier reads, with SpcxrConfig's defaults (tests/test_deploy.py checks they
# agree), for config.json files that leave a field out.
LEAN_CONFIG_DEFAULTS = {
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "attention_probs_dropout_prob": 0.0,
    "drop_path_rate": 0.0,
    "layer_norm_eps": 1e-6,
    "image_size": 224,
    "patch_size": 16,
    "num_channels": 1,
    "qkv_bias": True,
    "classifier_pooling": "cls",
    "hidden_dropout_prob": 0.0,
}
LEAN_ARCHITECTURE = "SpcxrForImageClassification"


# ----------------------------------------------------------------------------------------------------------------------
# The lean classifier: SpcxrForImageClassification's module tree, built from the model family's torch-only modules


class LeanSpcxrClassifier(nn.Module):
    """`SpcxrForImageClassification` for inference only, without transformers: same parameter names (its
    `model.safetensors` loads with `strict=True`), same operations, `forward(pixel_values) → logits` (B, num_labels)
    in float32 whatever the model's dtype. `config` carries `id2label` (int keys), `problem_type` and the sizes."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.config = config
        self.spcxr = SpcxrEncoder(config)
        self.classifier = nn.Linear(config.hidden_size, len(config.id2label))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.spcxr.forward_head(self.spcxr(pixel_values))).float()
        if self.config.temperature is not None:  # as SpcxrForImageClassification.forward does outside training
            logits = logits / logits.new_tensor(self.config.temperature)
        return logits


def lean_config(fields: dict) -> SimpleNamespace | None:
    """config.json's fields → the lean classifier's config, or None where the lean classifier does not apply."""
    if fields.get("model_type") != "spcxr" or list(fields.get("architectures") or []) != [LEAN_ARCHITECTURE]:
        return None
    values = {key: fields.get(key, default) for key, default in LEAN_CONFIG_DEFAULTS.items()}
    if values["hidden_act"] not in ACTIVATIONS or not fields.get("id2label"):
        return None
    values["id2label"] = {int(k): v for k, v in fields["id2label"].items()}
    values["problem_type"] = fields.get("problem_type")
    # Calibration and decisions fitted after fine-tuning (spcxr_hub.evaluation): the lean path must honour them too.
    for key in ("temperature", "operating_points", "prediction_sets"):
        values[key] = fields.get(key)
    return SimpleNamespace(**values)


def load_lean_classifier(directory: str | Path, dtype: torch.dtype = torch.float32) -> LeanSpcxrClassifier | None:
    """An SS-CXR classifier directory → `LeanSpcxrClassifier` in eval mode, or None when the directory is not one the
    lean path covers (not a local folder, not an SS-CXR classifier, sharded or non-safetensors weights, an
    activation it does not know): load those with transformers' Auto classes."""
    directory = Path(directory)
    config_file, weights_file = directory / "config.json", directory / "model.safetensors"
    if not (config_file.is_file() and weights_file.is_file() and (directory / "preprocessor_config.json").is_file()):
        return None
    try:
        config = lean_config(json.loads(config_file.read_text()))
    except (ValueError, AttributeError, TypeError):
        return None
    if config is None:
        return None
    from safetensors.torch import load_file

    with torch.device("meta"):
        model = LeanSpcxrClassifier(config)
    try:
        model.load_state_dict(load_file(weights_file), strict=True, assign=True)
    except RuntimeError:  # names or shapes differ from SpcxrForImageClassification's: not ours to load
        return None
    return model.to(dtype).eval().requires_grad_(False)


class LeanProcessor:
    """`SpcxrImageProcessor`'s preprocessing (the same `preprocess_image`) from a `preprocessor_config.json`, without
    transformers: `processor(path_or_image)` → float32 (1, H, W)."""

    def __init__(self, size=None, resize_mode="pad", do_resize=True, do_normalize=True, image_mean=0.5, image_std=0.25,
                 max_pixels=DEFAULT_MAX_PIXELS):
        size = size or {"height": 224, "width": 224}
        self.size = (int(size["height"]), int(size["width"]))
        self.resize_mode, self.do_resize, self.do_normalize = resize_mode, do_resize, do_normalize
        self.image_mean, self.image_std = image_mean, image_std
        self.max_pixels = int(max_pixels)

    @classmethod
    def from_directory(cls, directory: str | Path) -> LeanProcessor | None:
        fields = json.loads((Path(directory) / "preprocessor_config.json").read_text())
        if fields.get("image_processor_type") != "SpcxrImageProcessor":
            return None
        known = ("size", "resize_mode", "do_resize", "do_normalize", "image_mean", "image_std", "max_pixels")
        return cls(**{key: fields[key] for key in known if key in fields})

    def __call__(self, image) -> np.ndarray:
        return preprocess_image(image, self.size, self.resize_mode, self.do_resize, self.do_normalize,
                                self.image_mean, self.image_std, self.max_pixels)


# ----------------------------------------------------------------------------------------------------------------------
# The CPU deployment path: bf16, prepacked weights, fused bias/GELU/residual (oneDNN), or int8 where bf16 is not native


def fused_blocks_available() -> bool:
    """True where PyTorch's oneDNN build has the fused linear kernels the fused blocks use (x86 builds do)."""
    try:
        torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._reorder_linear_weight  # private ops this path uses
        return bool(torch.backends.mkldnn.is_available())
    except (AttributeError, RuntimeError):
        return False


def bf16_is_native() -> bool:
    """True where oneDNN runs bf16 matmuls natively (AVX-512-BF16 or AMX), i.e. where `optimize_for_cpu` uses bf16."""
    try:
        return fused_blocks_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class FastPath:
    """Which deployment path `optimize` takes on a device, and why: `mode` is what `optimize_for_cpu` is given
    (`bf16`, `int8`), `runtime` (an exported graph: the model given, or the registered int8 export in `export`) or
    `cuda` / `mps`; `name` and `reason` are for people (`spcxr predict --fast` prints `line`, then each of `notes`:
    exports passed over, how to get a faster path; the benchmarks record them)."""

    mode: str
    name: str
    reason: str
    export: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        return f"fast path: {self.name} ({self.reason})"

    @property
    def lines(self) -> list[str]:
        return [self.line] + [f"note: {note}" for note in self.notes]


def _native_bf16_unit() -> str:
    """The CPU feature that makes bf16 native: AMX tiles or AVX-512-BF16 (torch.cpu's probes, private but stable)."""
    probes = (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))
    for name, probe in probes:
        try:
            if getattr(torch.cpu, probe)():
                return name
        except (AttributeError, RuntimeError):
            continue
    return "oneDNN bf16"


def choose_cpu_path() -> FastPath:
    """The CPU deployment path for this machine: bf16 with fused oneDNN blocks where oneDNN runs bf16 natively
    (`torch.ops.mkldnn._is_mkldnn_bf16_supported()`), else dynamic int8 Linear layers; the reason names the CPU's
    vector capability (`torch.backends.cpu.get_cpu_capability()`). Machines of one cloud instance type differ, so
    this is decided per run, never assumed."""
    capability = torch.backends.cpu.get_cpu_capability().lower()
    if not fused_blocks_available():
        return FastPath("int8", "dynamic int8 Linear", f"no oneDNN fused kernels in this PyTorch build: {capability}")
    if bf16_is_native():
        return FastPath("bf16", "bf16 + fused oneDNN", f"native bf16: {_native_bf16_unit()}")
    return FastPath("int8", "dynamic int8 Linear", f"no native bf16 on this CPU: {capability}")


def choose_fast_path(device: str | torch.device = "cpu", model: nn.Module | None = None,
                     source: str | Path | None = None) -> FastPath:
    """The path `optimize(model, device)` takes: an exported folder's own runtime (`inference/runtimes.py`: it is
    the deployment path already), else `choose_cpu_path()` on a CPU, bf16 on CUDA, fp32 on MPS. With `source` (the
    model directory `model` was loaded from), a registered int8 runtime export of the same weights
    (`export_registry.py`) is looked up; if there is one, whichever of it and the torch path measures faster on
    this machine runs (`path_timing.py`: timed once, cached; without `model` to time, the export where bf16 is not
    native, bf16 where it is). Without an export and native bf16, a note says how to export one."""
    if getattr(model, "manifest", None) is not None and hasattr(model, "path_name"):
        return FastPath("runtime", model.path_name, f"exported folder ({model.manifest['format']}, runs on the CPU)")
    device = torch.device(device)
    if device.type == "cuda":
        return FastPath("cuda", "bf16 on CUDA", f"{torch.cuda.get_device_name(device)}, SDPA attention")
    if device.type == "mps":
        return FastPath("mps", "fp32 on MPS", "the CPU rewrites do not apply to Apple GPUs")
    path = choose_cpu_path()
    if source is None or not _exportable(Path(source)):
        return path
    from .export_registry import find_int8_export, weights_digest

    digest = weights_digest(source)
    found = find_int8_export(digest)
    if found.folder is None:
        hint = (export_hint(source),) if path.mode == "int8" else ()
        return FastPath(path.mode, path.name, path.reason, notes=found.skipped + hint)
    if model is not None:
        return _faster_of(path, found, model, digest)
    if path.mode == "bf16":
        return FastPath(path.mode, path.name, path.reason, notes=found.skipped)
    return FastPath("runtime", found.manifest.get("path", "int8 runtime export"),
                    f"{path.reason}; the registered int8 export of these weights, {found.folder}",
                    export=str(found.folder), notes=found.skipped)


def _faster_of(torch_path: FastPath, found, model: nn.Module, digest: str) -> FastPath:
    """The torch path (bf16 or dynamic int8) or the registered int8 export, whichever `path_timing.measured`
    finds faster here. Neither wins everywhere: P4 measured OpenVINO int8 ahead of bf16 on an EPYC with AVX512_BF16,
    and behind OpenVINO fp32 with oneDNN capped at AVX2."""
    import copy
    from importlib.metadata import PackageNotFoundError, version

    from . import path_timing
    from .runtimes import load_runtime

    manifest, folder = found.manifest, found.folder
    package = {"onnx": "onnxruntime", "openvino": "openvino"}.get(manifest["format"], manifest["format"])
    try:
        runtime_version = version(package)
    except PackageNotFoundError:
        runtime_version = "unknown"
    export_name = manifest.get("path", "int8 runtime export")
    key = {"cpu": path_timing.cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(),
           "torch_path": torch_path.mode, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "runtime": f"{package} {runtime_version}", "weights": digest, "export": str(folder),
           "export_written": (folder / "export.json").stat().st_mtime_ns}
    config = model.config
    pixels = torch.randn(path_timing.BATCH, config.num_channels, config.image_size, config.image_size)

    def timed_torch():
        fast = optimize_for_cpu(copy.deepcopy(model), batch_size=path_timing.BATCH, mode=torch_path.mode)
        return lambda: fast(pixel_values=pixels)

    def timed_export():
        exported = load_runtime(folder, lean=True)[0]
        return lambda: exported(pixel_values=pixels)

    with torch.inference_mode():
        result = path_timing.measured(key, {"torch": timed_torch, "export": timed_export})
    rate = {name: result["batch"] / seconds for name, seconds in result["seconds_per_batch"].items()}
    how = f"{'cached in' if result['cached'] else 'measured now, cached in'} {path_timing.cache_path()}"
    figures = f"{export_name} {rate['export']:.1f} vs {torch_path.name} {rate['torch']:.1f} img/s here, {how}"
    if result["chosen"] == "export":
        return FastPath("runtime", export_name, f"{torch_path.reason}; the registered int8 export of these weights, "
                        f"{folder}, is faster: {figures}", export=str(folder), notes=found.skipped)
    return FastPath(torch_path.mode, torch_path.name, f"{torch_path.reason}; faster than the registered {figures}",
                    notes=found.skipped)


def _exportable(source: Path) -> bool:
    """A local SS-CXR classifier or segmenter directory: what `spcxr export --format` accepts."""
    try:
        fields = json.loads((source / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(fields, dict) or fields.get("model_type") != "spcxr":
        return False
    names = fields.get("architectures") or [""]
    return str(names[0]).endswith(("ForImageClassification", "ForSemanticSegmentation"))


def export_hint(source: str | Path) -> str:
    """The one command that makes `--fast` faster on this CPU (the fastest installed int8 runtime first)."""
    import importlib.util

    from .export_registry import PREFERENCE

    installed = {"onnx": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino", "nncf")}
    formats = [f for f, _ in PREFERENCE if all(importlib.util.find_spec(m) for m in installed[f])]
    format_ = formats[0] if formats else "onnx"
    install = "" if formats else "pip install 'spcxr-hub[runtimes]', then "
    source = str(source).rstrip("/")
    return (f"an int8 runtime export can run faster on this CPU (benchmarks P4): {install}spcxr export {source} --repo-dir "
            f"{source}-{format_}-int8 --format {format_} --int8 --calibration-data IMAGES (a folder of ~300 images "
            "like yours); --fast then uses it")


class _PackedLinear(nn.Module):
    """A Linear with its weight prepacked for oneDNN and its bias (and GELU, `activation="gelu"`) fused into the
    matmul; `plus` adds a residual in the matmul's epilogue, which `vit_layers.linear_plus` uses."""

    def __init__(self, linear: nn.Linear, rows_hint: int | None, dtype: torch.dtype, activation: str = "none"):
        super().__init__()
        weight = linear.weight.detach().to(dtype)
        hint = [rows_hint] if rows_hint else []
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, *hint)  # an attribute, not a parameter
        self.bias = None if linear.bias is None else linear.bias.detach().to(dtype)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        algorithm = "none" if self.activation == "gelu" else ""  # GELU's exact (erf) form
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.activation, [], algorithm)

    def plus(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual + linear(x), the addition done by the matmul's epilogue."""
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, self.bias, "add")


def fuse_block(block: SpcxrBlock, rows_hint: int | None, dtype: torch.dtype, fuse_gelu: bool) -> None:
    """Swaps a (cast) block's Linear layers for prepacked oneDNN ones, in place; with `fuse_gelu` (the config's
    `hidden_act` is exact GELU) the activation goes into fc1's matmul. The block keeps its forward: the same code
    runs, on fused kernels."""
    attention, mlp = block.attention, block.mlp
    attention.qkv = _PackedLinear(attention.qkv, rows_hint, dtype)
    attention.proj = _PackedLinear(attention.proj, rows_hint, dtype)
    mlp.fc1 = _PackedLinear(mlp.fc1, rows_hint, dtype, "gelu" if fuse_gelu else "none")
    mlp.fc2 = _PackedLinear(mlp.fc2, rows_hint, dtype)
    if fuse_gelu:
        mlp.act = nn.Identity()


def _backbone(model: nn.Module) -> nn.Module:
    return getattr(model, "spcxr", model)


def optimize_for_cpu(model: nn.Module, *, batch_size: int | None = None, mode: str = "auto") -> nn.Module:
    """Rewrites an SS-CXR model (lean classifier, SpcxrModel or any transformers SS-CXR head) in place for CPU
    inference and returns it. `mode`: `"bf16"` (fused oneDNN blocks in bf16, see the module docstring), `"fp32"`
    (the same fused blocks in fp32: outputs equal to the plain model's up to rounding, ~1.1× timm here), `"int8"`
    (dynamic int8 Linear layers) or `"auto"` (bf16 where native, else int8). `batch_size` is a packing hint only;
    any batch works. The model keeps its interface; transformers heads return bf16 logits in bf16 mode."""
    if mode == "auto":
        mode = choose_cpu_path().mode
    model.eval().requires_grad_(False)
    if mode == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
            return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    if mode not in ("bf16", "fp32"):
        raise ValueError(f"optimize_for_cpu: mode must be 'auto', 'bf16', 'fp32' or 'int8', got {mode!r}")
    if mode == "bf16" and not bf16_is_native():
        raise RuntimeError("optimize_for_cpu(mode='bf16') needs a CPU with native bf16 (AVX-512-BF16 or AMX) in oneDNN")
    if not fused_blocks_available():
        raise RuntimeError(f"optimize_for_cpu(mode={mode!r}) needs PyTorch's oneDNN fused linear kernels (x86 builds)")
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    backbone = _backbone(model)
    fuse_gelu = getattr(backbone.config, "hidden_act", "gelu") == "gelu"
    tokens = None
    if batch_size and hasattr(backbone, "embeddings"):
        tokens = batch_size * (1 + backbone.embeddings.grid_size**2)
    model.to(dtype)
    for block in backbone.layers:
        fuse_block(block, tokens, dtype, fuse_gelu)
    return model


def optimize_for_cuda(model: nn.Module, device: str | torch.device = "cuda") -> nn.Module:
    """bf16 weights on the GPU; attention stays on PyTorch's SDPA (flash / memory-efficient kernels)."""
    return model.eval().requires_grad_(False).to(device=device, dtype=torch.bfloat16)


def optimize(model: nn.Module, device: str | torch.device = "cpu", *, batch_size: int | None = None,
             path: FastPath | None = None) -> nn.Module:
    """The fast inference path for `device`, `path` (default `choose_fast_path(device)`): `optimize_for_cuda` on a
    GPU, the model as it is on MPS, `optimize_for_cpu` on a CPU."""
    path = path or choose_fast_path(device, model)
    if path.mode == "runtime":  # an exported graph (predict loads `path.export` itself) is deployed already
        return model
    if path.mode == "cuda":
        return optimize_for_cuda(model, device)
    if path.mode == "mps":
        return model.eval().requires_grad_(False).to(device)
    return optimize_for_cpu(model, batch_size=batch_size, mode=path.mode)
