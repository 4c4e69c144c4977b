"""GMML image corruption (the loss, GMML's L1 over corrupted pixels, lives with the model: `reconstruction_loss`).

Group-masked model learning (Atito et al., SiT / GMML; Anwar et al., SPCXR) corrupts each training image
with a union of random rectangles and trains the network to reconstruct the clean image, with an L1 loss
on the corrupted pixels only.

Semantics (as in the official GMML code, datasets/datasets_utils.py and main.py):

* per image a target corrupted-area fraction is drawn from U[min(0.5, p), p] (p = ``mask_ratio``);
* rectangles, each with height uniform in [1, max_rect_frac * H] and width uniform in
  [1, max_rect_frac * W], are added at random positions until their union covers at least the target
  (overlap allowed); with ``align`` the rectangles are snapped to the ``align`` x ``align`` patch grid;
* the union is filled with N(0, 1) noise (GMML default, in the normalised image) or zeros (SiT default);
* with probability ``paste_prob`` per image (batches of two or more) the image instead receives
  rectangles copied from another, randomly chosen, image of the batch, until ``paste_frac`` of its area
  is covered; its mask then marks the pasted pixels.

Everything is batched on the images' device, with no Python loop over pixels or images: rectangles are
drawn in rounds of 62 per image (each one bit of an int64), the union's area after each rectangle is
computed for all images at once (see ``_cover``), and each image keeps its rectangles up to the first one
that reaches its target; images still short of it get another round (usually one or two rounds in all).
Every random draw uses the ``generator`` passed in, so a seed reproduces the output bitwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models.spcxr.gmml_head import gmml_reconstruction_loss as reconstruction_loss

__all__ = ["CorruptionConfig", "corrupt", "reconstruction_loss", "sample_rectangles"]

FILLS = ("noise", "zeros")

# rectangles per round and image: one bit each in an int64, plus a sentinel bit (the sign bit unused)
_ROUND = 62


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class CorruptionConfig:
    """How :func:`corrupt` corrupts a batch (defaults: the GMML pretraining recipe)."""

    mask_ratio: float = 0.75
    """p: per-image target corrupted-area fraction ~ U[min(0.5, p), p]; in [0, 1)."""
    max_rect_frac: float = 0.3
    """each rectangle up to this fraction of H and of W; in (0, 1]."""
    fill: str = "noise"
    """"noise": N(0, 1) in the normalised image (GMML default); "zeros" (SiT default)."""
    paste_prob: float = 0.5
    """probability per image of instead pasting rectangles from another image of the batch; in [0, 1]."""
    paste_frac: float = 0.3
    """area fraction covered by pasted rectangles; in [0, 1)."""
    align: int | None = None
    """None: pixel-aligned rectangles; an int >= 1 (the patch size): rectangles on that grid."""

    def __post_init__(self) -> None:
        if not (_is_real(self.mask_ratio) and 0.0 <= self.mask_ratio < 1.0):
            raise ValueError(f"mask_ratio must be a number in [0, 1), got {self.mask_ratio!r}")
        if not (_is_real(self.max_rect_frac) and 0.0 < self.max_rect_frac <= 1.0):
            raise ValueError(f"max_rect_frac must be a number in (0, 1], got {self.max_rect_frac!r}")
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill!r}")
        if not (_is_real(self.paste_prob) and 0.0 <= self.paste_prob <= 1.0):
            raise ValueError(f"paste_prob must be a number in [0, 1], got {self.paste_prob!r}")
        if not (_is_real(self.paste_frac) and 0.0 <= self.paste_frac < 1.0):
            raise ValueError(f"paste_frac must be a number in [0, 1), got {self.paste_frac!r}")
        if self.align is not None and not (
            isinstance(self.align, int) and not isinstance(self.align, bool) and self.align >= 1
        ):
            raise ValueError(f"align must be None or an integer >= 1, got {self.align!r}")


def _grid(height: int, width: int, config: CorruptionConfig) -> tuple[int, int, int, int, int]:
    """(cell size, grid rows, grid cols, max rectangle rows, max rectangle cols), sizes in cells."""
    cell = 1 if config.align is None else config.align
    if height % cell or width % cell:
        raise ValueError(
            f"align={config.align} requires the image height and width to be multiples of it, "
            f"got {height}x{width}"
        )
    rows, cols = height // cell, width // cell
    # the small epsilon keeps e.g. 0.3 * 160 = 47.999... from flooring to 47
    max_h = max(1, math.floor(config.max_rect_frac * height / cell + 1e-6))
    max_w = max(1, math.floor(config.max_rect_frac * width / cell + 1e-6))
    return cell, rows, cols, min(max_h, rows), min(max_w, cols)


def _draw(
    n: int, k: int, rows: int, cols: int, max_h: int, max_w: int,
    generator: torch.Generator | None, device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """n x k rectangles in grid cells: (top, left, height, width), each (n, k) int64, fully inside."""
    h = torch.randint(1, max_h + 1, (n, k), generator=generator, device=device)
    w = torch.randint(1, max_w + 1, (n, k), generator=generator, device=device)
    u = torch.rand((2, n, k), generator=generator, device=device)
    top = (u[0] * (rows - h + 1)).long().clamp_max_(rows - h)
    left = (u[1] * (cols - w + 1)).long().clamp_max_(cols - w)
    return top, left, h, w


def sample_rectangles(
    batch_size: int, height: int, width: int, count: int,
    config: CorruptionConfig = CorruptionConfig(), *,
    generator: torch.Generator | None = None, device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw ``count`` rectangles per image the way :func:`corrupt` does.

    Returns an int64 tensor (batch_size, count, 4) of (top, left, height, width) in pixels.
    """
    cell, rows, cols, max_h, max_w = _grid(height, width, config)
    device = torch.device(device) if device is not None else (
        generator.device if generator is not None else torch.device("cpu"))
    top, left, h, w = _draw(batch_size, count, rows, cols, max_h, max_w, generator, device)
    return torch.stack((top, left, h, w), dim=-1) * cell


