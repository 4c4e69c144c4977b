"""Inputs the input gate must flag, drawn from the phantom generator: file name → (writer, the finding code)."""

from pathlib import Path

import numpy as np
from PIL import Image

from spcxr_hub.data import synthetic


def hand(size: int = 128) -> np.ndarray:
    """A non-chest radiograph: a palm and five fingers (bone bright) on an empty (dark) field."""
    y, x = np.mgrid[:size, :size] / size
    image = np.where(((x - 0.5) / 0.22) ** 2 + ((y - 0.72) / 0.18) ** 2 <= 1, 0.7, 0.05)
    for k, cx in enumerate((0.3, 0.4, 0.5, 0.6, 0.72)):
        top = 0.2 + 0.08 * abs(k - 2)
        image[(np.abs(x - cx) < 0.035) & (y > top) & (y < 0.65)] = 0.8
    return (image + np.random.default_rng(0).normal(0, 0.02, image.shape)).clip(0, 1).astype(np.float32)


def write_bad_inputs(root: Path, seed: int = 5) -> dict[str, str]:
    """Writes one file per kind of bad input; returns {file name: the code the gate must report}."""
    root.mkdir(parents=True, exist_ok=True)
    film = synthetic.generate(seed, 128).image
    rotate = lambda degrees: np.asarray(Image.fromarray(film).rotate(degrees, fillcolor=0.0))  # noqa: E731
    pngs = {
        "rotated-90.png": (np.rot90(film).copy(), "rotated"),
        "rotated-45.png": (rotate(45), "rotated"),
        "inverted.png": (1.0 - film, "inverted"),
        "noise.png": (np.random.default_rng(seed).random((128, 128)), "not-chest-like"),
        "hand.png": (hand(), "out-of-distribution"),  # a body part the pixel checks do not know
        "blank.png": (np.full((128, 128), 0.5), "near-constant"),
        "crushed-range.png": (film * 0.06, "value-range"),
        "tiny.png": (synthetic.generate(seed, 40).image, "tiny-resolution"),
    }
    expected = {}
    for name, (image, code) in pngs.items():
        synthetic.write_png8(root / name, image)
        expected[name] = code
    dicoms = {
        "ct.dcm": ({"Modality": "CT"}, "modality"),
        "extremity.dcm": ({"BodyPartExamined": "EXTREMITY"}, "body-part"),
        "lateral.dcm": ({"ViewPosition": "LL"}, "lateral-view"),
        "for-processing.dcm": ({"PresentationIntentType": "FOR PROCESSING"}, "for-processing"),
        "small-field.dcm": ({"PixelSpacing": [0.2, 0.2]}, "small-field"),  # 128 px x 0.2 mm = 26 mm
    }
    for name, (tags, code) in dicoms.items():
        write_dicom_with(root / name, film, **tags)
        expected[name] = code
    # MONOCHROME1 decoded without inversion: the inverted values labelled MONOCHROME2
    synthetic.write_dicom(root / "monochrome1-uninverted.dcm", 1.0 - film)
    expected["monochrome1-uninverted.dcm"] = "inverted"
    return expected


def write_dicom_with(path: Path, image: np.ndarray, **tags) -> Path:
    import pydicom

    synthetic.write_dicom(path, image)
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path)
    return path
