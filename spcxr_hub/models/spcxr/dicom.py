"""DICOM decoding for `imaging.load_image`: a DICOM file → float32 (H, W) in [0, 1].

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

pydicom is imported inside `load_dicom`, so that transformers' remote-code check (which reads every import outside a
try block) does not require it of users who never read a DICOM file.
"""

from __future__ import annotations

import numpy as np

from .imaging import ImageDecodeError, check_pixel_count, min_max, rgb_luminance, short_message

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def load_dicom(fp, name: str, max_pixels: int, *, force: bool) -> np.ndarray:
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
        raise ImageDecodeError(f"{name}: not a readable DICOM file (expected DICOM Part 10): {short_message(exc)}") from exc
    if len(ds) == 0:  # pydicom is lenient: a header followed by garbage parses to an empty dataset
        raise ImageDecodeError(f"{name}: not a readable DICOM file (expected DICOM data elements after the header)")
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        what = "not a readable DICOM file" if force else "DICOM file without pixel data"
        raise ImageDecodeError(
            f"{name}: {what} (expected an image with a PixelData element; "
            f"SOP class {ds.get('SOPClassUID', 'unknown')})"
        )
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if rows is None or columns is None:
        raise ImageDecodeError(f"{name}: DICOM file without Rows/Columns (expected an image with both)")
    check_pixel_count(name, columns, rows, max_pixels)

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
            values = rgb_luminance(frame[..., :3].astype(np.float64))
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
            f"consistent with its attributes{others}): {short_message(exc)}"
        ) from exc
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ImageDecodeError(f"{name}: DICOM pixel data contains NaN or infinite values (expected finite values)")
    return min_max(values, invert=photometric == "MONOCHROME1")


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
