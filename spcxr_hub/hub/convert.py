"""Convert timm/DeiT/DINO-style ViT checkpoints (the layout of the official GMML and SiT releases) to `SpcxrModel`.

A 3-channel patch embedding becomes a 1-channel one by summing its weights over the colour channels: a grayscale
image replicated to RGB then gives exactly the same patch tokens.
"""

import re
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.spcxr.configuration_spcxr import SpcxrConfig
from ..errors import UsageError
from ..models.spcxr.modeling_spcxr import SpcxrModel

# Wrappers seen around the backbone in released checkpoints (DDP, DINO/GMML student/teacher, SiT).
CHECKPOINT_SUBDICTS = ("state_dict", "model", "student", "teacher", "module")
KEY_PREFIXES = ("module.", "backbone.", "encoder.", "model.")
RENAMES = (
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^pos_embed$", "embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"^blocks\.(\d+)\.norm1\.", r"layers.\1.norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"layers.\1.norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"layers.\1.attention.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"layers.\1.attention.proj."),
    (r"^blocks\.(\d+)\.mlp\.fc([12])\.", r"layers.\1.mlp.fc\2."),
    (r"^norm\.", "layernorm."),
)


class CheckpointError(UsageError):
    """A checkpoint that cannot be converted; the message names the file or key and what was expected."""


def read_checkpoint(path: str | Path) -> dict:
    """The dict a checkpoint file holds (a state dict, or a training checkpoint wrapping one): a `.safetensors`
    file, or a `.pth`/`.bin`/`.pt` file loaded with `weights_only=True` (tensors and containers only: no pickled
    code runs). A folder stands for the first of model.safetensors, *.safetensors, pytorch_model.bin, *.pth in it."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "model.safetensors", *sorted(path.glob("*.safetensors")), path / "pytorch_model.bin",
                      *sorted(path.glob("*.pth"))]
        found = [candidate for candidate in candidates if candidate.is_file()]
        if not found:
            raise CheckpointError(f"{path}: no model.safetensors, *.safetensors, pytorch_model.bin or *.pth inside")
        path = found[0]
    elif not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file or folder")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path}: not loadable with weights_only=True (expected a state dict of tensors; convert it to "
            f"safetensors in a trusted environment): {str(error).splitlines()[0]}"
        ) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: holds a {type(checkpoint).__name__}, not a dict of tensors")
    return checkpoint


def unwrap_state_dict(checkpoint: dict, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Finds the ViT state dict inside a training checkpoint and strips wrapper prefixes."""
    for key in CHECKPOINT_SUBDICTS:
        if isinstance(checkpoint.get(key), dict) and any(torch.is_tensor(v) or isinstance(v, dict) for v in checkpoint[key].values()):
            checkpoint = checkpoint[key]
            break
    state_dict = {}
    for key, value in checkpoint.items():
        if not torch.is_tensor(value):
            continue
        for prefix in KEY_PREFIXES:
            key = key.removeprefix(prefix)
        state_dict[key] = value
    if "patch_embed.proj.weight" not in state_dict:
        raise CheckpointError(f"{source}: no 'patch_embed.proj.weight' found (expected a timm/DeiT-style ViT state dict)")
    return state_dict


def config_from_state_dict(state_dict: dict[str, torch.Tensor], **overrides) -> SpcxrConfig:
    """Infers the architecture (width, depth, MLP size, patch, image size) from tensor shapes; heads = width / 64."""
    hidden, _, patch, _ = state_dict["patch_embed.proj.weight"].shape
    depth = 1 + max(int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k)))
    grid = int(round((state_dict["pos_embed"].shape[1] - 1) ** 0.5))
    fields = dict(
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=state_dict["blocks.0.mlp.fc1.weight"].shape[0],
        patch_size=patch,
        image_size=grid * patch,
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
    )
    fields.update(overrides)
    return SpcxrConfig(**fields)


def convert_state_dict(state_dict: dict[str, torch.Tensor], config: SpcxrConfig) -> dict[str, torch.Tensor]:
    """Renames timm keys to `SpcxrModel` keys, adapts the input channels and the position-embedding grid.
    Keys without a counterpart (classifier heads, DINO projection heads) are dropped."""
    converted = {}
    for key, value in state_dict.items():
        for pattern, replacement in RENAMES:
            if re.search(pattern, key):
                converted[re.sub(pattern, replacement, key)] = value
                break
    weight_key = "embeddings.patch_embeddings.projection.weight"
    weight = converted[weight_key]
    if weight.shape[1] != config.num_channels:
        if config.num_channels != 1:
            raise CheckpointError(f"{weight_key}: cannot adapt {weight.shape[1]} input channels to {config.num_channels}")
        converted[weight_key] = weight.sum(dim=1, keepdim=True)
    position = converted["embeddings.position_embeddings"]
    grid = config.image_size // config.patch_size
    if position.shape[1] != grid * grid + 1:
        old = int(round((position.shape[1] - 1) ** 0.5))
        patches = position[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches.float(), size=(grid, grid), mode="bicubic", align_corners=False)
        converted["embeddings.position_embeddings"] = torch.cat(
            [position[:, :1], patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(position.dtype)], dim=1
        )
    return converted


def convert_vit_checkpoint(source: str | Path | dict, **config_overrides) -> SpcxrModel:
    """A checkpoint path or state dict → `SpcxrModel` with every backbone weight loaded (strict)."""
    if isinstance(source, (str, Path)):
        state_dict = unwrap_state_dict(read_checkpoint(source), source=str(source))
    else:
        state_dict = unwrap_state_dict(source)
    config = config_from_state_dict(state_dict, **config_overrides)
    model = SpcxrModel(config)
    missing, unexpected = model.load_state_dict(convert_state_dict(state_dict, config), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint does not fit SpcxrModel: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()
