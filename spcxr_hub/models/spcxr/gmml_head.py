"""GMML's reconstruction head and loss, on torch alone (remote code: travels with `modeling_spcxr.py`)."""

import torch
from torch import nn

from .vit_layers import tokens_to_grid


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

    def __init__(self, config):
        super().__init__()
        dim = config.hidden_size
        self.layers = tuple(config.reconstruction_layers)
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU())
        self.to_pixels = nn.ConvTranspose2d(dim, config.num_channels, config.patch_size, config.patch_size)

    def forward(self, block_outputs: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        """block_outputs: the hidden states at `self.layers`, each (B, 1 + h·w, D) → (B, C, h·p, w·p) pixels."""
        features = torch.stack(block_outputs).mean(dim=0)
        features = self.mlp(self.norm(features)[:, 1:])
        return self.to_pixels(tokens_to_grid(features, grid))
