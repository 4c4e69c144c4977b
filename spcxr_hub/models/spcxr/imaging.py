"""Radiograph decoding: any input → float32 (H, W) numpy array with values in [0, 1].

This file is copied to the Hugging Face Hub as remote code next to the image processor, so at top level it imports
only the standard library, numpy and Pillow, and nothing else of the project. pydicom is imported lazily, only
when a DICOM file is read.

Accepted inputs (`load_image`)
------------------------------
- a path (`str` / `os.PathLike`) to a PNG, JPEG, TIFF or BMP file (anything Pillow reads), or to a DICOM file —
  DICOM is recognised by the ``DICM`` magic at byte 128 or by a ``.dcm`` / ``.dicom`` suffix, so DICOM files
  without a suffix (``1.2.840...``) work;
- the bytes of such a file;
- a PIL image of any mode (1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, I;16, I;16B, I, F, ...);
- a numpy array of shape (H, W), (H, W, 1), (H, W, 2) (grey + alpha), (H, W, 3) or (H, W, 4), or channel-first
  (1, H, W) / (3, H, W), of a bool, integer or float dtype;
- a tensor (anything with ``.detach().cpu().numpy()``, e.g. torch), treated as its numpy array.

Intensity policy
----------------
- 8-bit data (uint8 arrays, PIL modes L/P/RGB/...): ``value / 255`` exactly.
- 1-bit data (bool arrays, PIL mode "1"): 0 or 1.
- Deeper integer data (16-bit PNG/TIFF, PIL modes I;16 and I, uint16/int arrays): min–max to [0, 1] per image.
  Radiographs stored as 16-bit seldom use the whole 16-bit range (10–14 bits stored is typical), so dividing by
  65535 would leave a nearly black image.
- Float data: kept as is when already inside [0, 1], otherwise min–max per image. NaN or infinite values are
  rejected.
- Min–max of a constant image gives zeros.
- Colour: luminance with ITU-R 601 weights (0.299 R + 0.587 G + 0.114 B, the weights of Pillow's
  ``convert("L")``), computed in float before the rules above (so grey RGB equals its L image exactly); alpha is
  dropped; palette images go through their palette.
- Orientation: the EXIF orientation tag (JPEG, TIFF, ...) is applied (``ImageOps.exif_transpose``).
- Multi-page files (TIFF, GIF): the first page.
- DICOM: see `dicom.py` (LUTs, MONOCHROME1, transfer syntaxes and their decoders, multi-frame files).

Guards
------
Every failure raises `ImageDecodeError` (a `ValueError`) with a one-line message that starts with the file path
(or a description of the in-memory input) followed by what was expected, chained from the library error:
missing file, directory, empty file, undecodable or truncated image (pixels are fully decoded; Pillow's
``ImageFile.LOAD_TRUNCATED_IMAGES`` is left untouched and should stay False), DICOM that fails to parse or has no
pixel data, DICOM whose transfer syntax is missing (with compressed pixel data) or unknown or whose decoder is not
installed (the message names the transfer syntax, UID and name, and the pip packages to install), multi-frame
DICOM, images larger than ``max_pixels`` (checked from the header before the pixels are decoded, plus Pillow's own
decompression-bomb check), unsupported array shapes or dtypes, and empty (0-pixel) images.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "ImageDecodeError",
    "is_dicom",
    "list_images",
    "load_image",
]

#: Images with more pixels are rejected before decoding. A 43 × 43 cm detector at 0.1 mm is ~18.5 M pixels; this
#: is well under Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, ~89.5 M).
DEFAULT_MAX_PIXELS = 40_000_000

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}) | DICOM_SUFFIXES

_EXPECTED_FILE = "not a readable image (expected PNG, JPEG, TIFF, BMP or DICOM)"


class ImageDecodeError(ValueError):
    """An input could not be turned into an image; the message is one line: ``<file or input>: <what was expected>``."""


# ----------------------------------------------------------------------------------------------------------------------
# Public API


def load_image(source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a radiograph into a float32 array of shape (H, W) with values in [0, 1].

    Args:
        source: a path (str / os.PathLike), the bytes of an image file, a PIL image, a numpy array or a tensor (see
            the module docstring for the accepted modes, shapes and dtypes and for the intensity policy).
        max_pixels: images with more pixels (width × height) are rejected, before decoding when the input is a file.

    Raises:
        ImageDecodeError: the input is missing, empty, corrupt, too large or of an unsupported kind.
        ImportError: a DICOM input while pydicom (>= 3) is not installed.
    """
    if isinstance(source, (str, os.PathLike)):
        return _load_path(Path(os.fspath(source)), max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _load_bytes(bytes(source), max_pixels)
    if isinstance(source, Image.Image):
        label = f"PIL image (mode {source.mode}, size {source.width}x{source.height})"
        check_pixel_count(label, source.width, source.height, max_pixels)
        return _pil_to_unit(source, label)
    if isinstance(source, np.ndarray):
        return _array_to_unit(source, _describe_array(source), max_pixels)
    if all(hasattr(source, attr) for attr in ("detach", "cpu", "numpy")):  # torch.Tensor, without importing torch
        array = _tensor_to_numpy(source)
        return _array_to_unit(array, f"tensor of shape {tuple(array.shape)}", max_pixels)
    if hasattr(source, "__array__"):
        array = np.asarray(source)
        return _array_to_unit(array, f"{type(source).__name__} of shape {array.shape}", max_pixels)
    raise ImageDecodeError(
        f"{type(source).__module__}.{type(source).__qualname__}: unsupported input "
        "(expected a file path, bytes, a PIL image, a numpy array or a tensor)"
    )


def is_dicom(path) -> bool:
    """Whether `path` is a DICOM file: ``DICM`` at byte offset 128 (the DICOM Part 10 magic) or a .dcm/.dicom suffix."""
    path = Path(os.fspath(path))
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    return _has_dicom_magic(path)


def list_images(folder) -> list[Path]:
    """All image files under `folder`, recursively, sorted by path.

    A file counts when its suffix (any case) is in `IMAGE_SUFFIXES`, or, whatever its name, when it carries the
    DICOM magic (DICOM files are often named by UID, ``1.2.840.113619...``, or have no suffix at all). Hidden files
    and folders (name starting with ".", e.g. macOS ``._x.png`` resource forks) are skipped.
    """
    root = Path(os.fspath(folder))
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder (expected a folder of images)")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            if filename.startswith("."):
                continue
            path = Path(dirpath, filename)
            if path.suffix.lower() in IMAGE_SUFFIXES or _has_dicom_magic(path):
                found.append(path)
    return sorted(found)


# ----------------------------------------------------------------------------------------------------------------------
# Files and bytes


def _load_path(path: Path, max_pixels: int) -> np.ndarray:
    name = str(path)
    try:
        stat = path.stat()
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"{name}: no such file (expected an image file)") from exc
    except OSError as exc:
        raise ImageDecodeError(
            f"{name}: cannot access the file (expected a readable image file): {short_message(exc)}"
        ) from exc
    if path.is_dir():
        raise ImageDecodeError(f"{name}: is a folder (expected an image file)")
    if stat.st_size == 0:
        raise ImageDecodeError(f"{name}: empty file, 0 bytes (expected PNG, JPEG, TIFF, BMP or DICOM)")
    from .dicom import load_dicom  # here, not at the top: dicom.py builds on this module

    if _has_dicom_magic(path):
        return load_dicom(path, name, max_pixels, force=False)
    if path.suffix.lower() in DICOM_SUFFIXES:  # no preamble: maybe a bare dataset, pydicom can try
        return load_dicom(path, name, max_pixels, force=True)
    return _load_with_pillow(path, name, max_pixels)


