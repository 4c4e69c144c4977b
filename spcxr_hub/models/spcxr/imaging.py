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
- DICOM: ``pydicom.dcmread``; ``pydicom.pixels.apply_modality_lut`` (Rescale Slope / Intercept or Modality LUT),
  then ``apply_voi_lut`` (VOI LUT Sequence, or Window Center / Width, when present; the first window when there
  are several), then min–max to [0, 1], inverted when Photometric Interpretation is MONOCHROME1 so that bone is
  bright for every file (a MONOCHROME1 file and the MONOCHROME2 file of the same picture load to the same array).
  Colour DICOM: luminance, then min–max.
- DICOM transfer syntaxes: whatever pydicom 3 decodes with the decoder plugins installed. With SS-CXR's
  dependencies (python-gdcm, pylibjpeg + pylibjpeg-openjpeg + pylibjpeg-rle) that is implicit / explicit VR
  little endian, explicit VR big endian, deflated, RLE Lossless, JPEG Baseline, JPEG Lossless (process 14, and its
  selection value 1, the usual lossless syntax of CR/DX archives), JPEG-LS and JPEG 2000 (HTJ2K too, through
  pylibjpeg-openjpeg); 12-bit JPEG Extended (1.2.840.10008.1.2.4.51) needs ``pip install pylibjpeg-libjpeg``
  (GPL-3.0, hence not a dependency).
  A bare dataset without file meta information is read with the encoding pydicom parsed it with when its pixel
  data is uncompressed.
- Multi-frame DICOM (Number of Frames > 1) is refused: a chest radiograph is one frame, and picking a frame of a
  tomosynthesis sweep, a dual-energy set or a cine loop would classify an arbitrary one as if it were the film.

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
    "letterbox_geometry",
    "list_images",
    "load_image",
    "resize_array",
    "to_model_size",
]

#: Images with more pixels are rejected before decoding. A 43 × 43 cm detector at 0.1 mm is ~18.5 M pixels; this
#: is well under Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, ~89.5 M).
DEFAULT_MAX_PIXELS = 40_000_000

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}) | DICOM_SUFFIXES

_EXPECTED_FILE = "not a readable image (expected PNG, JPEG, TIFF, BMP or DICOM)"
_DICOM_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


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
        _check_pixel_count(label, source.width, source.height, max_pixels)
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
# Resizing to the model's input (the image processor's policy; here so that inference can run without transformers)