def _interval_bits(start: torch.Tensor, size: torch.Tensor, length: int, bits: torch.Tensor) -> torch.Tensor:
    """(m, length) int64: bit j set on the lines [start_j, start_j + size_j) of rectangle j.

    A difference array (+2**j at the start, -2**j past the end) cumulated along the axis; every partial
    sum is a sum of distinct powers of two below 2**63, so this is exact."""
    m = start.shape[0]
    diff = torch.zeros(m, length + 1, dtype=torch.long, device=start.device)
    steps = bits.expand(m, -1)
    diff.scatter_add_(1, start, steps).scatter_add_(1, start + size, -steps)
    return diff[:, :length].cumsum(1)


def _edges(start: torch.Tensor, size: torch.Tensor, length: int) -> torch.Tensor:
    """(m, e) sorted boundaries along one axis, 0 and ``length`` included, of intervals inside which no
    rectangle starts or ends: the rectangles' edges (some intervals empty) or, when that is no coarser,
    every grid line."""
    m, k = start.shape
    if length + 1 <= 2 * k + 2:
        return torch.arange(length + 1, device=start.device).expand(m, length + 1)
    ends = torch.full((m, 1), length, dtype=start.dtype, device=start.device)
    edges = torch.cat((torch.zeros_like(ends), start, start + size, ends), dim=1)
    return edges.sort(dim=1).values


def _cell_index(edges: torch.Tensor, length: int) -> torch.Tensor:
    """(m, length): index of the non-empty elementary interval holding each grid line."""
    lines = torch.arange(length, device=edges.device).expand(edges.shape[0], length).contiguous()
    return torch.searchsorted(edges.contiguous(), lines, right=True) - 1


def _box_sums(covered: torch.Tensor, y_edges: torch.Tensor, x_edges: torch.Tensor) -> torch.Tensor:
    """Number of covered cells inside each elementary box, (m, ny, nx), from an integral image."""
    cols = covered.shape[2]
    integral = covered.to(torch.int32).cumsum_(1).cumsum_(2)  # counts <= rows * cols: int32 is enough
    integral = torch.nn.functional.pad(integral, (1, 0, 1, 0))  # (m, rows + 1, cols + 1)
    at_rows = integral.gather(1, y_edges[:, :, None].expand(-1, -1, cols + 1))
    corners = at_rows.gather(2, x_edges[:, None, :].expand(-1, y_edges.shape[1], -1))
    return corners[:, 1:, 1:] - corners[:, :-1, 1:] - corners[:, 1:, :-1] + corners[:, :-1, :-1]