def _load_bytes(data: bytes, max_pixels: int) -> np.ndarray:
    name = f"<bytes, {len(data)} bytes>"
    if not data:
        raise ImageDecodeError(f"{name}: empty input (expected the bytes of a PNG, JPEG, TIFF, BMP or DICOM file)")
    if data[128:132] == b"DICM":
        from .dicom import load_dicom

        return load_dicom(io.BytesIO(data), name, max_pixels, force=False)
    return _load_with_pillow(io.BytesIO(data), name, max_pixels)


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _load_with_pillow(fp, name: str, max_pixels: int) -> np.ndarray:
    with warnings.catch_warnings():
        # Beyond Pillow's MAX_IMAGE_PIXELS, Pillow only warns (errors beyond twice that): make it an error too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(fp)  # lazy: reads the header only
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError(f"{name}: {_bomb_message()}: {short_message(exc)}") from exc
        except Exception as exc:
            raise ImageDecodeError(f"{name}: {_EXPECTED_FILE}: {short_message(exc)}") from exc
        with im:
            check_pixel_count(name, im.width, im.height, max_pixels)
            try:
                im.load()  # force the full decode now, so a truncated file fails here
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageDecodeError(f"{name}: {_bomb_message()}: {short_message(exc)}") from exc
            except Exception as exc:
                raise ImageDecodeError(
                    f"{name}: corrupt or truncated {im.format or 'image'} file (expected a complete image): "
                    f"{short_message(exc)}"
                ) from exc
            return _pil_to_unit(im, name)


def _bomb_message() -> str:
    return (
        f"image exceeds Pillow's decompression-bomb limit PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS:,} "
        "(expected a smaller image; raise that limit to load it)"
    )


def check_pixel_count(name: str, width: int, height: int, max_pixels: int) -> None:
    pixels = int(width) * int(height)
    if pixels == 0:
        raise ImageDecodeError(f"{name}: empty image of {width}x{height} pixels (expected at least one pixel)")
    if max_pixels is not None and pixels > max_pixels:
        raise ImageDecodeError(
            f"{name}: image of {width}x{height} = {pixels:,} pixels exceeds max_pixels={max_pixels:,} "
            "(expected a smaller image; a decompression-bomb guard, pass a larger max_pixels to load it)"
        )


