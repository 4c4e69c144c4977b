"""Configuration of SS-CXR, a ViT for chest radiographs pretrained with group-masked model learning (GMML).

This file is copied to the Hugging Face Hub as remote code: it imports only transformers and huggingface_hub.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


def _round_half_up(value: float) -> int:
    return int(value + 0.5)


def default_reconstruction_layers(depth: int) -> list[int]:
    """GMML's blocks for a depth: four evenly spaced from the middle to the last (12 → 6, 8, 10, 12), no repeats."""
    if depth <= 0:
        return []  # validate_geometry reports the depth itself
    return sorted({_round_half_up(depth / 2 + i * depth / 6) for i in range(4)} - {0})


def default_skip_layers(depth: int) -> list[int]:
    """UNETR's skip blocks for a depth: at depth/4, depth/2 and 3·depth/4 (12 → 3, 6, 9), at least block 1."""
    return [min(max(1, _round_half_up(depth * i / 4)), max(depth, 1)) for i in (1, 2, 3)]


@strict
class SpcxrConfig(PreTrainedConfig):
    r"""
    Configuration of [`SpcxrModel`] and its heads. The defaults are ViT-S/16 on 224×224 single-channel radiographs,
    the backbone published as `spcxr/vit-s`.

    Args:
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: transformer size (ViT-S: 384, 12, 6, 1536).
        hidden_act: activation of the MLP blocks.
        hidden_dropout_prob, attention_probs_dropout_prob: dropout inside the blocks.
        drop_path_rate: stochastic depth, linearly increasing over the blocks (used when fine-tuning).
        initializer_range: std of the truncated-normal initialisation.
        layer_norm_eps: LayerNorm epsilon (1e-6 as in timm/DeiT, so converted checkpoints match exactly).
        image_size, patch_size, num_channels: input geometry; radiographs have one channel.
        qkv_bias: bias on the fused query/key/value projection.
        classifier_pooling: `"cls"` (the CLS token) or `"mean"` (mean of the patch tokens) for classification.
        mask_ratio: GMML's upper bound p on the corrupted-area fraction; each image draws U[min(0.5, p), p].
        mask_fill: GMML corruption fill, `"noise"` (N(0, 1) in the normalised image) or `"zeros"`.
        reconstruction_layers: 1-based blocks whose outputs are averaged for the reconstruction head; by default four
            evenly spaced blocks ending at the last (6, 8, 10, 12 for ViT-S), following `num_hidden_layers`.
        reconstruction_masked_only: L1 reconstruction loss over corrupted pixels only (GMML) or over all pixels.
        segmentation_feature_size: channel width of the UNETR decoder.
        segmentation_skip_layers: 1-based blocks feeding the UNETR skip connections (the final output is always used);
            by default at a quarter, half and three quarters of the depth (3, 6, 9 for ViT-S).
        segmentation_dice_weight: weight of the soft-Dice term added to cross-entropy for segmentation.
        temperature: temperature scaling of the classifier's logits (one float, or one per label for multi-label),
            fitted on a validation split after fine-tuning; `forward` divides the logits by it outside training, so
            every consumer gets calibrated probabilities. None: not calibrated.
        operating_points: per-label score thresholds for a target sensitivity and specificity, chosen on a validation
            split (`{"default": "sensitivity", "thresholds": {label: {"sensitivity": t, "specificity": t}}, ...}`).
        prediction_sets: split-conformal APS threshold for prediction sets (`{"method": "APS", "coverage": 0.9,
            "threshold": q, ...}`).
    """

    model_type = "spcxr"
    _auto_class = "AutoConfig"  # a saved config always carries its auto_map and code (see SpcxrImageProcessor)

    hidden_size: int = 384
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-6
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 1
    qkv_bias: bool = True
    classifier_pooling: str = "cls"
    mask_ratio: float = 0.75
    mask_fill: str = "noise"
    reconstruction_layers: list[int] | tuple[int, ...] | None = None
    reconstruction_masked_only: bool = True
    segmentation_feature_size: int = 16
    segmentation_skip_layers: list[int] | tuple[int, ...] | None = None
    segmentation_dice_weight: float = 1.0
    temperature: float | list[float] | None = None
    operating_points: dict | None = None
    prediction_sets: dict | None = None

    def __post_init__(self, **kwargs):
        # Layer indices that were not given follow the depth, so any num_hidden_layers builds; given ones are
        # validated. JSON turns tuples into lists: keep lists so configs compare equal after a round trip.
        if self.reconstruction_layers is None:
            self.reconstruction_layers = default_reconstruction_layers(self.num_hidden_layers)
        if self.segmentation_skip_layers is None:
            self.segmentation_skip_layers = default_skip_layers(self.num_hidden_layers)
        self.reconstruction_layers = list(self.reconstruction_layers)
        self.segmentation_skip_layers = list(self.segmentation_skip_layers)
        super().__post_init__(**kwargs)

    def validate_geometry(self):
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
                     "patch_size", "num_channels", "segmentation_feature_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SpcxrConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"SpcxrConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"SpcxrConfig.image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )

    def validate_probabilities(self):
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"SpcxrConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"SpcxrConfig.mask_ratio must be in (0, 1), got {self.mask_ratio}")

    def validate_choices(self):
        if self.classifier_pooling not in ("cls", "mean"):
            raise ValueError(f"SpcxrConfig.classifier_pooling must be 'cls' or 'mean', got {self.classifier_pooling!r}")
        if self.mask_fill not in ("noise", "zeros"):
            raise ValueError(f"SpcxrConfig.mask_fill must be 'noise' or 'zeros', got {self.mask_fill!r}")

    def validate_temperature(self):
        values = [] if self.temperature is None else (
            self.temperature if isinstance(self.temperature, list) else [self.temperature])
        if any(not value > 0 for value in values):
            raise ValueError(f"SpcxrConfig.temperature must be positive (a float or one per label), got {self.temperature}")

    def validate_layer_indices(self):
        for name in ("reconstruction_layers", "segmentation_skip_layers"):
            layers = list(getattr(self, name))
            if not layers or any(not 1 <= i <= self.num_hidden_layers for i in layers):
                raise ValueError(
                    f"SpcxrConfig.{name} must list blocks between 1 and num_hidden_layers "
                    f"({self.num_hidden_layers}), got {layers}"
                )
        if len(self.segmentation_skip_layers) != 3:
            raise ValueError(
                f"SpcxrConfig.segmentation_skip_layers must name 3 blocks (UNETR), got {list(self.segmentation_skip_layers)}"
            )


__all__ = ["SpcxrConfig"]
