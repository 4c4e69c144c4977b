"""The ViT's pieces that need nothing but torch, shared by the model file (`modeling_spcxr.py`, remote code: this
file travels with it to the Hub) and the lean inference path (`deploy.py`, which must not import transformers).
`config` is an `SpcxrConfig` or any object with its fields."""

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


def linear_plus(linear: nn.Linear, inputs: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """`residual + linear(inputs)`, the addition done by the matmul itself (addmm's beta term): one pass less over
    the activations than a Linear followed by `+` (inference only: dropout and stochastic depth act in between).
    Quantised or wrapped layers, and autocast (which would round the residual stream), take the plain path."""
    if type(linear) is not nn.Linear or torch.is_autocast_enabled(residual.device.type):
        return residual + linear(inputs)
    shape = residual.shape
    start = residual.reshape(-1, shape[-1])
    start = start + linear.bias if linear.bias is not None else start.clone()
    return torch.addmm(start, inputs.reshape(-1, inputs.shape[-1]), linear.weight.t()).view(shape)
