"""UNETR's decoder blocks (MONAI's layout: `networks/blocks/unetr_block.py`), on torch alone (remote code: travels
with `modeling_spcxr.py`)."""

import torch
from torch import nn


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
