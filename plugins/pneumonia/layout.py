"""Kermany et al.'s "Chest X-Ray Images (Pneumonia)" in its native layout, read and written.

    {train,val,test}/NORMAL/IM-0115-0001.jpeg, NORMAL2-IM-0027-0001.jpeg, ...
    {train,val,test}/PNEUMONIA/person1_bacteria_1.jpeg, person1_virus_6.jpeg, ...

The two-class task reads the class from the folder. The three-class task (normal, bacterial, viral) reads the kind
of pneumonia from the PNEUMONIA file names (`bacteria` / `virus`); a PNEUMONIA file whose name has neither is an
unknown label.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from spcxr_hub.plugin_api import UnknownLabelError, class_folders, write_phantoms

LAYOUT = "Chest X-Ray Images (Pneumonia) ({train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg)"
FOLDERS = ("NORMAL", "PNEUMONIA")
LABELS = ("normal", "pneumonia")
LABELS_3CLASS = ("normal", "bacterial", "viral")
SPLITS = ("train", "val", "test")


def read_folder(root: Path, split: str) -> list[dict]:
    """Records of `split`: label 0 normal, 1 pneumonia (the class folder)."""
    return [{"image": path, "label": FOLDERS.index(folder)}
            for path, folder in class_folders(root, split, FOLDERS, layout=LAYOUT)]


def pneumonia_kind(path: Path) -> str:
    """`bacterial` or `viral` from a PNEUMONIA file name such as `person1_bacteria_1.jpeg`."""
    words = path.stem.lower().split("_")
    if "bacteria" in words:
        return "bacterial"
    if "virus" in words:
        return "viral"
    raise UnknownLabelError(
        f"{path}: a PNEUMONIA file name must say 'bacteria' or 'virus' (e.g. person1_virus_6.jpeg)")


def read_folder_3class(root: Path, split: str) -> list[dict]:
    """Records of `split`: label 0 normal, 1 bacterial, 2 viral pneumonia."""
    return [{"image": path, "label": LABELS_3CLASS.index("normal" if folder == "NORMAL" else pneumonia_kind(path))}
            for path, folder in class_folders(root, split, FOLDERS, layout=LAYOUT)]


def write_jpeg(path: Path, image: np.ndarray) -> None:
    """A float (H, W) image in [0, 1] as an 8-bit grayscale JPEG, as the Kermany files are."""
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path, format="JPEG", quality=92)


def write_synthetic(root: Path, images_per_class: int, seed: int) -> Path:
    """Phantoms in the Kermany layout: in each split `images_per_class` normal images and as many bacterial
    (a lobar consolidation) and viral (a bilateral patchy ground-glass pattern) pneumonia images, so both tasks
    get at least `images_per_class` per class (and PNEUMONIA outnumbers NORMAL, as in the real set)."""
    plan = []
    for split in SPLITS:
        for _ in range(images_per_class):
            person = len(plan) + 1
            plan += [
                (f"{split}/NORMAL/IM-{person:04d}-0001.jpeg", ()),
                (f"{split}/PNEUMONIA/person{person}_bacteria_{3 * person}.jpeg", ("pneumonia",)),
                (f"{split}/PNEUMONIA/person{person + 1}_virus_{3 * person + 1}.jpeg", ("covid",)),
            ]
    write_phantoms(root, plan, seed, write=write_jpeg)
    return Path(root)
