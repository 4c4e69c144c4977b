import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dataclasses  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from spcxr_hub.training import gmml  # noqa: E402
from spcxr_hub.training.gmml import CorruptionConfig, corrupt, reconstruction_loss, sample_rectangles  # noqa: E402

NO_PASTE = CorruptionConfig(paste_prob=0.0)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _coverage(mask: torch.Tensor) -> torch.Tensor:
    return mask.float().mean(dim=(1, 2, 3))


# ----------------------------------------------------------------------------------------- corrupted area


@pytest.mark.parametrize("p", [0.3, 0.5, 0.75, 0.9])
def test_coverage_fraction_stays_within_target_interval(p):
    images = torch.randn(256, 1, 64, 64)
    _, mask = corrupt(images, dataclasses.replace(NO_PASTE, mask_ratio=p), generator=_gen())
    cov = _coverage(mask)
    # at least the target's lower end; at most its upper end plus part of one last rectangle (<= 0.3 x 0.3)
    assert cov.min() >= min(0.5, p) - 1e-9
    assert cov.max() <= p + 0.09


@pytest.mark.parametrize("p", [0.6, 0.75, 0.9])
def test_coverage_fraction_spans_the_interval_with_mean_near_its_middle(p):
    images = torch.randn(512, 1, 48, 48)
    _, mask = corrupt(images, dataclasses.replace(NO_PASTE, mask_ratio=p), generator=_gen(1))
    cov = _coverage(mask)
    lo = min(0.5, p)
    assert cov.min() < lo + 0.03
    assert cov.max() > p - 0.03
    assert abs(cov.mean().item() - (lo + p) / 2) < 0.03
    # the spread is that of a uniform draw, not a constant
    assert abs(cov.std().item() - (p - lo) / 12**0.5) < 0.03


def test_coverage_below_one_half_is_the_ratio_itself():
    images = torch.randn(256, 1, 64, 64)
    _, mask = corrupt(images, dataclasses.replace(NO_PASTE, mask_ratio=0.2), generator=_gen())
    cov = _coverage(mask)
    assert cov.min() >= 0.2
    assert cov.max() <= 0.2 + 0.09
    assert cov.mean() < 0.24  # a fixed target, overshot by part of the last rectangle only


def test_zero_mask_ratio_leaves_images_untouched():
    images = torch.randn(4, 3, 32, 32)
    out, mask = corrupt(images, dataclasses.replace(NO_PASTE, mask_ratio=0.0), generator=_gen())
    assert not mask.any()
    assert torch.equal(out, images)


def test_union_is_rectangles_added_in_order_until_target_is_reached(monkeypatch):
    """The vectorised union equals adding the drawn rectangles one by one until the target is covered."""
    drawn = []
    real_draw = gmml._draw

    def spy(*args, **kwargs):
        rects = real_draw(*args, **kwargs)
        drawn.append(rects)
        return rects

    monkeypatch.setattr(gmml, "_draw", spy)
    n, rows, cols = 6, 40, 150  # compressed boxes along columns, every line along rows
    targets = torch.rand(n, generator=_gen(3)) * 0.4 + 0.5
    covered = gmml._cover(targets, rows, cols, 6, 20, _gen(4))  # small rectangles: several rounds
    assert len(drawn) >= 3

    expected = torch.zeros(n, rows, cols, dtype=torch.bool)
    need = torch.ceil(targets * rows * cols)
    pending = list(range(n))
    for top, left, h, w in drawn:
        assert top.shape[0] == len(pending)
        for r, i in enumerate(pending):
            for j in range(top.shape[1]):
                expected[i, top[r, j]:top[r, j] + h[r, j], left[r, j]:left[r, j] + w[r, j]] = True
                if expected[i].sum() >= need[i]:
                    break
        pending = [i for i in pending if expected[i].sum() < need[i]]
    assert not pending
    assert torch.equal(covered, expected)


# ---------------------------------------------------------------------------------------------- rectangles


def test_rectangle_sizes_and_positions_stay_within_bounds():
    height, width = 100, 60
    rects = sample_rectangles(64, height, width, 200, CorruptionConfig(), generator=_gen())
    assert rects.shape == (64, 200, 4) and rects.dtype == torch.long
    top, left, h, w = rects.unbind(-1)
    assert h.min() == 1 and h.max() == 30  # uniform over [1, 0.3 H]: both ends are drawn
    assert w.min() == 1 and w.max() == 18
    assert top.min() >= 0 and (top + h).max() <= height
    assert left.min() >= 0 and (left + w).max() <= width
    assert (top + h).max() == height and top.min() == 0  # positions reach both borders


