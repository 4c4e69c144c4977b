"""Fast inference without a GPU: a lean loader for SS-CXR classifiers and a bf16 path with fused oneDNN kernels.

Two independent pieces, both used by `spcxr predict`:

* **Lean loading** (`load_lean_classifier`, `LeanProcessor`): a fine-tuned SS-CXR classifier directory
  (`config.json`, `model.safetensors`, `preprocessor_config.json`) → a plain torch module with the parameter names,
  the operations and so the outputs of `SpcxrForImageClassification`, and the preprocessing of
  `SpcxrImageProcessor`, without importing transformers. transformers' model and image-processor base classes
  import torch.distributed, dynamo, sympy and scipy (~3 s and ~250 MB on a 2-core machine) before the first image
  is read; `spcxr predict` starts in about half the time without them. Directories this loader does not cover
  (segmentation, other backbones, sharded weights) make it return None, and the caller loads through transformers.

* **The CPU deployment path** (`optimize_for_cpu`, `spcxr predict --fast`): the model is cast to bfloat16 and each
  transformer block is rebuilt for oneDNN: weights prepacked once, fc1's bias and GELU fused into its matmul,
  the residual additions fused into proj's and fc2's matmuls, attention through PyTorch's fused SDPA kernel. On a
  CPU with AMX or AVX-512-BF16 (`torch.ops.mkldnn._is_mkldnn_bf16_supported()`) this runs ViT-S several times faster
  than fp32 (see benchmarks/); logits agree with fp32 to a cosine of ~0.9999. Where bf16 is not native (older CPUs),
  it falls back to dynamic int8 quantisation of the Linear layers (`torch.ao.quantization.quantize_dynamic`), which
  is the classic ~1.6× path. Works on the lean classifier and on every transformers SS-CXR model (backbone,
  classifier, segmenter: the decoder runs in bf16 too). On a CUDA device `optimize_for_cuda` casts to bf16 and
  keeps the SDPA attention. `choose_fast_path(device)` says which path runs and why, as data (`spcxr predict --fast`
prints it, the benchmarks record it).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.spcxr.imaging import DEFAULT_MAX_PIXELS, load_image, to_model_size
from ..models.spcxr.vit_layers import SpcxrEmbeddings, linear_plus

__all__ = [
    "LEAN_CONFIG_DEFAULTS",
    "FastPath",
    "FusedBlock",
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
    "layer_norm_eps": 1e-6,
    "image_size": 224,
    "patch_size": 16,
    "num_channels": 1,
    "qkv_bias": True,
    "classifier_pooling": "cls",
    "hidden_dropout_prob": 0.0,
}
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}
LEAN_ARCHITECTURE = "SpcxrForImageClassification"


# ----------------------------------------------------------------------------------------------------------------------
# The lean classifier: SpcxrForImageClassification's module tree and operations, on nn.Module alone


class _Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def attend(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        output = F.scaled_dot_product_attention(*qkv.unbind(0))
        return output.transpose(1, 2).reshape(batch, tokens, dim)


class _MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]


class _Layer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = _Attention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = _MLP(config)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False):
        hidden_states = linear_plus(self.attention.proj, self.attention.attend(self.norm1(hidden_states)), hidden_states)
        mlp = self.mlp
        return linear_plus(mlp.fc2, mlp.act(mlp.fc1(self.norm2(hidden_states))), hidden_states), None


class _Backbone(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embeddings = SpcxrEmbeddings(config)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden_states = self.embeddings(pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype))
        for layer in self.layers:
            hidden_states, _ = layer(hidden_states)
        sequence = self.layernorm(hidden_states)
        return sequence[:, 1:].mean(dim=1) if self.config.classifier_pooling == "mean" else sequence[:, 0]


class LeanSpcxrClassifier(nn.Module):
    """`SpcxrForImageClassification` for inference only, without transformers: same parameter names (its
    `model.safetensors` loads with `strict=True`), same operations, `forward(pixel_values) → logits` (B, num_labels)
    in float32 whatever the model's dtype. `config` carries `id2label` (int keys), `problem_type` and the sizes."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.config = config
        self.spcxr = _Backbone(config)
        self.classifier = nn.Linear(config.hidden_size, len(config.id2label))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.spcxr(pixel_values)).float()


