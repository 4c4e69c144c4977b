"""SS-CXR: a ViT for chest radiographs pretrained with group-masked model learning (GMML), and its task heads.

This file is copied to the Hugging Face Hub as remote code: it imports only torch, transformers and the files beside
it (relatively: the configuration and `vit_layers.py`), nothing else of the project.

Module names follow timm's ViT (`qkv`, `proj`, `norm1`, `mlp.fc1` …) so DeiT/DINO/GMML checkpoints convert by renaming.
"""

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
    MaskedImageModelingOutput,
    SemanticSegmenterOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_spcxr import SpcxrConfig
from .vit_layers import SpcxrEmbeddings, SpcxrPatchEmbeddings, linear_plus  # noqa: F401  (public names here too)

# Every Auto class a saved directory can be loaded with through remote code (transformers leaves AutoModel out).
AUTO_MAP = {
    "AutoConfig": "configuration_spcxr.SpcxrConfig",
    "AutoModel": "modeling_spcxr.SpcxrModel",
    "AutoModelForImageClassification": "modeling_spcxr.SpcxrForImageClassification",
    "AutoModelForSemanticSegmentation": "modeling_spcxr.SpcxrForSemanticSegmentation",
    "AutoModelForMaskedImageModeling": "modeling_spcxr.SpcxrForMaskedImageModeling",
}
PROCESSOR_AUTO_MAP = {"AutoImageProcessor": "image_processing_spcxr.SpcxrImageProcessor"}
PROCESSOR_FILE = "image_processing_spcxr.py"


def code_files(folder: Path) -> list[Path]:
    """The remote code a saved model carries: every module of this folder (`spcxr_hub/models/spcxr/` installed, or
    the folder transformers loaded this file from as remote code)."""
    return sorted(path for path in folder.glob("*.py") if path.name != "__init__.py")


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention. query/key/value: (B, heads, N, head_dim) → output (B, N, heads, head_dim)."""
    weights = torch.matmul(query, key.transpose(-2, -1)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class SpcxrAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, dispatched through transformers' attention interface."""

    def __init__(self, config: SpcxrConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False  # the SDPA integration reads this; without it attention silently turns causal
        self.dropout = config.attention_probs_dropout_prob
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False):
        context, weights = self.attend(hidden_states, output_attentions)
        return self.proj(context), weights

    def attend(self, hidden_states: torch.Tensor, output_attentions: bool = False):
        """The attention's output before the `proj` projection: (B, N, D), and the weights when requested."""
        batch, tokens, dim = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention: Callable = eager_attention_forward
        if implementation not in (None, "eager"):
            attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        output, weights = attention(
            self, query, key, value, None, scaling=self.scaling, dropout=self.dropout if self.training else 0.0
        )
        return output.reshape(batch, tokens, dim), weights


