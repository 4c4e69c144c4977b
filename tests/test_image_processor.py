import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.modeling_outputs import SemanticSegmenterOutput

from spcxr_hub import SpcxrImageProcessor

from spcxr_hub.data import synthetic
from spcxr_hub.models.spcxr.imaging import ImageDecodeError

SIZE = {"height": 64, "width": 64}


@pytest.fixture(scope="module")
def film():
    return synthetic.generate(seed=1, size=(120, 100)).image


def as_pil(image, mode):
    if mode in ("L", "RGB", "RGBA"):
        return Image.fromarray((image * 255).round().astype(np.uint8)).convert(mode)
    if mode == "I;16":
        return Image.fromarray((image * 4095).round().astype(np.uint16))
    if mode == "I":
        return Image.fromarray((image * 4095).round().astype(np.int32), mode="I")
    return Image.fromarray(image.astype(np.float32), mode="F")


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16", "I", "F"])
def test_every_pil_mode_gives_one_channel_pixels_of_the_same_picture(film, mode):
    processor = SpcxrImageProcessor(size=SIZE)
    reference = processor(film)["pixel_values"]
    pixels = processor(as_pil(film, mode))["pixel_values"]
    assert pixels.shape == (1, 1, 64, 64) and pixels.dtype == torch.float32
    # 8-bit modes quantise; min-max scaling of deep modes may stretch slightly: compare up to that.
    assert torch.corrcoef(torch.stack([reference.flatten(), pixels.flatten()]))[0, 1] > 0.99


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_numpy_arrays_of_any_dtype(film, dtype):
    array = film if dtype in (np.float32, np.float64) else film * np.iinfo(dtype).max
    pixels = SpcxrImageProcessor(size=SIZE)(array.astype(dtype))["pixel_values"]
    assert pixels.shape == (1, 1, 64, 64)


def test_file_paths_png8_png16_and_dicom_give_the_same_picture(film, tmp_path):
    processor = SpcxrImageProcessor(size=SIZE)
    paths = [
        synthetic.write_png8(tmp_path / "a.png", film),
        synthetic.write_png16(tmp_path / "b.png", film),
        synthetic.write_dicom(tmp_path / "c.dcm", film),
        synthetic.write_dicom(tmp_path / "d.dcm", film, photometric="MONOCHROME1"),
    ]
    batch = processor([str(p) for p in paths])["pixel_values"]
    assert batch.shape == (4, 1, 64, 64)
    for other in batch[1:]:
        torch.testing.assert_close(other, batch[0], atol=0.05, rtol=0)


def test_normalisation_is_documented_mean_and_std():
    processor = SpcxrImageProcessor(size=SIZE)
    assert (processor.image_mean, processor.image_std) == ([0.5], [0.25])
    pixels = processor(np.full((64, 64), 0.75, dtype=np.float32))["pixel_values"]
    torch.testing.assert_close(pixels, torch.ones(1, 1, 64, 64))


def test_pad_mode_keeps_aspect_ratio_on_a_black_canvas():
    wide = np.ones((32, 64), dtype=np.float32)
    pixels = SpcxrImageProcessor(size=SIZE, resize_mode="pad", do_normalize=False)(wide)["pixel_values"][0, 0]
    assert torch.all(pixels[:16] == 0) and torch.all(pixels[48:] == 0)
    assert torch.allclose(pixels[16:48], torch.ones(32, 64), atol=1e-3)


def test_stretch_mode_fills_the_whole_input():
    wide = np.ones((32, 64), dtype=np.float32)
    pixels = SpcxrImageProcessor(size=SIZE, resize_mode="stretch", do_normalize=False)(wide)["pixel_values"]
    assert torch.allclose(pixels, torch.ones(1, 1, 64, 64), atol=1e-3)


def test_unknown_resize_mode_is_rejected():
    with pytest.raises(ValueError, match="resize_mode"):
        SpcxrImageProcessor(resize_mode="crop")


@pytest.mark.parametrize("resize_mode", ["pad", "stretch"])
def test_post_processing_maps_masks_back_to_the_original_film(resize_mode):
    processor = SpcxrImageProcessor(size=SIZE, resize_mode=resize_mode, do_normalize=False)
    original = np.zeros((40, 80), dtype=np.float32)
    original[:, 40:] = 1.0  # right half is "foreground"
    pixels = processor(original)["pixel_values"]
    # A perfect model: logits that say foreground exactly where the processed input is bright.
    logits = torch.cat([0.5 - pixels, pixels - 0.5], dim=1)
    (mask,) = processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), target_sizes=[(40, 80)])
    assert mask.shape == (40, 80) and mask.dtype == torch.long
    expected = torch.from_numpy(original).long()
    assert (mask == expected).float().mean() > 0.97


def test_post_processing_without_target_sizes_keeps_the_model_size():
    processor = SpcxrImageProcessor(size=SIZE)
    (mask,) = processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=torch.randn(1, 3, 64, 64)))
    assert mask.shape == (64, 64)


def test_undecodable_input_names_the_file(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ImageDecodeError, match="notes.png"):
        SpcxrImageProcessor(size=SIZE)(str(bad))


def test_pixel_limit_is_configurable(tmp_path):
    path = synthetic.write_png8(tmp_path / "big.png", np.zeros((200, 200), dtype=np.float32))
    with pytest.raises(ImageDecodeError, match="big.png"):
        SpcxrImageProcessor(size=SIZE, max_pixels=10_000)(str(path))


@pytest.mark.parametrize("target_sizes", [None, [(40, 80), (50, 30)]])
def test_post_processing_can_return_the_scores_beside_each_mask(target_sizes):
    processor = SpcxrImageProcessor(size=SIZE)
    logits = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    outputs = SemanticSegmenterOutput(logits=logits)
    masks = processor.post_process_semantic_segmentation(outputs, target_sizes=target_sizes)
    scored = processor.post_process_semantic_segmentation(outputs, target_sizes=target_sizes, return_segmentation_scores=True)
    assert len(scored) == 2
    for mask, item in zip(masks, scored):
        assert torch.equal(item.segmentation, mask)
        assert item.segmentation_scores.shape == (3, *mask.shape)
        assert torch.equal(item.segmentation_scores.argmax(dim=0), mask)
    if target_sizes is None:  # no resizing: the scores are the logits themselves (no softmax, as transformers')
        torch.testing.assert_close(scored[0].segmentation_scores, logits[0])