def letterbox_geometry(height: int, width: int, target: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where an (height, width) image lands inside `target` under `resize_mode="pad"`: (top, left, new_h, new_w)."""
    scale = min(target[0] / height, target[1] / width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    return (target[0] - new_h) // 2, (target[1] - new_w) // 2, new_h, new_w


def resize_array(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize (Pillow, antialiased when shrinking) of a float (H, W) image in [0, 1], clipped to [0, 1]."""
    if image.shape == (height, width):
        return image
    resized = Image.fromarray(image.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def to_model_size(image: np.ndarray, target: tuple[int, int], resize_mode: str = "pad") -> np.ndarray:
    """(H, W) float image → `target` (height, width): `"stretch"` resizes; `"pad"` keeps the aspect ratio and centres
    the image on a black (air) canvas."""
    if resize_mode == "stretch":
        return resize_array(image, *target)
    top, left, new_h, new_w = letterbox_geometry(*image.shape, target)
    canvas = np.zeros(target, dtype=np.float32)
    canvas[top : top + new_h, left : left + new_w] = resize_array(image, new_h, new_w)
    return canvas


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
            f"{name}: cannot access the file (expected a readable image file): {_one_line(exc)}"
        ) from exc
    if path.is_dir():
        raise ImageDecodeError(f"{name}: is a folder (expected an image file)")
    if stat.st_size == 0:
        raise ImageDecodeError(f"{name}: empty file, 0 bytes (expected PNG, JPEG, TIFF, BMP or DICOM)")
    if _has_dicom_magic(path):
        return _load_dicom(path, name, max_pixels, force=False)
    if path.suffix.lower() in DICOM_SUFFIXES:  # no preamble: maybe a bare dataset, pydicom can try
        return _load_dicom(path, name, max_pixels, force=True)
    return _load_with_pillow(path, name, max_pixels)


def _load_bytes(data: bytes, max_pixels: int) -> np.ndarray:
    name = f"<bytes, {len(data)} bytes>"
    if not data:
        raise ImageDecodeError(f"{name}: empty input (expected the bytes of a PNG, JPEG, TIFF, BMP or DICOM file)")
    if data[128:132] == b"DICM":
        return _load_dicom(io.BytesIO(data), name, max_pixels, force=False)
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
            raise ImageDecodeError(f"{name}: {_bomb_message()}: {_one_line(exc)}") from exc
        except Exception as exc:
            raise ImageDecodeError(f"{name}: {_EXPECTED_FILE}: {_one_line(exc)}") from exc
        with im:
            _check_pixel_count(name, im.width, im.height, max_pixels)
            try:
                im.load()  # force the full decode now, so a truncated file fails here
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageDecodeError(f"{name}: {_bomb_message()}: {_one_line(exc)}") from exc
            except Exception as exc:
                raise ImageDecodeError(
                    f"{name}: corrupt or truncated {im.format or 'image'} file (expected a complete image): "
                    f"{_one_line(exc)}"
                ) from exc
            return _pil_to_unit(im, name)


def _bomb_message() -> str:
    return (
        f"image exceeds Pillow's decompression-bomb limit PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS:,} "
        "(expected a smaller image; raise that limit to load it)"
    )


def _check_pixel_count(name: str, width: int, height: int, max_pixels: int) -> None:
    pixels = int(width) * int(height)
    if pixels == 0:
        raise ImageDecodeError(f"{name}: empty image of {width}x{height} pixels (expected at least one pixel)")
    if max_pixels is not None and pixels > max_pixels:
        raise ImageDecodeError(
            f"{name}: image of {width}x{height} = {pixels:,} pixels exceeds max_pixels={max_pixels:,} "
            "(expected a smaller image; a decompression-bomb guard, pass a larger max_pixels to load it)"
        )


# ----------------------------------------------------------------------------------------------------------------------
# DICOM


def _load_dicom(fp, name: str, max_pixels: int, *, force: bool) -> np.ndarray:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
    except ImportError as exc:
        raise ImportError(
            f"{name}: reading DICOM files needs pydicom >= 3; install it with `pip install pydicom`"
        ) from exc

    try:
        ds = pydicom.dcmread(fp, force=force)
    except Exception as exc:
        raise ImageDecodeError(f"{name}: not a readable DICOM file (expected DICOM Part 10): {_one_line(exc)}") from exc
    if len(ds) == 0:  # pydicom is lenient: a header followed by garbage parses to an empty dataset
        raise ImageDecodeError(f"{name}: not a readable DICOM file (expected DICOM data elements after the header)")
    if not any(keyword in ds for keyword in _DICOM_PIXEL_KEYWORDS):
        what = "not a readable DICOM file" if force else "DICOM file without pixel data"
        raise ImageDecodeError(
            f"{name}: {what} (expected an image with a PixelData element; "
            f"SOP class {ds.get('SOPClassUID', 'unknown')})"
        )
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if rows is None or columns is None:
        raise ImageDecodeError(f"{name}: DICOM file without Rows/Columns (expected an image with both)")
    _check_pixel_count(name, columns, rows, max_pixels)

    syntax = _resolve_transfer_syntax(ds, name, pydicom.uid)
    described = _describe_syntax(syntax)
    frames = _number_of_frames(ds)
    if frames > 1:
        # A chest radiograph is one frame. Several frames are a tomosynthesis sweep, a dual-energy set or a cine
        # loop: any one frame we picked would be classified as if it were the film, so refuse instead of guessing.
        raise ImageDecodeError(
            f"{name}: multi-frame DICOM with {frames} frames, transfer syntax {described} (expected a single-frame "
            "radiograph; a tomosynthesis, dual-energy or cine series has no one frame to classify: export the "
            "frame you mean as its own file)"
        )
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise ImageDecodeError(
            f"{name}: transfer syntax {described} has no pixel data decoder in pydicom {pydicom.__version__} "
            "(expected a DICOM image transfer syntax such as Explicit VR Little Endian 1.2.840.10008.1.2.1 or JPEG "
            "Lossless 1.2.840.10008.1.2.4.70: re-export the file from the PACS in one of those, or try a newer "
            "pydicom with `pip install -U pydicom`)"
        ) from exc
    if not decoder.is_available:
        raise ImageDecodeError(
            f"{name}: no decoder installed for transfer syntax {described} (expected one of pydicom's decoder "
            f"plugins for it: {_install_hint(syntax)})"
        )

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        frame = pixel_array(ds, index=0)  # colour → RGB
        if frame.ndim == 3:  # colour: (rows, columns, samples); LUTs are for greyscale data
            values = _luminance(frame[..., :3].astype(np.float64))
        elif _identity_luts(ds):  # stored values are the picture: stay in integers (min–max is exact and faster)
            values = frame
        else:
            values = apply_modality_lut(frame, ds)
            values = apply_voi_lut(values, ds, index=0)
        if values.dtype.kind not in "ui":
            values = np.asarray(values, dtype=np.float64)
    except Exception as exc:
        plugins = decoder.available_plugins  # () for uncompressed syntaxes, which pydicom decodes itself
        used = f" with {', '.join(plugins)}" if plugins else ""
        others = _install_hint(syntax, exclude=plugins) if str(syntax) in _DECODER_PACKAGES else ""
        others = f", or another decoder: {others}" if others else ""
        raise ImageDecodeError(
            f"{name}: cannot decode the DICOM pixel data of transfer syntax {described}{used} (expected pixel data "
            f"consistent with its attributes{others}): {_one_line(exc)}"
        ) from exc
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ImageDecodeError(f"{name}: DICOM pixel data contains NaN or infinite values (expected finite values)")
    return _min_max(values, invert=photometric == "MONOCHROME1")


# The pip packages behind pydicom's decoder plugins ("gdcm", "pylibjpeg", "pyjpegls") for each compressed transfer
# syntax, SS-CXR's own dependencies first. Those (python-gdcm, pylibjpeg + pylibjpeg-openjpeg + pylibjpeg-rle) decode
# all of them but 12-bit JPEG Extended, which only pylibjpeg-libjpeg decodes; it is GPL-3.0, so it stays an opt-in.
_GDCM = ("gdcm", "python-gdcm")
_LIBJPEG = ("pylibjpeg", "pylibjpeg pylibjpeg-libjpeg")
_OPENJPEG = ("pylibjpeg", "pylibjpeg pylibjpeg-openjpeg")
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": (_GDCM, _LIBJPEG),  # JPEG Baseline (pydicom also decodes it with Pillow)
    "1.2.840.10008.1.2.4.51": (_LIBJPEG, _GDCM),  # JPEG Extended (gdcm and Pillow: 8-bit samples only)
    "1.2.840.10008.1.2.4.57": (_GDCM, _LIBJPEG),  # JPEG Lossless, process 14
    "1.2.840.10008.1.2.4.70": (_GDCM, _LIBJPEG),  # JPEG Lossless, process 14, selection value 1
    "1.2.840.10008.1.2.4.80": (_GDCM, _LIBJPEG, ("pyjpegls", "pyjpegls")),  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": (_GDCM, _LIBJPEG, ("pyjpegls", "pyjpegls")),  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": (_OPENJPEG, _GDCM),  # JPEG 2000 lossless (pydicom also tries Pillow)
    "1.2.840.10008.1.2.4.91": (_OPENJPEG, _GDCM),  # JPEG 2000
    "1.2.840.10008.1.2.4.201": (_OPENJPEG,),  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": (_OPENJPEG,),  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": (_OPENJPEG,),  # HTJ2K
    "1.2.840.10008.1.2.5": (("pylibjpeg", "pylibjpeg pylibjpeg-rle"),),  # RLE Lossless (pydicom decodes it natively)
}