def test_single_rectangle_mask_is_one_bounded_rectangle():
    # a target of one pixel: the first rectangle reaches it, so each mask is exactly one rectangle
    images = torch.randn(64, 1, 100, 60)
    _, mask = corrupt(images, dataclasses.replace(NO_PASTE, mask_ratio=1e-6), generator=_gen())
    heights, widths = [], []
    for m in mask[:, 0]:
        rows = m.any(1).nonzero().squeeze(1)
        cols = m.any(0).nonzero().squeeze(1)
        box = torch.zeros_like(m)
        box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        assert torch.equal(m, box)
        heights.append(len(rows))
        widths.append(len(cols))
    assert 1 <= min(heights) and max(heights) <= 30
    assert 1 <= min(widths) and max(widths) <= 18
    assert max(heights) > 15 and max(widths) > 9  # sizes range over the interval


def test_align_snaps_rectangles_and_mask_to_the_patch_grid():
    config = CorruptionConfig(align=16)
    rects = sample_rectangles(32, 64, 96, 50, config, generator=_gen())
    assert (rects % 16 == 0).all()
    assert rects[..., 2].min() == 16 and rects[..., 3].min() == 16

    images = torch.randn(16, 3, 64, 96)
    out, mask = corrupt(images, config, generator=_gen())
    cells = mask[:, 0].reshape(16, 4, 16, 6, 16)
    assert (cells.all(dim=(2, 4)) == cells.any(dim=(2, 4))).all()  # constant on every 16 x 16 cell
    assert mask.any() and not mask.all()


def test_align_must_divide_the_image_size():
    with pytest.raises(ValueError, match="align"):
        corrupt(torch.randn(2, 1, 60, 64), CorruptionConfig(align=16))


# -------------------------------------------------------------------------------------------------- fills


def test_noise_fill_is_standard_normal_inside_mask_and_leaves_outside_untouched():
    images = torch.rand(32, 3, 64, 64) + 100.0  # far from N(0, 1), to tell them apart
    out, mask = corrupt(images, NO_PASTE, generator=_gen())
    inside = mask.expand_as(images)
    noise = out[inside]
    assert noise.numel() > 100_000
    assert abs(noise.mean().item()) < 0.02
    assert abs(noise.std().item() - 1.0) < 0.02
    assert (noise < 50).all()  # every masked pixel of every channel was replaced
    assert torch.equal(out[~inside], images[~inside])


def test_noise_differs_between_channels():
    out, mask = corrupt(torch.zeros(4, 3, 32, 32), NO_PASTE, generator=_gen())
    inside = mask[:, 0]
    assert not torch.equal(out[:, 0][inside], out[:, 1][inside])


def test_zeros_fill_sets_masked_pixels_to_zero():
    images = torch.rand(8, 3, 32, 48) + 1.0
    out, mask = corrupt(images, dataclasses.replace(NO_PASTE, fill="zeros"), generator=_gen())
    inside = mask.expand_as(images)
    assert inside.any()
    assert (out[inside] == 0).all()
    assert torch.equal(out[~inside], images[~inside])


# -------------------------------------------------------------------------------------------------- paste


def _index_coded(b: int, c: int = 1, h: int = 32, w: int = 32) -> torch.Tensor:
    """Image i: i + 100 plus a small pixel pattern, so a value names its image (noise stays far below)."""
    pattern = torch.rand(1, c, h, w) * 0.5
    return torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1) + 100.0 + pattern


def test_paste_copies_pixels_from_another_image_of_the_batch():
    images = _index_coded(12, c=3)
    out, mask = corrupt(images, CorruptionConfig(paste_prob=1.0), generator=_gen())
    for i in range(12):
        inside = mask[i].expand_as(images[i])
        assert inside.any()
        donor = int(out[i][inside][0].floor().item()) - 100
        assert donor != i
        assert torch.equal(out[i][inside], images[donor][inside])  # the same pixels of that other image
        assert torch.equal(out[i][~inside], images[i][~inside])


def test_paste_covers_about_paste_frac_of_the_image():
    images = _index_coded(256)
    _, mask = corrupt(images, CorruptionConfig(paste_prob=1.0, paste_frac=0.3), generator=_gen())
    cov = _coverage(mask)
    assert cov.min() >= 0.3
    assert cov.max() <= 0.3 + 0.09
    assert cov.mean() < 0.34


def test_paste_happens_for_about_half_of_the_images():
    images = _index_coded(400, h=16, w=16)
    out, mask = corrupt(images, CorruptionConfig(), generator=_gen())
    pasted = torch.tensor([bool((out[i][mask[i].expand_as(out[i])] > 50).all()) for i in range(400)])
    assert abs(pasted.float().mean().item() - 0.5) < 0.1  # 4 standard deviations of 400 coin flips
    # the others got noise over the GMML area, the pasted ones about paste_frac
    cov = _coverage(mask)
    assert cov[~pasted].min() >= 0.5
    assert cov[pasted].max() < 0.4


def test_single_image_batch_is_never_pasted():
    images = _index_coded(1)
    out, mask = corrupt(images, CorruptionConfig(paste_prob=1.0), generator=_gen())
    assert _coverage(mask).item() >= 0.5
    assert (out[mask.expand_as(out)] < 50).all()


# ------------------------------------------------------------------------------------------ reproducibility


