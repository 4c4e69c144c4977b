"""The Montgomery County chest X-ray set in its native layout, read and written.

    CXR_png/MCUCXR_0001_0.png                 the radiographs (last digit: 0 normal, 1 tuberculosis), 12-bit PNG
    ManualMask/leftMask/MCUCXR_0001_0.png     the patient's left lung (image right), 0/255
    ManualMask/rightMask/MCUCXR_0001_0.png    the patient's right lung (image left), 0/255

The set ships no split. The documented deterministic one: the images sorted by file name, every fifth
(index % 5 == 4) is `test`, the others `train`. A record's label is the pair [left mask, right mask]: the lung mask
is their union (the core merges them when it loads the mask).
"""

from functools import partial
from pathlib import Path

import numpy as np

from spcxr_hub.plugin_api import holdout_split, layout_files, require, write_mask_png, write_phantoms, write_png16

LAYOUT = "Montgomery County (CXR_png/, ManualMask/leftMask/, ManualMask/rightMask/)"
LABELS = ("background", "lung")
IMAGE_SIZE = (128, 112)  # height, width: portrait, like most Montgomery radiographs (4892 x 4020)


def read_folder(root: Path, split: str) -> list[dict]:
    """Records of `split` ("train" or "test"): `{"image": png, "label": [left mask, right mask]}`."""
    images = holdout_split(layout_files(root, "CXR_png", pattern="MCUCXR_*.png", layout=LAYOUT), split)
    return [{"image": image, "label": [require(root, "ManualMask", side, image.name, layout=LAYOUT)
                                       for side in ("leftMask", "rightMask")]}
            for image in images]


def write_synthetic(root: Path, images_per_class: int, seed: int) -> Path:
    """Phantoms in the Montgomery layout with their exact lung masks: `images_per_class` normal (`_0`) and as many
    abnormal (`_1`: a consolidation or nodules, tuberculosis-like) radiographs, as 12-bit PNGs. Findings cover part
    of the lung fields but never change the masks, as in annotated radiographs."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = [f"MCUCXR_{number:04d}_{number % 2}.png" for number in range(1, 2 * images_per_class + 1)]
    plan = [(f"CXR_png/{name}", (str(rng.choice(["pneumonia", "nodule"])),) if name.endswith("_1.png") else ())
            for name in names]
    phantoms = write_phantoms(root, plan, seed, size=IMAGE_SIZE, write=partial(write_png16, bits=12))
    for name, phantom in zip(names, phantoms):
        write_mask_png(root / "ManualMask" / "leftMask" / name, phantom.left_mask)
        write_mask_png(root / "ManualMask" / "rightMask" / name, phantom.right_mask)
    return root
