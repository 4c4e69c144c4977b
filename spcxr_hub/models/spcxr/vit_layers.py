"""The ViT's layers, on torch alone: embeddings, attention, MLP and the one transformer block. Shared by the model
file (`modeling_spcxr.py`, remote code: this file travels with it to the Hub), the lean inference path and the fused
CPU path (`spcxr_hub.inference.deploy`, which must not import transformers). `config` is an `SpcxrConfig` or any
object with its fields."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class SpcxrPatchEmbeddings(nn.Module):
    """(B, C, H, W) pixels → (B, H/p · W/p, D) patch tokens."""

    def __init__(self, config):
        super().__init__()
        self.patch_size = config.patch_size
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, config.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"pixel_values of size {height}x{width} is not a multiple of the patch size {self.patch_size}"
            )
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class SpcxrEmbeddings(nn.Module):
    """CLS token + patch tokens + learned position embeddings, interpolated when the input grid differs."""

    def __init__(self, config):
        super().__init__()
        self.grid_size = config.image_size // config.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 1 + self.grid_size**2, config.hidden_size))
        self.patch_embeddings = SpcxrPatchEmbeddings(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def position_embeddings_for(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == (self.grid_size, self.grid_size):
            return self.position_embeddings
        cls_pos, patch_pos = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, self.grid_size, self.grid_size, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos.float(), size=grid, mode="bicubic", align_corners=False)
        patch_pos = patch_pos.to(cls_pos.dtype).permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patch_size = self.patch_embeddings.patch_size
        grid = (pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size)
        tokens = self.patch_embeddings(pixel_values)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return self.dropout(tokens + self.position_embeddings_for(grid))


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, h·w, D) patch tokens (CLS removed) → (B, D, h, w) feature map."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


# Activations by config name: torch's own modules, so the lean path needs no transformers (the transformers classes
# pass `ACT2FN[config.hidden_act]`, which covers more names and computes the same for these).
ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
}


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention, the one that can return its weights. query/key/value: (B, heads, N, head_dim) →
    output (B, N, heads, head_dim), weights (B, heads, N, N). The signature of transformers' attention interface."""
    weights = torch.matmul(query, key.transpose(-2, -1)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def sdpa_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """PyTorch's fused attention kernel (the default without transformers); no weights. Shapes as `eager_attention`."""
    output = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling
    )
    return output.transpose(1, 2), None


AttentionFunction = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


class SpcxrAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection; the attention itself is the function passed in."""

    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False  # transformers' SDPA integration reads this; without it attention silently turns causal
        self.dropout = config.attention_probs_dropout_prob
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, attention_function: AttentionFunction = sdpa_attention):
        context, weights = self.attend(hidden_states, attention_function)
        return self.proj(context), weights

    def attend(self, hidden_states: torch.Tensor, attention_function: AttentionFunction = sdpa_attention):
        """The attention's output before the `proj` projection: (B, N, D), and the weights where the function gives
        them (eager)."""
        batch, tokens, dim = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        dropout = self.dropout if self.training else 0.0
        output, weights = attention_function(self, query, key, value, None, scaling=self.scaling, dropout=dropout)
        return output.reshape(batch, tokens, dim), weights


class SpcxrMLP(nn.Module):
    """fc1 → activation → fc2. `act_layer`: makes the activation module (timm's convention; default
    `ACTIVATIONS[config.hidden_act]`)."""

    def __init__(self, config, act_layer: Callable[[], nn.Module] | None = None):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = (act_layer or ACTIVATIONS[config.hidden_act])()
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


class SpcxrBlock(nn.Module):
    """The pre-norm transformer block: training, the lean path and the fused CPU path all run this one.

    `forward(hidden_states, attention_function)` → (hidden_states, attention weights or None). In eval mode the
    residual additions ride on the output projections' matmuls (`linear_plus`); `spcxr_hub.inference.deploy`
    fuses further by swapping the Linear layers for prepacked ones, not by replacing this block."""

    def __init__(self, config, drop_path: float = 0.0, act_layer: Callable[[], nn.Module] | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = SpcxrAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SpcxrMLP(config, act_layer)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.drop_path = SpcxrDropPath(drop_path)

    def forward(self, hidden_states: torch.Tensor, attention_function: AttentionFunction = sdpa_attention):
        context, weights = self.attention.attend(self.norm1(hidden_states), attention_function)
        mlp = self.mlp
        if self.training:
            hidden_states = hidden_states + self.drop_path(self.dropout(self.attention.proj(context)))
            hidden_states = hidden_states + self.drop_path(self.dropout(mlp(self.norm2(hidden_states))))
            return hidden_states, weights
        # Inference: the residual additions ride on the output projections' matmuls (~2% faster on CPU).
        hidden_states = linear_plus(self.attention.proj, context, hidden_states)
        return linear_plus(mlp.fc2, mlp.act(mlp.fc1(self.norm2(hidden_states))), hidden_states), weights


def linear_plus(linear: nn.Module, inputs: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """`residual + linear(inputs)`, the addition done by the matmul itself (addmm's beta term, or the layer's own
    `plus` where it has one: the prepacked oneDNN layers of the CPU path): one pass less over the activations than a
    Linear followed by `+` (inference only: dropout and stochastic depth act in between). Quantised or wrapped
    layers, and autocast (which would round the residual stream), take the plain path."""
    plus = getattr(linear, "plus", None)
    if plus is not None:
        return plus(inputs, residual)
    if type(linear) is not nn.Linear or torch.is_autocast_enabled(residual.device.type):
        return residual + linear(inputs)
    shape = residual.shape
    start = residual.reshape(-1, shape[-1])
    start = start + linear.bias if linear.bias is not None else start.clone()
    return torch.addmm(start, inputs.reshape(-1, inputs.shape[-1]), linear.weight.t()).view(shape)