class SpcxrMLP(nn.Module):
    def __init__(self, config: SpcxrConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class SpcxrDropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return hidden_states
        keep = hidden_states.new_empty((hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1))
        return hidden_states * keep.bernoulli_(1.0 - self.rate) / (1.0 - self.rate)


class SpcxrLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block."""

    def __init__(self, config: SpcxrConfig, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = SpcxrAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SpcxrMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.drop_path = SpcxrDropPath(drop_path)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False):
        context, weights = self.attention.attend(self.norm1(hidden_states), output_attentions)
        if self.training:
            hidden_states = hidden_states + self.drop_path(self.dropout(self.attention.proj(context)))
            hidden_states = hidden_states + self.drop_path(self.dropout(self.mlp(self.norm2(hidden_states))))
            return hidden_states, weights
        # Inference: the residual additions ride on the output projections' matmuls (~2% faster on CPU).
        hidden_states = linear_plus(self.attention.proj, context, hidden_states)
        mlp = self.mlp
        return linear_plus(mlp.fc2, mlp.act(mlp.fc1(self.norm2(hidden_states))), hidden_states), weights


class SpcxrPreTrainedModel(PreTrainedModel):
    config_class = SpcxrConfig
    config: SpcxrConfig
    base_model_prefix = "spcxr"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["SpcxrEmbeddings", "SpcxrLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        # timm/DeiT initialisation, so "from scratch" here means what it means in the papers we compare with.
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.InstanceNorm2d)):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
        elif isinstance(module, SpcxrEmbeddings):
            init.trunc_normal_(module.position_embeddings, std=std)
            init.trunc_normal_(module.cls_token, std=std)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves as transformers does, plus the code files and an `auto_map` covering every Auto class, so the
        directory loads with `trust_remote_code=True` where this project is not installed."""
        files = code_files(Path(__file__).parent)
        with_processor = any(path.name == PROCESSOR_FILE for path in files)
        self.config.auto_map = {**AUTO_MAP, **(PROCESSOR_AUTO_MAP if with_processor else {})}
        super().save_pretrained(save_directory, *args, **kwargs)
        for path in files:
            shutil.copyfile(path, Path(save_directory) / path.name)


class SpcxrModel(SpcxrPreTrainedModel):
    """The SS-CXR backbone: patch embedding → transformer blocks → LayerNorm.

    `hidden_states` (when requested) has `num_hidden_layers + 1` entries: the embeddings, then each block's output.
    `pooler_output` is the normalised CLS token (or the mean patch token with `classifier_pooling="mean"`).
    `add_final_layernorm=False` builds it without that LayerNorm (the GMML head's backbone).
    """

    def __init__(self, config: SpcxrConfig, add_final_layernorm: bool = True):
        super().__init__(config)
        self.embeddings = SpcxrEmbeddings(config)
        # Plain Python, not torch.linspace(...).tolist(): that reads a tensor, which fails under meta-device
        # construction (accelerate's init_empty_weights, low-memory loading, FSDP).
        last = max(config.num_hidden_layers - 1, 1)
        rates = [config.drop_path_rate * i / last for i in range(config.num_hidden_layers)]
        self.layers = nn.ModuleList(SpcxrLayer(config, rate) for rate in rates)
        # Without the final LayerNorm (timm's convention: an Identity in its place) for heads that read the blocks'
        # outputs instead (GMML reconstruction): a parameter no loss reaches breaks DDP and Trainer.
        self.layernorm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_final_layernorm else nn.Identity()
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """pixel_values: (B, C, H, W) normalised radiographs, H and W multiples of the patch size."""
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}"
            )
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
        hidden_states = self.embeddings(pixel_values)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        sequence_output = self.layernorm(hidden_states)
        if self.config.classifier_pooling == "mean":
            pooled_output = sequence_output[:, 1:].mean(dim=1)
        else:
            pooled_output = sequence_output[:, 0]
        output = BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )
        return output if return_dict else output.to_tuple()


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, h·w, D) patch tokens (CLS removed) → (B, D, h, w) feature map."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


def gmml_reconstruction_loss(
    reconstruction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, masked_only: bool = True
) -> torch.Tensor:
    """GMML's loss: L1 between reconstruction and clean target averaged over the corrupted pixels only (mask True,
    (B, 1, H, W) broadcasting over channels), or over all pixels. Computed in at least float32; an empty mask gives
    a zero that is still connected to the graph, never NaN."""
    if reconstruction.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} differ in shape")
    dtype = torch.promote_types(torch.promote_types(reconstruction.dtype, target.dtype), torch.float32)
    error = (reconstruction.to(dtype) - target.to(dtype)).abs()
    if mask is None or not masked_only:
        return error.mean()
    mask = mask if mask.dtype == torch.bool else mask != 0
    if torch.broadcast_shapes(mask.shape, error.shape) != error.shape:
        raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to {tuple(error.shape)}")
    mask = mask.expand_as(error)
    total = torch.where(mask, error, torch.zeros((), dtype=dtype, device=error.device)).sum()
    return total / mask.sum().clamp_min(1).to(dtype)


