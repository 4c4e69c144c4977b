"""GMML's augmentation for radiographs (DESIGN.md §GMML): random resized crop, light intensity jitter, blur; flips
only on request, because the heart side is anatomy, not noise. Driven by a numpy Generator the caller seeds (from seed,
epoch and index), so every sample's augmentation is reproducible on resume and independent of the loader's workers."""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """GMML's augmentation for radiographs, driven by a numpy Generator: (H, W) [0, 1] → (1, size, size) normalised.

    Random resized crop (area `scale`, aspect `ratio`, as torchvision's RandomResizedCrop; bilinear, antialiased)
    → with probability `jitter_p` brightness and contrast factors in [1 - jitter, 1 + jitter] → with probability
    `blur_p` a Gaussian blur (sigma in `blur_sigma` pixels of the output) → with `hflip`, a flip with probability
    0.5 → `(x - mean) / std` (SpcxrImageProcessor's normalisation).
    """

    size: int
    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter_p: float = 0.3
    jitter: float = 0.2
    blur_p: float = 0.1
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    hflip: bool = False
    mean: float = 0.5
    std: float = 0.25

    def crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, left, crop height, crop width), torchvision's algorithm (10 tries, then a central crop)."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        """(h, w) → (size, size), bilinear with antialiasing."""
        return F.interpolate(image[None, None], size=(self.size, self.size), mode="bilinear", align_corners=False,
                             antialias=True)[0, 0]

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        return ((image.clamp(0.0, 1.0) - self.mean) / self.std)[None].contiguous()

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        top, left, h, w = self.crop_box(*image.shape, rng)
        x = self.resize(torch.from_numpy(np.ascontiguousarray(image[top : top + h, left : left + w], np.float32)))
        if rng.random() < self.jitter_p:
            brightness = rng.uniform(1 - self.jitter, 1 + self.jitter)
            contrast = rng.uniform(1 - self.jitter, 1 + self.jitter)
            x = (x * brightness).clamp(0.0, 1.0)
            mean = x.mean()
            x = ((x - mean) * contrast + mean).clamp(0.0, 1.0)
        if rng.random() < self.blur_p:
            x = gaussian_blur(x, rng.uniform(*self.blur_sigma))
        if self.hflip and rng.random() < 0.5:
            x = x.flip(-1)
        return self.normalise(x)

    def plain(self, image: np.ndarray) -> torch.Tensor:
        """No augmentation: the whole image resized (stretched) to size × size and normalised (for previews)."""
        return self.normalise(self.resize(torch.from_numpy(np.ascontiguousarray(image, np.float32))))


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an (H, W) tensor, kernel radius ceil(3 sigma), reflected borders."""
    radius = max(1, min(math.ceil(3 * sigma), min(image.shape) - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(image[None, None], (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x[0, 0]
