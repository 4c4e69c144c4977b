"""SS-CXR: a ViT for chest radiographs pretrained with group-masked model learning (GMML), and its task heads.

This file is copied to the Hugging Face Hub as remote code: it imports only torch, transformers and the files beside
it (relatively: the configuration and the torch-only layers, encoder and heads), nothing else of the project. The
classes here wrap the torch-only modules in transformers' conventions (PreTrainedModel, outputs, attention interface,
gradient checkpointing); the lean and fused inference paths use the same modules without transformers.

Module names follow timm's ViT (`qkv`, `proj`, `norm1`, `mlp.fc1` …) so DeiT/DINO/GMML checkpoints convert by renaming.
"""

import shutil
from functools import partial
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
from .gmml_head import SpcxrReconstructionHead, gmml_reconstruction_loss
from .unetr_blocks import SpcxrUnetrPrUpBlock, SpcxrUnetrResBlock, SpcxrUnetrUpBlock
from .vit_encoder import EncoderOutput, SpcxrEncoderMixin
from .vit_layers import (  # noqa: F401  (public names here too)
    SpcxrAttention,
    SpcxrBlock,
    SpcxrDropPath,
    SpcxrEmbeddings,
    SpcxrMLP,
    SpcxrPatchEmbeddings,
    eager_attention,
    linear_plus,
    tokens_to_grid,
)

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


class SpcxrLayer(GradientCheckpointingLayer, SpcxrBlock):
    """The transformer block (`vit_layers.SpcxrBlock`), checkpointable by transformers'
    `gradient_checkpointing_enable`, which looks for `GradientCheckpointingLayer`s."""


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


class SpcxrModel(SpcxrEncoderMixin, SpcxrPreTrainedModel):
    """The SS-CXR backbone: patch embedding → transformer blocks → LayerNorm (`vit_encoder.SpcxrEncoderMixin`, so
    timm's `forward_features` / `forward_intermediates` / `forward_head` work here too).

    `hidden_states` (when requested) has `num_hidden_layers + 1` entries: the embeddings, then each block's output.
    `pooler_output` is the normalised CLS token (or the mean patch token with `classifier_pooling="mean"`).
    `add_final_layernorm=False` builds it without that LayerNorm (the GMML head's backbone).
    """

    def __init__(self, config: SpcxrConfig, add_final_layernorm: bool = True):
        super().__init__(config)
        self.build_encoder(config, SpcxrLayer, partial(ACT2FN.__getitem__, config.hidden_act), add_final_layernorm)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def attention_function(self):
        """The attention transformers' interface picks for `config._attn_implementation` (SDPA by default)."""
        implementation = self.config._attn_implementation
        if implementation in (None, "eager"):
            return eager_attention
        return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention)

    def encode(self, pixel_values: torch.Tensor, indices=(), output_attentions: bool | None = None) -> EncoderOutput:
        """`forward_intermediates` after checking the input's shape, `output_attentions=None` meaning the config's:
        what `forward` and the heads call."""
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}"
            )
        return self.forward_intermediates(pixel_values, indices, output_attentions=output_attentions)

    def hidden_state_indices(self, output_hidden_states: bool) -> range:
        return range(self.config.num_hidden_layers + 1) if output_hidden_states else range(0)

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
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        encoded = self.encode(pixel_values, self.hidden_state_indices(output_hidden_states), output_attentions)
        output = BaseModelOutputWithPooling(
            last_hidden_state=encoded.last_hidden_state,
            pooler_output=self.forward_head(encoded.last_hidden_state),
            hidden_states=tuple(encoded.intermediates.values()) if output_hidden_states else None,
            attentions=encoded.attentions,
        )
        return output if return_dict else output.to_tuple()


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
        everything = self.spcxr.hidden_state_indices(output_hidden_states)
        encoded = self.spcxr.encode(pixel_values, [*self.decoder.layers, *everything], output_attentions)
        hidden = encoded.intermediates
        patch = self.config.patch_size
        grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        reconstruction = self.decoder([hidden[i] for i in self.decoder.layers], grid)
        loss = None
        if labels is not None:
            loss = gmml_reconstruction_loss(reconstruction, labels, pixel_mask, self.config.reconstruction_masked_only)
        output = MaskedImageModelingOutput(
            loss=loss,
            reconstruction=reconstruction,
            hidden_states=tuple(hidden[i] for i in everything) if output_hidden_states else None,
            attentions=encoded.attentions,
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
        if not self.training and self.config.temperature is not None:
            # Temperature scaling fitted after fine-tuning (spcxr_hub.evaluation.calibration): calibrated probabilities
            # for every consumer (pipelines, predict, exports); training keeps raw logits.
            logits = logits / logits.new_tensor(self.config.temperature)
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
        skips = self.config.segmentation_skip_layers
        everything = self.spcxr.hidden_state_indices(output_hidden_states)
        encoded = self.spcxr.encode(pixel_values, [*skips, *everything], output_attentions)
        hidden = encoded.intermediates
        grid = (pixel_values.shape[-2] // 16, pixel_values.shape[-1] // 16)
        first, second, third = (tokens_to_grid(hidden[i][:, 1:], grid) for i in skips)
        final = tokens_to_grid(encoded.last_hidden_state[:, 1:], grid)
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
            hidden_states=tuple(hidden[i] for i in everything) if output_hidden_states else None,
            attentions=encoded.attentions,
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
