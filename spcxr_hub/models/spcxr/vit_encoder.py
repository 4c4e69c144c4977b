"""The ViT encoder on torch alone (patch embedding → blocks → LayerNorm), with timm's entry points:
`forward_features`, `forward_intermediates(indices)`, `forward_head`.

It is a mixin, not a submodule, so `embeddings`, `layers.N` and `layernorm` stay top-level names of whatever module
holds them: `SpcxrModel` (transformers) and `SpcxrEncoder` (the lean path) have the same state-dict keys, and
checkpoints saved before load strictly. Remote code: travels with `modeling_spcxr.py` to the Hub.
"""

from typing import NamedTuple

import torch
from torch import nn

from .vit_layers import AttentionFunction, SpcxrBlock, SpcxrEmbeddings, eager_attention, sdpa_attention


class EncoderOutput(NamedTuple):
    """`last_hidden_state`: (B, N, D) after the final LayerNorm. `intermediates`: {hidden-state index: (B, N, D)} for
    the indices asked for (0 = the embeddings, i = block i's output). `attentions`: one (B, heads, N, N) per block,
    or None unless asked for."""

    last_hidden_state: torch.Tensor
    intermediates: dict[int, torch.Tensor]
    attentions: tuple[torch.Tensor, ...] | None


class SpcxrEncoderMixin:
    """ViT encoder behaviour over `self.embeddings`, `self.layers`, `self.layernorm` and `self.config`, which
    `build_encoder` creates. `block` lets the transformers classes use their checkpointable subclass of the block."""

    def build_encoder(self, config, block: type[nn.Module] = SpcxrBlock, act_layer=None, add_final_layernorm=True):
        self.embeddings = SpcxrEmbeddings(config)
        # Plain Python, not torch.linspace(...).tolist(): that reads a tensor, which fails under meta-device
        # construction (accelerate's init_empty_weights, low-memory loading, FSDP).
        last = max(config.num_hidden_layers - 1, 1)
        rates = [config.drop_path_rate * i / last for i in range(config.num_hidden_layers)]
        self.layers = nn.ModuleList(block(config, rate, act_layer) for rate in rates)
        # Without the final LayerNorm (timm's convention: an Identity in its place) for heads that read the blocks'
        # outputs instead (GMML reconstruction): a parameter no loss reaches breaks DDP and Trainer.
        self.layernorm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_final_layernorm else nn.Identity()
        )

    def attention_function(self) -> AttentionFunction:
        """The attention the blocks run: PyTorch's SDPA here; the transformers classes return the one transformers'
        attention interface picks for `config._attn_implementation`."""
        return sdpa_attention

    def forward_intermediates(
        self,
        pixel_values: torch.Tensor,
        indices=(),
        attention_function: AttentionFunction | None = None,
        output_attentions: bool = False,
    ) -> EncoderOutput:
        """Runs the encoder, keeping the hidden states at `indices` (hidden-state numbering, negatives count from the
        end; an int n: the last n). `attention_function` defaults to `self.attention_function()`;
        `output_attentions` switches to eager attention, the one that returns weights."""
        count = len(self.layers) + 1
        if isinstance(indices, int):
            indices = range(count - indices, count)
        wanted = {index % count for index in indices}
        if output_attentions:
            attention_function = eager_attention
        attention_function = attention_function or self.attention_function()
        hidden_states = self.embeddings(pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype))
        intermediates = {0: hidden_states} if 0 in wanted else {}
        attentions = () if output_attentions else None
        for number, layer in enumerate(self.layers, start=1):
            # positional hidden_states: transformers' checkpointing replays what is passed positionally
            hidden_states, weights = layer(hidden_states, attention_function=attention_function)
            if number in wanted:
                intermediates[number] = hidden_states
            if output_attentions:
                attentions += (weights,)
        return EncoderOutput(self.layernorm(hidden_states), intermediates, attentions)

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, 1 + patches, D) tokens after the final LayerNorm."""
        return self.forward_intermediates(pixel_values).last_hidden_state

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pools the tokens: the CLS token, or the mean patch token with `classifier_pooling="mean"`. (B, D)."""
        return tokens[:, 1:].mean(dim=1) if self.config.classifier_pooling == "mean" else tokens[:, 0]


class SpcxrEncoder(SpcxrEncoderMixin, nn.Module):
    """The encoder as a plain torch module (`forward` = `forward_features`): what the lean path loads weights into."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.build_encoder(config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.forward_features(pixel_values)