def _install_hint(syntax, exclude=()) -> str:
    """`pip install ...` alternatives for the decoders of `syntax`, leaving out the pydicom plugins in `exclude`."""
    known = _DECODER_PACKAGES.get(str(syntax))
    if known is None:  # a syntax pydicom decodes but this table does not know yet
        return "see pydicom's documentation of the decoders for this transfer syntax"
    return " or ".join(f"`pip install {packages}`" for plugin, packages in known if plugin not in exclude)


def _resolve_transfer_syntax(ds, name: str, uids):
    """The dataset's Transfer Syntax UID; for a bare dataset (no file meta) with uncompressed pixel data, the encoding
    pydicom parsed it with (the pixel data is then stored the same way); a one-line error when it cannot be known.

    `uids` is the ``pydicom.uid`` module, passed in: an import statement here would make transformers' remote-code
    check (which reads every import outside a try block) require pydicom for all users.
    """
    file_meta = getattr(ds, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if syntax:
        return uids.UID(str(syntax).strip())
    encapsulated = "PixelData" in ds and ds["PixelData"].is_undefined_length
    encodings = {(True, True): uids.ImplicitVRLittleEndian, (False, True): uids.ExplicitVRLittleEndian,
                 (False, False): uids.ExplicitVRBigEndian}
    syntax = None if encapsulated else encodings.get(tuple(ds.original_encoding))
    if syntax is None:
        why = "the pixel data is compressed (encapsulated), so its codec" if encapsulated else "its encoding"
        raise ImageDecodeError(
            f"{name}: no Transfer Syntax UID (0002,0010) in the DICOM file meta information, and {why} is unknown "
            "(expected a DICOM Part 10 file with file meta information: re-export it from the PACS, or set "
            "ds.file_meta.TransferSyntaxUID with pydicom)"
        )
    ds.file_meta.TransferSyntaxUID = syntax  # pydicom's decoders read it from there
    return syntax


def _describe_syntax(syntax) -> str:
    """``1.2.840.10008.1.2.4.70 (JPEG Lossless, ...)``; pydicom names a UID it does not know by the UID itself."""
    return f"{syntax} ({syntax.name if syntax.name != str(syntax) else 'unknown UID'})"


def _number_of_frames(ds) -> int:
    try:
        return int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):  # a malformed Number of Frames: let pydicom's validation report it
        return 1


