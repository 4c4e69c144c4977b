"""NIH ChestX-ray14 in its native layout, read and written.

    Data_Entry_2017.csv                 "Image Index","Finding Labels" ("|"-separated, or "No Finding"), ...
    train_val_list.txt, test_list.txt   the official patient-wise split, one image name a line
    images_001/images/00000001_000.png  the images, in the twelve folders of the Kaggle release,
    images/00000001_000.png             or in one flat folder (both are searched)

Split "train" is `train_val_list.txt`, split "test" is `test_list.txt`. Every label in the CSV is checked against
the fourteen findings and "No Finding".
"""

import csv
from pathlib import Path

import numpy as np

from spcxr_hub.plugin_api import LayoutError, label_index, numbered_lines, require, sample_findings, write_phantoms

LAYOUT = "NIH ChestX-ray14 (Data_Entry_2017.csv, train_val_list.txt/test_list.txt, images*/)"
ENTRIES = "Data_Entry_2017.csv"
SPLIT_FILES = {"train": "train_val_list.txt", "test": "test_list.txt"}
NO_FINDING = "No Finding"
FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
LABELS = ("normal", "abnormal")
PHANTOM_TO_NIH = {"nodule": "Nodule", "effusion": "Effusion", "cardiomegaly": "Cardiomegaly", "pneumonia": "Pneumonia"}
HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")


# The CSV's patient columns, carried into each record for subgroup results (`spcxr evaluate --group-by sex,age,view`).
ATTRIBUTE_COLUMNS = {"sex": "Patient Gender", "age": "Patient Age", "view": "View Position"}


def read_entries(root: Path) -> dict[str, tuple[set[int], dict]]:
    """Image name → (indices of its findings in `FINDINGS`, empty for "No Finding"; its patient attributes), from the
    CSV."""
    path = require(root, ENTRIES, layout=LAYOUT)
    known = FINDINGS + (NO_FINDING,)
    entries = {}
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        missing = {"Image Index", "Finding Labels"} - set(reader.fieldnames or ())
        if missing:
            raise LayoutError(f"{path}: no column {', '.join(sorted(missing))} (expected the {LAYOUT} layout)")
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            found = {label_index(known, name.strip(), where) for name in row["Finding Labels"].split("|")}
            attributes = {name: (row.get(column) or "").strip() for name, column in ATTRIBUTE_COLUMNS.items()}
            entries[row["Image Index"].strip()] = (found - {known.index(NO_FINDING)}, attributes)
    return entries


def image_files(root: Path) -> dict[str, Path]:
    """Image name → file, over `images*/` and `images*/images/`."""
    patterns = ("images*/*.png", "images*/images/*.png")
    files = {path.name: path for pattern in patterns for path in Path(root).glob(pattern)}
    if not files:
        raise LayoutError(f"{Path(root) / 'images*'}: missing (no PNG in images_001/images/ or images/)")
    return files


def split_entries(root: Path, split: str) -> list[tuple[Path, set[int], dict]]:
    """`(image file, finding indices, attributes)` of the images the split's list file names, in its order."""
    listing = require(root, SPLIT_FILES[split], layout=LAYOUT)
    entries, files = read_entries(root), image_files(root)
    chosen = []
    for number, name in numbered_lines(listing):
        if name not in entries:
            raise LayoutError(f"{listing}, line {number}: {name} has no row in {Path(root) / ENTRIES}")
        if name not in files:
            raise LayoutError(f"{Path(root) / 'images*' / name}: missing (listed in {listing}, line {number})")
        chosen.append((files[name], *entries[name]))
    return chosen


def record(path: Path, label, attributes: dict) -> dict:
    return {"image": path, "label": label, "attributes": attributes, "attributes_source": f"NIH CSV {ENTRIES}"}


def read_folder(root: Path, split: str) -> list[dict]:
    """Records of `split`: label 0 normal ("No Finding"), 1 abnormal (any finding); the CSV's sex, age and view."""
    return [record(path, int(bool(found)), attributes) for path, found, attributes in split_entries(root, split)]


def read_folder_14(root: Path, split: str) -> list[dict]:
    """Records of `split`: label = multi-hot list over `FINDINGS`; the CSV's sex, age and view."""
    return [record(path, [int(i in found) for i in range(len(FINDINGS))], attributes)
            for path, found, attributes in split_entries(root, split)]


def write_synthetic(root: Path, images_per_class: int, seed: int) -> Path:
    """Phantoms in the NIH layout: per split `images_per_class` normal images ("No Finding") and as many abnormal
    ones, whose findings are drawn with `sample_findings(rng, "abnormal")` (nodule, effusion,
    cardiomegaly), a quarter of them with a consolidation as well, labelled Nodule, Effusion, Cardiomegaly and
    Pneumonia. One image per patient; patients never cross splits. The images fill images_001/ and images_002/."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    plan, rows, lists = [], [], {name: [] for name in SPLIT_FILES.values()}
    total = 2 * images_per_class * len(SPLIT_FILES)
    for list_name in lists:
        for abnormal in (False, True) * images_per_class:
            findings = sample_findings(rng, "abnormal") if abnormal else ()
            if abnormal and rng.random() < 0.25:
                findings = ("pneumonia",) + findings
            patient = len(plan) + 1
            name = f"{patient:08d}_000.png"
            folder = "images_001" if len(plan) < total // 2 else "images_002"
            labels = "|".join(sorted(PHANTOM_TO_NIH[f] for f in findings)) or NO_FINDING
            age, sex = int(rng.integers(18, 90)), "MF"[int(rng.integers(2))]
            view = "AP" if rng.random() < 0.3 else "PA"
            rows.append(f"{name},{labels},0,{patient},{age},{sex},{view},2500,2048,0.143,0.143,")
            plan.append((f"{folder}/images/{name}", findings))
            lists[list_name].append(name)
    write_phantoms(root, plan, seed, metadata=False)  # the attributes are the CSV's, as in the real set
    (root / ENTRIES).write_text("\n".join((HEADER, *rows)) + "\n")
    for list_name, names in lists.items():
        (root / list_name).write_text("\n".join(names) + "\n")
    return root
