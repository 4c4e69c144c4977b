"""The input gate: for each image, a list of findings that say why its prediction should not be trusted.

A finding is `{"code": "lateral-view", "reason": "DICOM ViewPosition is LL (lateral); the model was trained on
frontal (PA/AP) films"}`. Findings come from three places:

* **DICOM tags**, read with pydicom `stop_before_pixels` (the header only):
  Modality, BodyPartExamined, ViewPosition, PresentationIntentType and the physical size of the film.
* **Pixels** (the decoded float image in [0, 1], before resizing): tiny resolution, a nearly constant image, a
  value range that uses only a sliver of the scale (the "wrong normalisation" trap), inverted grey scale (air bright,
  mediastinum dark: a MONOCHROME1 file decoded without inversion, a negative PNG), heavy rotation and images without a chest's
  mediastinum-between-lungs pattern (noise, non-chest pictures). The tests measure the false-flag rate of these
  thresholds on clean held-out phantoms (tests/test_input_gate.py).
* **Out of distribution**: `spcxr_hub.inference.ood` adds `out-of-distribution` from the embedding distance.

Only numpy, Pillow and pydicom are used, so any runtime that decodes the file can run the gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CHEST_MODALITIES", "GateThresholds", "dicom_tag_findings", "finding", "gate_file", "pixel_findings"]

CHEST_MODALITIES = ("CR", "DX", "DR")
LATERAL_VIEWS = ("LL", "RL", "LLD", "RLD", "LAT", "LATERAL", "LLO", "RLO")


def finding(code: str, reason: str) -> dict:
    return {"code": code, "reason": reason}


@dataclass(frozen=True)
class GateThresholds:
    """The pixel checks' limits, in the units of the decoded image (values in [0, 1])."""

    min_side: int = 64  # pixels on the shorter side; chest films are ~2000, the tests' phantoms >= 64
    min_variation: float = 0.02  # 1st-99th percentile span below this: nearly constant
    min_span: float = 0.12  # 1st-99th percentile span below this: a sliver of the scale
    min_film_mm: float = 150.0  # the film's shorter side (PixelSpacing x pixels); a chest film is 350-430 mm
    max_rotation_deg: float = 20.0  # the mediastinum tilted further than this: rotated
    rotation_gain: float = 0.1  # ...and its contrast that much stronger there than upright
    min_contrast: float = 0.1  # mediastinum-vs-lung contrast; clean phantoms >= 0.25, noise ~0


DEFAULT = GateThresholds()


def gate_file(path: str | Path, image: np.ndarray, thresholds: GateThresholds = DEFAULT) -> list[dict]:
    """All tag and pixel findings of one file; `image` is its decoded (H, W) float array in [0, 1]."""
    from ..models.spcxr.imaging import is_dicom

    found = dicom_tag_findings(path, thresholds) if is_dicom(path) else []
    return found + pixel_findings(image, thresholds)


# ----------------------------------------------------------------------------------------------------------------------
# DICOM tags