def lean_config(fields: dict) -> SimpleNamespace | None:
    """config.json's fields → the lean classifier's config, or None where the lean classifier does not apply."""
    if fields.get("model_type") != "spcxr" or list(fields.get("architectures") or []) != [LEAN_ARCHITECTURE]:
        return None
    values = {key: fields.get(key, default) for key, default in LEAN_CONFIG_DEFAULTS.items()}
    if values["hidden_act"] not in ACTIVATIONS or not fields.get("id2label"):
        return None
    values["id2label"] = {int(k): v for k, v in fields["id2label"].items()}
    values["problem_type"] = fields.get("problem_type")
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
    """`SpcxrImageProcessor`'s preprocessing (decode, resize, normalise) from a `preprocessor_config.json`, without
    transformers: `processor(path_or_image)` → float32 (1, H, W)."""

    def __init__(self, size=None, resize_mode="pad", do_resize=True, do_normalize=True, image_mean=0.5, image_std=0.25,
                 max_pixels=DEFAULT_MAX_PIXELS):
        size = size or {"height": 224, "width": 224}
        self.size = (int(size["height"]), int(size["width"]))
        self.resize_mode, self.do_resize, self.do_normalize = resize_mode, do_resize, do_normalize
        self.mean = np.float32(np.asarray(image_mean, dtype=np.float32).reshape(-1)[0])
        self.std = np.float32(np.asarray(image_std, dtype=np.float32).reshape(-1)[0])
        self.max_pixels = int(max_pixels)

    @classmethod
    def from_directory(cls, directory: str | Path) -> LeanProcessor | None:
        fields = json.loads((Path(directory) / "preprocessor_config.json").read_text())
        if fields.get("image_processor_type") != "SpcxrImageProcessor":
            return None
        known = ("size", "resize_mode", "do_resize", "do_normalize", "image_mean", "image_std", "max_pixels")
        return cls(**{key: fields[key] for key in known if key in fields})

    def __call__(self, image) -> np.ndarray:
        array = load_image(image, max_pixels=self.max_pixels)
        if self.do_resize:
            array = to_model_size(array, self.size, self.resize_mode)
        if self.do_normalize:
            array = (array - self.mean) / self.std
        return array[None].astype(np.float32, copy=False)


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
    (`bf16`, `int8`) or `cuda` / `mps`; `name` and `reason` are for people (`spcxr predict --fast` prints `line`,
    the benchmarks record both)."""

    mode: str
    name: str
    reason: str

    @property
    def line(self) -> str:
        return f"fast path: {self.name} ({self.reason})"


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


def choose_fast_path(device: str | torch.device = "cpu") -> FastPath:
    """The path `optimize(model, device)` takes: `choose_cpu_path()` on a CPU, bf16 on CUDA, fp32 on MPS."""
    device = torch.device(device)
    if device.type == "cuda":
        return FastPath("cuda", "bf16 on CUDA", f"{torch.cuda.get_device_name(device)}, SDPA attention")
    if device.type == "mps":
        return FastPath("mps", "fp32 on MPS", "the CPU rewrites do not apply to Apple GPUs")
    return choose_cpu_path()


class _PackedLinear(nn.Module):
    """A Linear with its weight prepacked for oneDNN, optionally fused with GELU or with a residual addition."""

    def __init__(self, linear: nn.Linear, rows_hint: int | None, dtype: torch.dtype):
        super().__init__()
        weight = linear.weight.detach().to(dtype)
        hint = [rows_hint] if rows_hint else []
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, *hint)  # an attribute, not a parameter
        self.bias = None if linear.bias is None else linear.bias.detach().to(dtype)

    def forward(self, x: torch.Tensor, activation: str = "none") -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, activation, [], "none" if activation == "gelu" else "")

    def plus(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual + linear(x), the addition done by the matmul's epilogue."""
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, self.bias, "add")


class FusedBlock(nn.Module):
    """A pre-norm SS-CXR transformer block (SpcxrLayer or the lean one) rebuilt for CPU inference with oneDNN, in
    bf16 (or fp32). Same call signature as SpcxrLayer; returns no attention weights."""

    def __init__(self, layer: nn.Module, activation: str, rows_hint: int | None = None,
                 dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        attention = layer.attention
        self.num_heads, self.head_dim = attention.num_heads, attention.head_dim
        self.norm1 = layer.norm1.to(dtype)
        self.norm2 = layer.norm2.to(dtype)
        self.qkv = _PackedLinear(attention.qkv, rows_hint, dtype)
        self.proj = _PackedLinear(attention.proj, rows_hint, dtype)
        self.fc1 = _PackedLinear(layer.mlp.fc1, rows_hint, dtype)
        self.fc2 = _PackedLinear(layer.mlp.fc2, rows_hint, dtype)
        self.fused_gelu = activation == "gelu"
        self.act = ACTIVATIONS[activation]

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False):
        batch, tokens, dim = hidden_states.shape
        hidden = hidden_states.reshape(batch * tokens, dim)
        qkv = self.qkv(self.norm1(hidden)).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(*qkv.unbind(0)).transpose(1, 2).reshape(batch * tokens, dim)
        hidden = self.proj.plus(attended, hidden)
        inner = self.fc1(self.norm2(hidden), "gelu") if self.fused_gelu else self.act(self.fc1(self.norm2(hidden)))
        return self.fc2.plus(inner, hidden).view(batch, tokens, dim), None


def _backbone(model: nn.Module) -> nn.Module:
    return getattr(model, "spcxr", model)


def _activation_name(model: nn.Module) -> str:
    config = getattr(_backbone(model), "config", None) or getattr(model, "config", None)
    return getattr(config, "hidden_act", "gelu")


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
    activation = _activation_name(model)
    if activation not in ACTIVATIONS:
        raise ValueError(f"optimize_for_cpu: unsupported activation {activation!r}")
    tokens = None
    if batch_size and hasattr(backbone, "embeddings"):
        tokens = batch_size * (1 + backbone.embeddings.grid_size**2)
    model.to(dtype)
    backbone.layers = nn.ModuleList(FusedBlock(layer, activation, tokens, dtype) for layer in backbone.layers)
    return model


def optimize_for_cuda(model: nn.Module, device: str | torch.device = "cuda") -> nn.Module:
    """bf16 weights on the GPU; attention stays on PyTorch's SDPA (flash / memory-efficient kernels)."""
    return model.eval().requires_grad_(False).to(device=device, dtype=torch.bfloat16)


def optimize(model: nn.Module, device: str | torch.device = "cpu", *, batch_size: int | None = None,
             path: FastPath | None = None) -> nn.Module:
    """The fast inference path for `device`, `path` (default `choose_fast_path(device)`): `optimize_for_cuda` on a
    GPU, the model as it is on MPS, `optimize_for_cpu` on a CPU."""
    path = path or choose_fast_path(device)
    if path.mode == "cuda":
        return optimize_for_cuda(model, device)
    if path.mode == "mps":
        return model.eval().requires_grad_(False).to(device)
    return optimize_for_cpu(model, batch_size=batch_size, mode=path.mode)