# ----------------------------------------------------------------------------------------------------------------------
# PIL images and arrays


def _pil_to_unit(im: Image.Image, name: str) -> np.ndarray:
    try:
        im.load()  # a no-op once loaded; a lazily opened image handed in by the caller is decoded here
    except Exception as exc:
        raise ImageDecodeError(
            f"{name}: corrupt or truncated {im.format or 'image'} (expected a complete image): {short_message(exc)}"
        ) from exc
    orientation = im.getexif().get(0x0112, 1)  # EXIF Orientation
    if orientation not in (None, 1):
        try:
            im = ImageOps.exif_transpose(im)
        except Exception as exc:
            raise ImageDecodeError(
                f"{name}: cannot apply the EXIF orientation {orientation} (expected 1 to 8): {short_message(exc)}"
            ) from exc
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    unsupported = f"{name}: unsupported PIL mode {im.mode!r} (expected 1, L, LA, P, RGB, RGBA, I;16, I or F)"
    try:
        array = np.asarray(im)
    except Exception as exc:
        raise ImageDecodeError(f"{unsupported}: {short_message(exc)}") from exc
    if array.dtype == object or array.ndim not in (2, 3):
        raise ImageDecodeError(unsupported)
    return _array_to_unit(array, name, None)


def _tensor_to_numpy(tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    try:
        return tensor.numpy()
    except TypeError:  # bfloat16 and friends have no numpy dtype
        return tensor.float().numpy()


def _describe_array(array: np.ndarray) -> str:
    return f"numpy array of shape {array.shape} and dtype {array.dtype}"


def _array_to_unit(array: np.ndarray, name: str, max_pixels: int | None) -> np.ndarray:
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channel-first (C, H, W), as tensors usually are
    if array.ndim == 3 and array.shape[-1] in (1, 2):
        array = array[..., 0]  # grey, or grey + alpha
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ImageDecodeError(
            f"{name}: unsupported shape (expected (H, W), (H, W, 1), (H, W, 2), (H, W, 3), (H, W, 4), "
            "(1, H, W) or (3, H, W))"
        )
    kind = array.dtype.kind
    if kind not in "buif":
        raise ImageDecodeError(f"{name}: unsupported dtype {array.dtype} (expected bool, integer or float)")
    height, width = array.shape[:2]
    if height * width == 0:
        raise ImageDecodeError(f"{name}: empty image of {width}x{height} pixels (expected at least one pixel)")
    if max_pixels is not None:
        check_pixel_count(name, width, height, max_pixels)

    colour = array.ndim == 3
    if kind == "u" and array.dtype.itemsize == 1:  # 8-bit: exactly value / 255
        if not colour:
            return np.divide(array, np.float32(255.0), dtype=np.float32)  # = astype(float32) / 255, one pass
        return _clip_unit(rgb_luminance(array.astype(np.float64)) / 255.0)
    if kind == "b":  # 1-bit: 0 / 1
        return array.astype(np.float32) if not colour else _clip_unit(rgb_luminance(array.astype(np.float64)))

    if not colour and kind in "ui":  # deeper integers
        return min_max(array)
    values = array.astype(np.float64)
    if colour:
        values = rgb_luminance(values)
    if kind == "f":
        if not np.isfinite(values).all():
            raise ImageDecodeError(f"{name}: contains NaN or infinite values (expected finite values)")
        if values.min() >= 0.0 and values.max() <= 1.0:
            return values.astype(np.float32)
    return min_max(values)  # deeper integers, floats outside [0, 1]


def rgb_luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of (..., 3 or 4) float data; computed as (299 R + 587 G + 114 B) / 1000, exact for grey."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (299.0 * r + 587.0 * g + 114.0 * b) / 1000.0


def min_max(values: np.ndarray, *, invert: bool = False) -> np.ndarray:
    lo, hi = values.min(), values.max()
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    if values.dtype.kind in "ui" and -(2**24) <= int(lo) and int(hi) <= 2**24 and int(hi) - int(lo) <= 2**24:
        # Integers (and their differences) up to 2**24 are exact in float32: one rounding, in the division, and the
        # result lies in [0, 1] without clipping. Three in-place passes instead of float64 temporaries.
        scaled = values.astype(np.float32)
        if invert:
            np.subtract(np.float32(hi), scaled, out=scaled)
        else:
            np.subtract(scaled, np.float32(lo), out=scaled)
        return np.divide(scaled, np.float32(int(hi) - int(lo)), out=scaled)
    lo, hi = float(lo), float(hi)
    scaled = (hi - values) if invert else (values - lo)
    scaled /= hi - lo
    return _clip_unit(scaled)


def _clip_unit(values: np.ndarray) -> np.ndarray:
    return np.clip(values, 0.0, 1.0).astype(np.float32)


def short_message(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