def test_same_seed_reproduces_output_bitwise():
    images = torch.randn(8, 1, 64, 64)
    out1, mask1 = corrupt(images, generator=_gen(7))
    out2, mask2 = corrupt(images, generator=_gen(7))
    assert torch.equal(mask1, mask2)
    assert torch.equal(out1.view(torch.int32), out2.view(torch.int32))


def test_different_seed_gives_different_output():
    images = torch.randn(8, 1, 64, 64)
    out1, mask1 = corrupt(images, generator=_gen(7))
    out2, mask2 = corrupt(images, generator=_gen(8))
    assert not torch.equal(mask1, mask2)
    assert not torch.equal(out1, out2)


def test_generator_on_another_device_type_is_rejected():
    meta_images = torch.empty(2, 1, 16, 16, device="meta")
    with pytest.raises(ValueError, match="generator"):
        corrupt(meta_images, generator=_gen())


# ------------------------------------------------------------------------------------------ shapes, dtypes


@pytest.mark.parametrize("shape", [(3, 1, 64, 64), (3, 3, 64, 64), (3, 1, 48, 80), (3, 3, 80, 32)])
def test_works_for_one_and_three_channels_and_non_square_images(shape):
    images = torch.rand(shape) + 1.0
    out, mask = corrupt(images, dataclasses.replace(NO_PASTE, fill="zeros"), generator=_gen())
    b, c, h, w = shape
    assert out.shape == shape and mask.shape == (b, 1, h, w) and mask.dtype == torch.bool
    assert torch.equal(out == 0, mask.expand_as(out))  # every channel corrupted at the same pixels
    assert ((_coverage(mask) >= 0.5) & (_coverage(mask) <= 0.84)).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_output_keeps_input_dtype_and_device(dtype):
    images = torch.randn(4, 1, 32, 32, dtype=dtype)
    out, mask = corrupt(images, generator=_gen())
    assert out.dtype == dtype and out.device == images.device
    assert torch.equal(out[~mask.expand_as(out)], images[~mask.expand_as(images)])


@pytest.mark.parametrize("bad", [torch.randn(1, 32, 32), torch.ones(2, 1, 16, 16, dtype=torch.long)])
def test_corrupt_rejects_non_float_or_non_4d_input(bad):
    with pytest.raises(ValueError, match="images"):
        corrupt(bad)


# -------------------------------------------------------------------------------------------------- loss


def _loss_example():
    target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]]])  # (1, 2, 2, 2)
    mask = torch.tensor([[[[True, True], [False, False]]]])  # (1, 1, 2, 2): top row corrupted
    return target, mask


def test_loss_known_example_averages_over_corrupted_pixels_of_all_channels():
    target, mask = _loss_example()
    loss = reconstruction_loss(torch.zeros_like(target), target, mask)
    assert loss.item() == pytest.approx((1 + 2 + 10 + 20) / 4)


def test_loss_ignores_reconstruction_outside_the_mask():
    target, mask = _loss_example()
    recon = torch.zeros_like(target)
    changed = recon.clone()
    changed[:, :, 1, :] = 1000.0  # bottom row: not corrupted
    assert torch.equal(reconstruction_loss(recon, target, mask), reconstruction_loss(changed, target, mask))
    changed[:, 0, 0, 0] = 1.0  # a corrupted pixel: now it counts
    assert reconstruction_loss(changed, target, mask) < reconstruction_loss(recon, target, mask)


def test_loss_over_all_pixels_when_masked_only_is_false():
    target, mask = _loss_example()
    loss = reconstruction_loss(torch.zeros_like(target), target, mask, masked_only=False)
    assert loss.item() == pytest.approx(110 / 8)


def test_loss_with_empty_mask_is_zero_and_keeps_the_graph():
    recon = torch.randn(2, 1, 8, 8, requires_grad=True)
    loss = reconstruction_loss(recon, torch.randn(2, 1, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.bool))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert recon.grad is not None and torch.equal(recon.grad, torch.zeros_like(recon))


def test_loss_gradient_reaches_only_corrupted_pixels():
    target, mask = _loss_example()
    recon = torch.zeros_like(target, requires_grad=True)
    reconstruction_loss(recon, target, mask).backward()
    assert torch.equal(recon.grad != 0, mask.expand_as(recon))


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mask_ratio", -0.1), ("mask_ratio", 1.0), ("mask_ratio", float("nan")), ("mask_ratio", "0.75"),
        ("max_rect_frac", 0.0), ("max_rect_frac", 1.5),
        ("fill", "blur"),
        ("paste_prob", -0.01), ("paste_prob", 1.01),
        ("paste_frac", -0.1), ("paste_frac", 1.0),
        ("align", 0), ("align", 16.0), ("align", True),
    ],
)
def test_invalid_config_value_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        CorruptionConfig(**{field: value})


def test_defaults_follow_the_gmml_recipe():
    config = CorruptionConfig()
    assert (config.mask_ratio, config.max_rect_frac, config.fill) == (0.75, 0.3, "noise")
    assert (config.paste_prob, config.paste_frac, config.align) == (0.5, 0.3, None)