def _cover(
    targets: torch.Tensor, rows: int, cols: int, max_h: int, max_w: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Union of random rectangles per image covering at least ``targets`` (fractions) of the grid.

    Returns (n, rows, cols) bool. Rectangles are added in draw order and each image stops at the first
    rectangle whose addition reaches its target.

    Per round, every image draws k rectangles; rectangle j is bit j of an int64, so
    ``row_bits[y] & col_bits[x]`` is the set of the round's rectangles covering cell (y, x) and its lowest
    set bit the first of them. Those sets are constant on the elementary boxes cut out by the rectangles'
    edges (at most (2k + 1)^2 per image, whatever the image size), so the work is done per box, weighted by
    the box's area (minus cells covered in earlier rounds): a per-image histogram of first rectangles,
    cumulated over j, is the union's area after each rectangle.
    """
    n, device = targets.shape[0], targets.device
    k = _ROUND
    need = torch.ceil(targets * (rows * cols)).long()  # cells
    covered = torch.zeros(n, rows, cols, dtype=torch.bool, device=device)
    count = torch.zeros(n, dtype=torch.long, device=device)
    # bit j < k: rectangle j of the round; bit k: a sentinel set everywhere, so that a box covered by no
    # rectangle of the round has "first rectangle" k
    bits = torch.bitwise_left_shift(torch.ones(k + 1, dtype=torch.long, device=device),
                                    torch.arange(k + 1, device=device))
    sentinel = 1 << k

    active = torch.nonzero(count < need).squeeze(1)
    first_round = True
    while active.numel() > 0:  # rounds, not pixels: usually one or two
        m = active.numel()
        top, left, h, w = _draw(m, k, rows, cols, max_h, max_w, generator, device)
        row_bits = _interval_bits(top, h, rows, bits[:k]) | sentinel  # (m, rows): rectangles per row
        col_bits = _interval_bits(left, w, cols, bits[:k]) | sentinel  # (m, cols)

        y_edges, x_edges = _edges(top, h, rows), _edges(left, w, cols)
        box_bits = (row_bits.gather(1, y_edges[:, :-1].clamp_max(rows - 1))[:, :, None]
                    & col_bits.gather(1, x_edges[:, :-1].clamp_max(cols - 1))[:, None, :])
        box_area = y_edges.diff(dim=1)[:, :, None] * x_edges.diff(dim=1)[:, None, :]
        if not first_round:  # cells covered in an earlier round are not new
            box_area = box_area - _box_sums(covered[active], y_edges, x_edges)
        # the lowest set bit 2**j marks the first rectangle covering the box; j + 127 is the exponent
        # field of its (exact) float32 value
        lowest = box_bits.neg().bitwise_and_(box_bits)
        first = (lowest.to(torch.float32).view(torch.int32) >> 23).long()
        offsets = torch.arange(m, device=device) * (k + 1)
        first += (offsets - 127)[:, None, None]  # image i, rectangle j -> i * (k + 1) + j
        hist = torch.zeros(m * (k + 1), dtype=torch.long, device=device)
        hist = hist.scatter_add_(0, first.view(-1), box_area.reshape(-1)).view(m, k + 1)
        area = hist[:, :k].cumsum(1) + count[active, None]  # (m, k): union after rectangle j
        reached = area >= need[active, None]  # monotone in j
        done = reached[:, -1]
        last = (k - reached.sum(1)).clamp_max_(k - 1)  # first j reaching the target, else k - 1
        box_keep = first <= (offsets + last)[:, None, None]
        # boxes -> cells
        keep = box_keep.gather(1, _cell_index(y_edges, rows)[:, :, None].expand(-1, -1, box_keep.shape[2]))
        keep = keep.gather(2, _cell_index(x_edges, cols)[:, None, :].expand(-1, rows, -1))
        if first_round and m == n:
            covered = keep
        else:
            covered[active] = covered[active] | keep
        count[active] = area.gather(1, last[:, None]).squeeze(1)
        active = active[~done]
        first_round = False
    return covered


def corrupt(
    images: torch.Tensor,
    config: CorruptionConfig = CorruptionConfig(),
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GMML-corrupt a batch of (normalised) images.

    Args:
        images: (B, C, H, W) floating tensor on any device.
        config: the corruption settings.
        generator: source of every random draw (on the images' device); the same seed gives bitwise
            the same output. None uses torch's default generator for that device.

    Returns:
        ``(corrupted, mask)``: corrupted (B, C, H, W), same dtype and device as ``images`` (detached: a
        corruption is data, not part of the graph); mask (B, 1, H, W) bool, True where a pixel was
        corrupted (noise / zeros, or pasted for the images that got pasted rectangles).

    Raises:
        ValueError: not a floating (B, C, H, W) tensor; H or W not a multiple of ``config.align``; a
            generator on another device type.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError("images must be a floating-point tensor of shape (B, C, H, W)")
    if not isinstance(config, CorruptionConfig):
        raise TypeError(f"config must be a CorruptionConfig, got {type(config).__name__}")
    device = images.device
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but images are on {device}; "
            f"create it with torch.Generator(device=images.device)"
        )
    b, c, height, width = images.shape
    cell, rows, cols, max_h, max_w = _grid(height, width, config)
    images = images.detach()
    if b == 0:
        return images.clone(), torch.zeros(0, 1, height, width, dtype=torch.bool, device=device)

    # which images get pasted rectangles, and from which other image
    if b > 1:
        paste = torch.rand(b, generator=generator, device=device) < config.paste_prob
        shift = torch.randint(1, b, (b,), generator=generator, device=device)
        donor = (torch.arange(b, device=device) + shift) % b
    else:
        paste = torch.zeros(b, dtype=torch.bool, device=device)
        donor = torch.zeros(b, dtype=torch.long, device=device)

    lo = min(0.5, config.mask_ratio)
    targets = lo + (config.mask_ratio - lo) * torch.rand(b, generator=generator, device=device)
    targets = torch.where(paste, torch.full_like(targets, config.paste_frac), targets)

    grid_mask = _cover(targets, rows, cols, max_h, max_w, generator)
    if cell > 1:
        grid_mask = grid_mask[:, :, None, :, None].expand(b, rows, cell, cols, cell)
    mask = grid_mask.reshape(b, 1, height, width)

    # fill values, built in place in the output: noise or zeros, donor pixels for the pasted images
    corrupted = torch.empty_like(images)
    if config.fill == "noise":
        corrupted.normal_(generator=generator)
    else:
        corrupted.zero_()
    pasted = torch.nonzero(paste).squeeze(1)
    if pasted.numel() > 0:
        corrupted.index_copy_(0, pasted, images.index_select(0, donor[pasted]))
    torch.where(mask, corrupted, images, out=corrupted)
    return corrupted, mask