def _identity_luts(ds) -> bool:
    """True when neither a modality LUT / rescale nor a VOI LUT / window changes the stored values (up to min–max)."""
    if any(keyword in ds for keyword in ("ModalityLUTSequence", "VOILUTSequence", "WindowCenter", "WindowWidth")):
        return False
    try:
        return float(ds.get("RescaleSlope", 1) or 1) == 1.0 and float(ds.get("RescaleIntercept", 0) or 0) == 0.0
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------------------------------
# PIL images and arrays


def _pil_to_unit(im: Image.Image, name: str) -> np.ndarray:
    try:
        im.load()  # a no-op once loaded; a lazily opened image handed in by the caller is decoded here
    except Exception as exc:
        raise ImageDecodeError(
            f"{name}: corrupt or truncated {im.format or 'image'} (expected a complete image): {_one_line(exc)}"
        ) from exc
    orientation = im.getexif().get(0x0112, 1)  # EXIF Orientation
    if orientation not in (None, 1):
        try:
            im = ImageOps.exif_transpose(im)
        except Exception as exc:
            raise ImageDecodeError(
                f"{name}: cannot apply the EXIF orientation {orientation} (expected 1 to 8): {_one_line(exc)}"
            ) from exc
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    unsupported = f"{name}: unsupported PIL mode {im.mode!r} (expected 1, L, LA, P, RGB, RGBA, I;16, I or F)"
    try:
        array = np.asarray(im)
    except Exception as exc:
        raise ImageDecodeError(f"{unsupported}: {_one_line(exc)}") from exc
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
        _check_pixel_count(name, width, height, max_pixels)

    colour = array.ndim == 3
    if kind == "u" and array.dtype.itemsize == 1:  # 8-bit: exactly value / 255
        if not colour:
            return np.divide(array, np.float32(255.0), dtype=np.float32)  # = astype(float32) / 255, one pass
        return _clip_unit(_luminance(array.astype(np.float64)) / 255.0)
    if kind == "b":  # 1-bit: 0 / 1
        return array.astype(np.float32) if not colour else _clip_unit(_luminance(array.astype(np.float64)))

    if not colour and kind in "ui":  # deeper integers
        return _min_max(array)
    values = array.astype(np.float64)
    if colour:
        values = _luminance(values)
    if kind == "f":
        if not np.isfinite(values).all():
            raise ImageDecodeError(f"{name}: contains NaN or infinite values (expected finite values)")
        if values.min() >= 0.0 and values.max() <= 1.0:
            return values.astype(np.float32)
    return _min_max(values)  # deeper integers, floats outside [0, 1]


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of (..., 3 or 4) float data; computed as (299 R + 587 G + 114 B) / 1000, exact for grey."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (299.0 * r + 587.0 * g + 114.0 * b) / 1000.0


def _min_max(values: np.ndarray, *, invert: bool = False) -> np.ndarray:
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


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