class SpcxrReconstructionHead(nn.Module):
    """GMML head: mean of chosen block outputs → LayerNorm → drop CLS → 3 × (Linear + GELU) → transposed conv."""

    def __init__(self, config: SpcxrConfig):
        super().__init__()
        dim = config.hidden_size
        self.layers = tuple(config.reconstruction_layers)
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU())
        self.to_pixels = nn.ConvTranspose2d(dim, config.num_channels, config.patch_size, config.patch_size)

    def forward(self, hidden_states: tuple[torch.Tensor, ...], grid: tuple[int, int]) -> torch.Tensor:
        features = torch.stack([hidden_states[i] for i in self.layers]).mean(dim=0)
        features = self.mlp(self.norm(features)[:, 1:])
        return self.to_pixels(tokens_to_grid(features, grid))


class SpcxrForMaskedImageModeling(SpcxrPreTrainedModel):
    """SS-CXR with the GMML reconstruction head.

    Inputs: `pixel_values` (B, C, H, W), the corrupted images; `labels` (B, C, H, W), the clean images (the target);
    `pixel_mask` (B, 1, H, W) bool, True where pixels were corrupted. The corruption itself is an input (see
    `spcxr_hub.training.gmml.corrupt`) so a forward pass is deterministic. The loss is computed when `labels` is given.
    """

    # The backbone here has no final LayerNorm (see __init__): a backbone checkpoint's norm is dropped on loading.
    _keys_to_ignore_on_load_unexpected = [r"^(spcxr\.)?layernorm\."]

    def __init__(self, config: SpcxrConfig):
        super().__init__(config)
        # The head reads the blocks' outputs, never the final LayerNorm's: left in, that norm gets no gradient
        # (DDP's unused-parameter error). A backbone saved from here gets the norm at its init, weight 1 and bias 0.
        self.spcxr = SpcxrModel(config, add_final_layernorm=False)
        self.decoder = SpcxrReconstructionHead(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MaskedImageModelingOutput | tuple:
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.spcxr(pixel_values, output_hidden_states=True, output_attentions=output_attentions, return_dict=True)
        patch = self.config.patch_size
        grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        reconstruction = self.decoder(outputs.hidden_states, grid)
        loss = None
        if labels is not None:
            loss = gmml_reconstruction_loss(reconstruction, labels, pixel_mask, self.config.reconstruction_masked_only)
        output = MaskedImageModelingOutput(
            loss=loss,
            reconstruction=reconstruction,
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


class SpcxrForImageClassification(SpcxrPreTrainedModel):
    """SS-CXR with a linear classifier on the pooled token. `problem_type` picks the loss: cross-entropy for
    `single_label_classification` (labels (B,) int), BCE-with-logits for `multi_label_classification` (labels (B, K)
    float); inferred from the labels' dtype when unset, as transformers does."""

    def __init__(self, config: SpcxrConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.spcxr = SpcxrModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.spcxr(pixel_values, output_hidden_states, output_attentions, return_dict=True)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self.classification_loss(logits, labels)
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.problem_type is None:
            integer = labels.dtype in (torch.long, torch.int)
            self.config.problem_type = (
                "single_label_classification" if self.num_labels > 1 and integer else
                "regression" if self.num_labels == 1 else "multi_label_classification"
            )
        if self.config.problem_type == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        if self.config.problem_type == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).squeeze(-1))


class SpcxrUnetrResBlock(nn.Module):
    """Two 3×3 conv–InstanceNorm layers with a residual (projected when the width changes), LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm2d(out_channels, affine=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm2d(out_channels, affine=True)
        self.act = nn.LeakyReLU(0.01)
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.InstanceNorm2d(out_channels, affine=True)
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        residual = features if self.shortcut is None else self.shortcut(features)
        features = self.act(self.norm1(self.conv1(features)))
        return self.act(self.norm2(self.conv2(features)) + residual)


class SpcxrUnetrPrUpBlock(nn.Module):
    """Projects a transformer feature map up: one ×2 transposed conv, then `num_layers` × (×2 transposed conv + res block)."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int):
        super().__init__()
        self.init_up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, bias=False)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(out_channels, out_channels, 2, stride=2, bias=False),
                SpcxrUnetrResBlock(out_channels, out_channels),
            )
            for _ in range(num_layers)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = self.init_up(features)
        for block in self.blocks:
            features = block(features)
        return features