def dicom_tag_findings(path: str | Path, thresholds: GateThresholds = DEFAULT) -> list[dict]:
    """Findings from the header alone. A header pydicom cannot parse is itself a finding, not a crash."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
        tags = {key: _text(ds, key) for key in ("Modality", "BodyPartExamined", "ViewPosition",
                                                "PresentationIntentType")}
        spacing = _spacing(ds)
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    except Exception as error:  # pydicom raises many kinds on damaged headers; all mean the same to the user
        return [finding("unreadable-tags", f"DICOM header could not be read ({type(error).__name__}: "
                                           f"{str(error)[:120]}); tag checks skipped")]
    if not tags["Modality"]:  # Type 1 (required) in every image IOD: pydicom parsed no usable header
        return [finding("unreadable-tags", "no Modality in the DICOM header (damaged or stripped); tag checks skipped")]
    found = []
    if tags["Modality"] not in CHEST_MODALITIES:
        found.append(finding("modality", f"DICOM Modality is {tags['Modality']}; expected a radiograph "
                                         f"({'/'.join(CHEST_MODALITIES)})"))
    if tags["BodyPartExamined"] and tags["BodyPartExamined"] != "CHEST":
        found.append(finding("body-part", f"DICOM BodyPartExamined is {tags['BodyPartExamined']}; expected CHEST"))
    if tags["ViewPosition"] in LATERAL_VIEWS:
        found.append(finding("lateral-view", f"DICOM ViewPosition is {tags['ViewPosition']} (lateral); the model "
                                             "was trained on frontal (PA/AP) films"))
    if tags["PresentationIntentType"] == "FOR PROCESSING":
        found.append(finding("for-processing", "DICOM PresentationIntentType is FOR PROCESSING (raw detector data); "
                                               "expected a FOR PRESENTATION image"))
    if spacing and rows and columns:
        side_mm = min(rows * spacing[0], columns * spacing[1])
        if side_mm < thresholds.min_film_mm:
            found.append(finding("small-field", f"PixelSpacing {spacing[0]:g}x{spacing[1]:g} mm and {columns}x{rows} "
                                                f"pixels make a film of {side_mm:.0f} mm; a chest film is 350-430 mm"))
    return found


def _text(ds, key: str) -> str:
    value = ds.get(key)
    return str(value).strip().upper() if value not in (None, "") else ""


def _spacing(ds) -> tuple[float, float] | None:
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        if value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
            return float(value[0]), float(value[1])
    return None


# ----------------------------------------------------------------------------------------------------------------------
# pixels


def pixel_findings(image: np.ndarray, thresholds: GateThresholds = DEFAULT) -> list[dict]:
    """Findings from the decoded (H, W) float image in [0, 1]."""
    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape[:2]
    found = []
    if min(height, width) < thresholds.min_side:
        found.append(finding("tiny-resolution", f"{width}x{height} pixels; expected at least {thresholds.min_side} "
                                                "on the shorter side"))
    small = _thumbnail(image, 64)
    low, high = (float(v) for v in np.percentile(small, [1, 99]))
    # The remaining checks measure anatomy, which a blank or crushed image does not show.
    if high - low < thresholds.min_variation:
        return found + [finding("near-constant", f"98% of values lie within {high - low:.3f} of each other; the image "
                                                 "is nearly blank")]
    if high - low < thresholds.min_span:
        return found + [finding("value-range", f"98% of values lie in [{low:.2f}, {high:.2f}] of the [0, 1] scale; "
                                               "wrong bit depth, windowing or normalisation?")]
    angle, contrast, upright = orientation_estimate(small)
    if abs(contrast) < thresholds.min_contrast:
        found.append(finding("not-chest-like", f"no mediastinum-and-lungs pattern at any rotation (contrast "
                                               f"{contrast:+.2f}; a chest film has more than {thresholds.min_contrast})"))
        return found  # orientation and polarity mean nothing without anatomy
    if abs(angle) > thresholds.max_rotation_deg and abs(contrast) - abs(upright) > thresholds.rotation_gain:
        found.append(finding("rotated", f"the mediastinum runs {angle:+.0f} degrees from vertical; expected an "
                                        "upright frontal film"))
    if contrast < 0:
        found.append(finding("inverted", f"the mediastinum is darker than the lungs (contrast {contrast:+.2f}); "
                                         "inverted grey scale (MONOCHROME1 shown without inversion, a negative)?"))
    return found


def _thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """Stretched to size x size: the checks compare regions in relative coordinates."""
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), dtype=np.float32)


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    from PIL import Image

    fill = float(np.median(np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])))
    return np.asarray(Image.fromarray(image).rotate(degrees, Image.BILINEAR, fillcolor=fill), dtype=np.float32)


def _upright(image: np.ndarray, angle: float) -> np.ndarray:
    return _rotate(image, -angle) if angle else image


def orientation_estimate(image: np.ndarray, step: float = 5.0) -> tuple[float, float, float]:
    """(angle, contrast, upright): the rotation (degrees, -90..90, counter-clockwise) at which the mediastinum
    contrast is strongest, that contrast (negative: inverted grey scale) and the contrast of the image as given. On a
    frontal film the bright mediastinum between two dark lung fields runs vertically; mirror symmetry would be the
    more general cue, but a one-sided consolidation breaks it (measured on pneumonia phantoms)."""
    scores = {float(a): mediastinum_contrast(_upright(image, float(a))) for a in np.arange(-90.0, 90.0 + step / 2, step)}
    angle = max(scores, key=lambda a: (round(abs(scores[a]), 3), -abs(a)))  # ties: the smaller tilt
    return angle, scores[angle], scores[0.0]


def mediastinum_contrast(image: np.ndarray) -> float:
    """Mean of the central column band (spine, heart, mediastinum: bright on a radiograph) minus the mean of the
    two lung bands beside it (air: dark), on an upright, stretched image."""
    h, w = image.shape
    rows = slice(int(0.3 * h), int(0.6 * h))
    centre = image[rows, int(0.45 * w):int(0.55 * w)].mean()
    lungs = np.concatenate([image[rows, int(0.2 * w):int(0.33 * w)].ravel(),
                            image[rows, int(0.67 * w):int(0.8 * w)].ravel()]).mean()
    return float(centre - lungs)
