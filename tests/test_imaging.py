import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import io  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image, ImageFile  # noqa: E402
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from spcxr_hub.models.spcxr import imaging  # noqa: E402
from spcxr_hub.models.spcxr.imaging import (  # noqa: E402
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageDecodeError,
    is_dicom,
    list_images,
    load_image,
)

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


# ----------------------------------------------------------------------------------------------------------------------
# Helpers and fixtures


def ramp(height=6, width=8, lo=0, hi=4095, dtype=np.uint16):
    """A (height, width) image whose values rise from `lo` to `hi` in raster order."""
    return np.linspace(lo, hi, height * width).reshape(height, width).round().astype(dtype)


def min_max(values):
    values = np.asarray(values, dtype=np.float64)
    return ((values - values.min()) / (values.max() - values.min())).astype(np.float32)


def luminance(rgb):
    rgb = np.asarray(rgb, dtype=np.float64)
    return (299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2]) / 1000


def write_dicom(path, pixels=None, *, photometric="MONOCHROME2", bits_stored=12, **elements):
    """A minimal DICOM Part 10 file (Explicit VR Little Endian, DX for presentation) written with pydicom 3."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    if pixels is not None:
        ds.set_pixel_data(np.asarray(pixels), photometric, bits_stored, generate_instance_uid=False)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def write_png_header(path, width, height, bit_depth=8):
    """A PNG with a valid IHDR claiming width × height but (almost) no pixel data: only decoding would notice."""

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)))
    return path


def save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def decode_error(source, **kwargs):
    """Load `source` expecting an ImageDecodeError; check the message is one line; return the exception."""
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(source, **kwargs)
    message = str(excinfo.value)
    assert "\n" not in message, message
    return excinfo.value


def assert_names_file(error, path):
    message = str(error)
    assert message.startswith(str(path) + ": "), message
    assert path.name in message


@pytest.fixture
def png8(tmp_path):
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    return save(Image.fromarray(pixels), tmp_path / "film.png"), pixels


# ----------------------------------------------------------------------------------------------------------------------
# The module stays remote-code safe


@pytest.mark.parametrize("module", ["imaging", "dicom"])
def test_module_imports_only_stdlib_numpy_and_pillow_at_top_level(module):
    from transformers.dynamic_module_utils import get_imports

    imports = set(get_imports(str(Path(imaging.__file__).with_name(f"{module}.py"))))
    assert imports <= set(sys.stdlib_module_names) | {"numpy", "PIL"}, imports
    assert "pydicom" not in imports and "torch" not in imports and "spcxr_hub" not in imports


def test_default_pixel_limit_is_below_pillows_bomb_limit():
    assert DEFAULT_MAX_PIXELS == 40_000_000 < Image.MAX_IMAGE_PIXELS


def test_loading_leaves_pillows_truncated_image_setting_off(png8):
    load_image(png8[0])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ----------------------------------------------------------------------------------------------------------------------
# PIL images of every mode


PIL_MODE_IMAGES = {
    "1": lambda: Image.fromarray(np.eye(5, 7, dtype=bool)),
    "L": lambda: Image.fromarray(ramp(5, 7, 0, 255, np.uint8)),
    "LA": lambda: Image.fromarray(ramp(5, 7, 0, 255, np.uint8)).convert("LA"),
    "P": lambda: Image.fromarray(ramp(5, 7, 0, 255, np.uint8)).convert("RGB").quantize(8),
    "RGB": lambda: Image.fromarray(ramp(5, 7, 0, 255, np.uint8)).convert("RGB"),
    "RGBA": lambda: Image.fromarray(ramp(5, 7, 0, 255, np.uint8)).convert("RGBA"),
    "I;16": lambda: Image.fromarray(ramp(5, 7, 100, 3000)),
    "I;16B": lambda: Image.frombytes("I;16B", (7, 5), ramp(5, 7, 100, 3000).astype(">u2").tobytes()),
    "I": lambda: Image.fromarray(ramp(5, 7, -500, 3000, np.int32)),
    "F": lambda: Image.fromarray(ramp(5, 7, 0, 1, np.float32)),
}


@pytest.mark.parametrize("mode", sorted(PIL_MODE_IMAGES))
def test_every_pil_mode_loads_to_float32_height_by_width_in_unit_range(mode):
    image = PIL_MODE_IMAGES[mode]()
    assert image.mode == mode
    array = load_image(image)
    assert array.shape == (5, 7) and array.dtype == np.float32
    assert array.min() >= 0.0 and array.max() <= 1.0


def test_pil_l_image_is_divided_by_255_exactly():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(load_image(Image.fromarray(pixels)), pixels.astype(np.float32) / 255)


def test_pil_mode_1_gives_zeros_and_ones():
    mask = np.eye(5, 7, dtype=bool)
    np.testing.assert_array_equal(load_image(Image.fromarray(mask)), mask.astype(np.float32))


def test_grey_rgb_equals_its_l_image_exactly():
    grey = Image.fromarray(ramp(5, 7, 0, 255, np.uint8))
    np.testing.assert_array_equal(load_image(grey.convert("RGB")), load_image(grey))


def test_colour_is_converted_to_itu601_luminance_in_float():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    array = load_image(Image.fromarray(rgb))
    np.testing.assert_allclose(array, luminance(rgb) / 255, atol=1e-6)
    pillow_l = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32) / 255
    np.testing.assert_allclose(array, pillow_l, atol=1 / 255 + 1e-6)  # Pillow rounds to 8 bits


def test_alpha_is_dropped():
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgba = Image.fromarray(rgb).convert("RGBA")
    rgba.putalpha(7)
    np.testing.assert_array_equal(load_image(rgba), load_image(Image.fromarray(rgb)))
    grey = Image.fromarray(rgb[..., 0])
    np.testing.assert_array_equal(load_image(grey.convert("LA")), load_image(grey))


def test_palette_image_goes_through_its_palette():
    image = PIL_MODE_IMAGES["P"]()
    np.testing.assert_array_equal(load_image(image), load_image(image.convert("RGB")))


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_deep_integer_pil_modes_are_min_max_scaled(mode):
    image = PIL_MODE_IMAGES[mode]()
    np.testing.assert_allclose(load_image(image), min_max(np.asarray(image)), atol=1e-6)


def test_pil_float_image_inside_unit_range_is_kept():
    values = ramp(5, 7, 0, 1, np.float32) * 0.5 + 0.25
    np.testing.assert_array_equal(load_image(Image.fromarray(values)), values)


def test_pil_float_image_outside_unit_range_is_min_max_scaled():
    values = ramp(5, 7, -3, 7, np.float32)
    np.testing.assert_allclose(load_image(Image.fromarray(values)), min_max(values), atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# numpy arrays and tensors


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float32, np.float64, bool])
@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_every_array_dtype_and_shape_loads_to_float32_height_by_width_in_unit_range(dtype, channels):
    rng = np.random.default_rng(2)
    shape = (5, 7) if channels is None else (5, 7, channels)
    array = (rng.random(shape) * 200).astype(dtype)
    result = load_image(array)
    assert result.shape == (5, 7) and result.dtype == np.float32
    assert result.min() >= 0.0 and result.max() <= 1.0


def test_uint8_array_is_divided_by_255_exactly():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(load_image(pixels), pixels.astype(np.float32) / 255)


def test_single_channel_array_equals_the_plain_array():
    pixels = ramp(5, 7, 0, 255, np.uint8)
    np.testing.assert_array_equal(load_image(pixels[..., None]), load_image(pixels))


def test_uint16_array_is_min_max_scaled():
    pixels = ramp(5, 7, 200, 3000)
    np.testing.assert_allclose(load_image(pixels), min_max(pixels), atol=1e-6)
    assert load_image(pixels).min() == 0.0 and load_image(pixels).max() == 1.0


def test_int_array_is_min_max_scaled():
    pixels = ramp(5, 7, -1000, 1000, np.int64)
    np.testing.assert_allclose(load_image(pixels), min_max(pixels), atol=1e-6)


def test_float_array_inside_unit_range_is_kept():
    values = np.linspace(0.1, 0.6, 35).reshape(5, 7)
    np.testing.assert_array_equal(load_image(values), values.astype(np.float32))


def test_float_array_outside_unit_range_is_min_max_scaled():
    values = np.linspace(-2.0, 5.0, 35).reshape(5, 7)
    np.testing.assert_allclose(load_image(values), min_max(values), atol=1e-6)


def test_bool_array_gives_zeros_and_ones():
    mask = np.eye(5, 7, dtype=bool)
    np.testing.assert_array_equal(load_image(mask), mask.astype(np.float32))


def test_constant_deep_image_gives_zeros():
    np.testing.assert_array_equal(load_image(np.full((4, 4), 1234, np.uint16)), np.zeros((4, 4), np.float32))


def test_channel_first_array_is_accepted():
    rgb = np.random.default_rng(3).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(load_image(np.moveaxis(rgb, -1, 0)), load_image(rgb))


def test_tensor_is_read_by_duck_typing_without_torch():
    class FakeTensor:
        def __init__(self, array):
            self.array = array

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.array

    values = np.linspace(0, 1, 35, dtype=np.float32).reshape(1, 5, 7)
    np.testing.assert_array_equal(load_image(FakeTensor(values)), values[0])


@pytest.mark.parametrize("shape", [(5, 7, 5), (2, 5, 7, 3), (35,)])
def test_array_of_unsupported_shape_is_rejected(shape):
    error = decode_error(np.zeros(shape, np.float32))
    assert "numpy array" in str(error) and "shape" in str(error)


@pytest.mark.parametrize("dtype", [np.complex64, object, "U3"])
def test_array_of_unsupported_dtype_is_rejected(dtype):
    error = decode_error(np.zeros((5, 7), dtype=dtype))
    assert "dtype" in str(error)


@pytest.mark.parametrize("shape", [(0, 7), (5, 0), (0, 0, 3)])
def test_empty_array_is_rejected(shape):
    assert "empty" in str(decode_error(np.zeros(shape, np.uint8)))


def test_empty_pil_image_is_rejected():
    assert "empty" in str(decode_error(Image.new("L", (0, 0))))


def test_array_with_nan_is_rejected():
    values = np.zeros((5, 7), np.float32)
    values[2, 3] = np.nan
    assert "NaN" in str(decode_error(values))


def test_unsupported_input_type_is_rejected_naming_the_type():
    assert "int" in str(decode_error(42)).split(":")[0]


def test_pixel_limit_applies_to_in_memory_images():
    assert "max_pixels" in str(decode_error(np.zeros((20, 20), np.uint8), max_pixels=100))


# ----------------------------------------------------------------------------------------------------------------------
# Image files


def test_8bit_png_is_divided_by_255_exactly(png8):
    path, pixels = png8
    np.testing.assert_array_equal(load_image(path), pixels.astype(np.float32) / 255)


def test_path_may_be_a_string(png8):
    path, _ = png8
    np.testing.assert_array_equal(load_image(str(path)), load_image(path))


def test_16bit_png_is_min_max_scaled(tmp_path):
    pixels = ramp(6, 8, 300, 3800)  # 12 bits stored, far from 65535
    path = save(Image.fromarray(pixels), tmp_path / "film16.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    np.testing.assert_allclose(load_image(path), min_max(pixels), atol=1e-6)


def test_16bit_tiff_is_min_max_scaled(tmp_path):
    pixels = ramp(6, 8, 300, 3800)
    path = save(Image.fromarray(pixels), tmp_path / "film16.tif")
    np.testing.assert_allclose(load_image(path), min_max(pixels), atol=1e-6)


def test_bmp_loads(tmp_path):
    pixels = ramp(6, 8, 0, 255, np.uint8)
    path = save(Image.fromarray(pixels), tmp_path / "film.bmp")
    np.testing.assert_array_equal(load_image(path), pixels.astype(np.float32) / 255)


def test_jpeg_loads_close_to_its_source(tmp_path):
    pixels = np.tile(np.linspace(0, 255, 32), (32, 1)).astype(np.uint8)
    path = save(Image.fromarray(pixels), tmp_path / "film.jpg", quality=95)
    array = load_image(path)
    assert array.shape == (32, 32) and array.dtype == np.float32
    assert np.abs(array - pixels / 255).max() < 0.05


def test_jpeg_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((16, 32), np.uint8)
    pixels[:, :16] = 255  # bright left half, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = save(Image.fromarray(pixels), tmp_path / "rotated.jpg", exif=exif, quality=95)
    array = load_image(path)
    assert array.shape == (32, 16)  # portrait
    assert array[:16].mean() > 0.9 and array[16:].mean() < 0.1  # left half is now the top half


def test_bytes_of_an_image_file_load_like_the_file(png8):
    path, _ = png8
    np.testing.assert_array_equal(load_image(path.read_bytes()), load_image(path))


def test_lazily_opened_pil_image_loads(png8):
    path, pixels = png8
    with Image.open(path) as image:
        np.testing.assert_array_equal(load_image(image), pixels.astype(np.float32) / 255)


def test_lazily_opened_truncated_pil_image_is_rejected(tmp_path):
    path = write_png_header(tmp_path / "cut.png", 30, 30)
    with Image.open(path) as image:
        assert "truncated" in str(decode_error(image))


# ----------------------------------------------------------------------------------------------------------------------
# DICOM


def test_dicom_is_min_max_scaled(tmp_path):
    stored = ramp(6, 8, 100, 4000)
    path = write_dicom(tmp_path / "film.dcm", stored)
    array = load_image(path)
    assert array.shape == (6, 8) and array.dtype == np.float32
    np.testing.assert_allclose(array, min_max(stored), atol=1e-6)


def test_dicom_rescale_slope_and_intercept_change_nothing_after_min_max(tmp_path):
    stored = ramp(6, 8, 100, 4000)
    plain = load_image(write_dicom(tmp_path / "plain.dcm", stored))
    rescaled = load_image(write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=-1024))
    np.testing.assert_allclose(rescaled, plain, atol=1e-6)


def test_dicom_window_clips_outside_the_window(tmp_path):
    stored = ramp(8, 16, 0, 4095)
    path = write_dicom(tmp_path / "windowed.dcm", stored, WindowCenter=2048, WindowWidth=1024)
    array = load_image(path)
    assert (array[stored < 1500] == 0).all()
    assert (array[stored > 2600] == 1).all()
    inside = array[(stored > 1600) & (stored < 2500)]
    assert inside.size and (np.diff(inside) > 0).all() and 0 < inside.min() and inside.max() < 1
    unwindowed = load_image(write_dicom(tmp_path / "plain.dcm", stored))
    assert not np.allclose(array, unwindowed)


def test_dicom_monochrome1_is_the_inverse_of_monochrome2_of_the_same_stored_data(tmp_path):
    stored = ramp(6, 8, 100, 4000)
    mono1 = load_image(write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1"))
    mono2 = load_image(write_dicom(tmp_path / "m2.dcm", stored, photometric="MONOCHROME2"))
    np.testing.assert_allclose(mono1, 1 - mono2, atol=1e-6)


def test_dicom_monochrome1_stored_inverted_equals_the_monochrome2_picture(tmp_path):
    picture = ramp(6, 8, 100, 4000)
    mono1 = load_image(write_dicom(tmp_path / "m1.dcm", 4095 - picture, photometric="MONOCHROME1"))
    mono2 = load_image(write_dicom(tmp_path / "m2.dcm", picture, photometric="MONOCHROME2"))
    np.testing.assert_allclose(mono1, mono2, atol=1e-6)


def test_dicom_without_suffix_is_detected_by_its_magic(tmp_path):
    stored = ramp(6, 8, 100, 4000)
    path = write_dicom(tmp_path / "1.2.840.99999.1", stored)
    assert path.suffix == ".1" and is_dicom(path)
    np.testing.assert_allclose(load_image(path), min_max(stored), atol=1e-6)
    bare = write_dicom(tmp_path / "IM0001", stored)
    np.testing.assert_allclose(load_image(bare), min_max(stored), atol=1e-6)


def test_dicom_bytes_load_like_the_file(tmp_path):
    path = write_dicom(tmp_path / "film.dcm", ramp(6, 8, 100, 4000))
    np.testing.assert_array_equal(load_image(path.read_bytes()), load_image(path))


def test_dicom_declaring_one_frame_loads(tmp_path):
    # Multi-frame files are refused (tests/test_dicom_transfer_syntaxes.py); Number of Frames 1 is a plain film.
    stored = ramp(6, 8, 100, 4000)
    array = load_image(write_dicom(tmp_path / "one-frame.dcm", stored, NumberOfFrames=1))
    np.testing.assert_allclose(array, min_max(stored), atol=1e-6)


def test_colour_dicom_loads_as_luminance(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    array = load_image(write_dicom(tmp_path / "colour.dcm", rgb, photometric="RGB", bits_stored=8))
    np.testing.assert_allclose(array, min_max(luminance(rgb)), atol=1e-6)


def test_is_dicom_by_magic_or_suffix_only(tmp_path, png8):
    assert is_dicom(write_dicom(tmp_path / "scan", ramp()))
    assert is_dicom(tmp_path / "not-even-there.DCM")
    assert is_dicom(tmp_path / "not-even-there.dicom")
    assert not is_dicom(png8[0])
    assert not is_dicom(tmp_path / "missing")


def test_dicom_without_pydicom_asks_to_install_it(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "film.dcm", ramp())
    monkeypatch.setitem(sys.modules, "pydicom", None)
    monkeypatch.setitem(sys.modules, "pydicom.pixels", None)
    with pytest.raises(ImportError, match="pip install pydicom"):
        load_image(path)


# ----------------------------------------------------------------------------------------------------------------------
# Guards: each raises a one-line ImageDecodeError naming the file and what was expected


def test_missing_file_is_rejected(tmp_path):
    path = tmp_path / "absent.png"
    error = decode_error(path)
    assert_names_file(error, path)
    assert "no such file" in str(error)


def test_folder_is_rejected(tmp_path):
    assert_names_file(decode_error(tmp_path), tmp_path)


def test_zero_byte_file_is_rejected(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    error = decode_error(path)
    assert_names_file(error, path)
    assert "empty" in str(error)


def test_text_file_named_png_is_rejected(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("patient list\nnot an image\n")
    error = decode_error(path)
    assert_names_file(error, path)
    assert "expected PNG, JPEG, TIFF, BMP or DICOM" in str(error)
    assert error.__cause__ is not None


def test_empty_bytes_are_rejected():
    assert "empty" in str(decode_error(b""))


def test_undecodable_bytes_are_rejected_naming_the_input():
    assert str(decode_error(b"not an image")).startswith("<bytes, 12 bytes>: ")


@pytest.mark.parametrize("suffix,fmt", [(".png", "PNG"), (".jpg", "JPEG")])
def test_truncated_image_is_rejected(tmp_path, suffix, fmt):
    noise = np.random.default_rng(5).integers(0, 256, (64, 64), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format=fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    error = decode_error(path)
    assert_names_file(error, path)
    assert "truncated" in str(error)
    assert error.__cause__ is not None


def test_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path):
    path = write_png_header(tmp_path / "claims-big.png", 300, 300)
    # Within the limit the file is decoded, and its missing pixel data is noticed ...
    assert "truncated" in str(decode_error(path, max_pixels=100_000))
    # ... over the limit it is rejected from the header alone.
    error = decode_error(path, max_pixels=1_000)
    assert_names_file(error, path)
    assert "max_pixels=1,000" in str(error) and "truncated" not in str(error)


def test_huge_header_is_rejected_fast_by_default(tmp_path):
    path = write_png_header(tmp_path / "bomb.png", 8_000, 8_000)  # 64 M pixels, no data
    start = time.perf_counter()
    error = decode_error(path)
    assert time.perf_counter() - start < 0.5
    assert_names_file(error, path)
    assert "max_pixels" in str(error)


@pytest.mark.parametrize("side", [10_000, 20_000])  # Pillow warns beyond ~89.5 M pixels and raises beyond twice that
def test_pillow_decompression_bomb_check_is_an_image_decode_error(tmp_path, side):
    path = write_png_header(tmp_path / "bomb.png", side, side)
    error = decode_error(path, max_pixels=10**12)
    assert_names_file(error, path)
    assert "decompression-bomb" in str(error)


def test_dicom_without_pixel_data_is_rejected(tmp_path):
    path = write_dicom(tmp_path / "report.dcm", None)
    error = decode_error(path)
    assert_names_file(error, path)
    assert "pixel data" in str(error)


def explicit_vr_element(group, element, vr, value):
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def test_dicom_that_fails_to_parse_is_rejected(tmp_path):
    transfer_syntax = explicit_vr_element(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1.99")  # deflated
    meta = explicit_vr_element(0x0002, 0x0000, b"UL", struct.pack("<I", len(transfer_syntax))) + transfer_syntax
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + meta + b"this is not deflated data")
    error = decode_error(path)
    assert_names_file(error, path)
    assert "not a readable DICOM file" in str(error)
    assert error.__cause__ is not None


def test_dicom_header_without_data_elements_is_rejected(tmp_path):
    path = tmp_path / "header-only"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 8)
    error = decode_error(path)
    assert_names_file(error, path)
    assert "not a readable DICOM file" in str(error)


def test_text_file_named_dcm_is_rejected(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("patient list\nnot an image\n")
    error = decode_error(path)
    assert_names_file(error, path)
    assert "DICOM" in str(error)


def test_dicom_pixel_limit_is_checked_from_rows_and_columns_before_decoding(tmp_path):
    path = write_dicom(tmp_path / "claims-big.dcm", ramp(4, 4), Rows=10_000, Columns=10_000)
    error = decode_error(path)
    assert_names_file(error, path)
    assert "max_pixels" in str(error)


def test_dicom_with_inconsistent_pixel_data_is_rejected(tmp_path):
    path = write_dicom(tmp_path / "short.dcm", ramp(4, 4), Rows=100, Columns=100)
    error = decode_error(path)
    assert_names_file(error, path)
    assert error.__cause__ is not None


# ----------------------------------------------------------------------------------------------------------------------
# Listing a folder


def test_image_suffixes():
    assert IMAGE_SUFFIXES == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"}


def test_list_images_recurses_sorts_and_finds_dicom_by_magic(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    (tmp_path / ".cache").mkdir()
    for name in ["z.png", "a/1.JPG", "b/deep/x.tiff", "b/2.jpeg", "m.dicom", "n.bmp", ".hidden.png", ".cache/y.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "b" / "labels.csv").write_text("a,b\n")
    write_dicom(tmp_path / "IM0001", ramp())
    write_dicom(tmp_path / "b" / "1.2.840.5", ramp())
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == sorted(found)
    assert found == ["IM0001", "a/1.JPG", "b/1.2.840.5", "b/2.jpeg", "b/deep/x.tiff", "m.dicom", "n.bmp", "z.png"]


def test_list_images_of_a_missing_folder_raises(tmp_path):
    with pytest.raises(NotADirectoryError, match="nowhere"):
        list_images(tmp_path / "nowhere")