class SpcxrUnetrUpBlock(nn.Module):
    """Decoder stage: ×2 transposed conv, concatenate the skip, res block."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, bias=False)
        self.block = SpcxrUnetrResBlock(2 * out_channels, out_channels)

    def forward(self, features: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(features), skip], dim=1))


class SpcxrForSemanticSegmentation(SpcxrPreTrainedModel):
    """SS-CXR with a UNETR decoder (Hatamizadeh et al. 2022; MONAI's layout) for masks at input resolution.

    Skips come from the blocks in `segmentation_skip_layers` (3, 6, 9 for ViT-S) and the final output, plus a conv
    block on the raw image. `labels`: (B, H, W) class ids; the loss is cross-entropy + `segmentation_dice_weight` ×
    soft Dice over the foreground classes. `logits`: (B, num_labels, H, W).
    """

    def __init__(self, config: SpcxrConfig):
        super().__init__(config)
        if config.patch_size != 16:
            raise ValueError(f"SpcxrConfig.patch_size must be 16 for the UNETR decoder, got {config.patch_size}")
        width, dim = config.segmentation_feature_size, config.hidden_size
        self.spcxr = SpcxrModel(config)
        self.encoder1 = SpcxrUnetrResBlock(config.num_channels, width)
        self.encoder2 = SpcxrUnetrPrUpBlock(dim, 2 * width, num_layers=2)
        self.encoder3 = SpcxrUnetrPrUpBlock(dim, 4 * width, num_layers=1)
        self.encoder4 = SpcxrUnetrPrUpBlock(dim, 8 * width, num_layers=0)
        self.decoder5 = SpcxrUnetrUpBlock(dim, 8 * width)
        self.decoder4 = SpcxrUnetrUpBlock(8 * width, 4 * width)
        self.decoder3 = SpcxrUnetrUpBlock(4 * width, 2 * width)
        self.decoder2 = SpcxrUnetrUpBlock(2 * width, width)
        self.head = nn.Conv2d(width, config.num_labels, 1)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SemanticSegmenterOutput | tuple:
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.spcxr(pixel_values, output_hidden_states=True, output_attentions=output_attentions, return_dict=True)
        grid = (pixel_values.shape[-2] // 16, pixel_values.shape[-1] // 16)
        hidden = outputs.hidden_states
        first, second, third = (tokens_to_grid(hidden[i][:, 1:], grid) for i in self.config.segmentation_skip_layers)
        final = tokens_to_grid(outputs.last_hidden_state[:, 1:], grid)
        pixel_values = pixel_values.to(final.dtype)
        features = self.decoder5(final, self.encoder4(third))
        features = self.decoder4(features, self.encoder3(second))
        features = self.decoder3(features, self.encoder2(first))
        features = self.decoder2(features, self.encoder1(pixel_values))
        logits = self.head(features)
        loss = None
        if labels is not None:
            loss = self.segmentation_loss(logits, labels)
        output = SemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()

    def segmentation_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.long()
        loss = F.cross_entropy(logits, labels)
        if self.config.segmentation_dice_weight:
            probabilities = logits.float().softmax(dim=1)
            one_hot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).float()
            classes = slice(1, None) if logits.shape[1] > 1 else slice(None)  # class 0 is background
            intersection = (probabilities * one_hot)[:, classes].sum(dim=(0, 2, 3))
            total = (probabilities + one_hot)[:, classes].sum(dim=(0, 2, 3))
            dice = (2 * intersection + 1.0) / (total + 1.0)
            loss = loss + self.config.segmentation_dice_weight * (1.0 - dice.mean())
        return loss


__all__ = [
    "SpcxrPreTrainedModel",
    "SpcxrModel",
    "SpcxrForMaskedImageModeling",
    "SpcxrForImageClassification",
    "SpcxrForSemanticSegmentation",
    "gmml_reconstruction_loss",
]
