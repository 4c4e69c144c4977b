"""The Shenzhen chest X-ray set in its native layout, read and written.

    CXR_png/CHNCXR_0001_0.png    the radiographs; the last digit is the label: 0 normal, 1 tuberculosis

The set ships no split. The documented deterministic one: the images sorted by file name, every fifth
(index % 5 == 4) is `test`, the others `train` (about 20 % test; both classes, since normals and tuberculosis
cases each fill a long run of numbers).
"""

from pathlib import Path

import numpy as np

from spcxr_hub.plugin_api import UnknownLabelError, holdout_split, layout_files, write_phantoms

LAYOUT = "Shenzhen (CXR_png/CHNCXR_####_{0,1}.png)"
LABELS = ("normal", "tuberculosis")


def label_of(path: Path) -> int:
    """0 or 1, the last digit of a file name like `CHNCXR_0001_0.png`."""
    digit = path.stem.rsplit("_", 1)[-1]
    if digit not in ("0", "1"):
        raise UnknownLabelError(f"{path}: the name must end in _0 (normal) or _1 (tuberculosis)")
    return int(digit)


def read_folder(root: Path, split: str) -> list[dict]:
    """Records of `split` ("train" or "test"): label 0 normal, 1 tuberculosis."""
    images = layout_files(root, "CXR_png", pattern="CHNCXR_*.png", layout=LAYOUT)
    return [{"image": path, "label": label_of(path)} for path in holdout_split(images, split)]


def write_synthetic(root: Path, images_per_class: int, seed: int) -> Path:
    """Phantoms in the Shenzhen layout: `images_per_class` normal radiographs, then as many with tuberculosis-like
    findings (a consolidation or nodules; the phantom generator has no cavities), numbered like the real set
    (normals first)."""
    rng = np.random.default_rng(seed)
    tb_findings = [("pneumonia",), ("nodule",), ("pneumonia", "nodule")]
    plan = [(f"CXR_png/CHNCXR_{number:04d}_0.png", ()) for number in range(1, images_per_class + 1)]
    plan += [(f"CXR_png/CHNCXR_{number:04d}_1.png", tb_findings[int(rng.integers(len(tb_findings)))])
             for number in range(images_per_class + 1, 2 * images_per_class + 1)]
    write_phantoms(root, plan, seed)
    return Path(root)
