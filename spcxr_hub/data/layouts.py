"""Generic native-layout helpers for task plugins (public API, next to `spcxr_hub.data.records`).

Reading: numbered lines of a list file, the images of one folder, `{split}/{CLASS}/*` class folders, and the
documented deterministic train/test split of datasets that ship none. Writing: a synthetic dataset from the phantom
generator, one image per planned file. Every reading helper raises `spcxr_hub.data.records.LayoutError` naming the missing
file or folder, and `UnknownLabelError` naming a class folder the task does not know.
"""

import csv
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from . import synthetic
from .records import SYNTHETIC_MARKER, LayoutError, UnknownLabelError, require
from ..errors import UsageError
from ..models.spcxr.imaging import DICOM_SUFFIXES, IMAGE_SUFFIXES

SPLITS_BY_HOLDOUT = ("train", "test")
METADATA_FILE = "metadata.csv"  # what `write_phantoms` writes: `spcxr evaluate --metadata <root>/metadata.csv`
SITES = ("Site A", "Site B", "Site C")


def numbered_lines(path: Path) -> list[tuple[int, str]]:
    """`(line number, stripped line)` of the non-empty lines of a text file; numbers count from 1 as editors do."""
    lines = Path(path).read_text().splitlines()
    return [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]


def layout_files(root: Path, *folder: str, pattern: str, layout: str) -> list[Path]:
    """Sorted files matching `pattern` in `root/folder…`; a LayoutError names the folder if it is missing or holds
    no such file."""
    directory = require(root, *folder, layout=layout)
    files = sorted(path for path in directory.glob(pattern) if path.is_file())
    if not files:
        raise LayoutError(f"{directory}: no {pattern} files (expected the {layout} layout under {root})")
    return files


def class_folders(root: Path, split: str, folders: Sequence[str], *, layout: str) -> list[tuple[Path, str]]:
    """`(image, folder name)` for every image of `root/split/<FOLDER>/`, the ImageFolder layout, sorted.

    Each of `folders` must exist (a LayoutError names the first one missing); another sub-folder is a class the task
    does not know (UnknownLabelError naming it), except hidden ones and archive debris such as `__MACOSX`. Hidden
    files and non-image files (`.DS_Store`, `Thumbs.db`) are ignored.
    """
    split_dir = require(root, split, layout=layout)
    for child in sorted(split_dir.iterdir()):
        if child.is_dir() and not child.name.startswith((".", "__")) and child.name not in folders:
            raise UnknownLabelError(f"{child}: class folder {child.name!r} is not one of {', '.join(folders)}")
    found = []
    for name in folders:
        class_dir = require(root, split, name, layout=layout)
        found += [(path, name) for path in sorted(class_dir.iterdir())
                  if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES]
    return found


def holdout_split(items: Sequence, split: str, *, test_every: int = 5) -> list:
    """The deterministic split of a dataset that ships none: items in the given (sorted) order, every
    `test_every`-th one (`index % test_every == test_every - 1`) is `test`, the others `train`."""
    if split not in SPLITS_BY_HOLDOUT:
        raise UsageError(f"split must be one of {', '.join(SPLITS_BY_HOLDOUT)}, got {split!r}")
    wanted = split == "test"
    return [item for index, item in enumerate(items) if (index % test_every == test_every - 1) == wanted]


def image_seed(seed: int, index: int) -> int:
    """The phantom seed of the `index`-th image of a synthetic dataset made with `seed` (distinct per pair)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def write_phantoms(
    root: Path,
    plan: Iterable[tuple[str, Sequence[str]]],
    seed: int,
    *,
    size: int | tuple[int, int] = 128,
    write: Callable[[Path, np.ndarray], object] = synthetic.write_png8,
    metadata: bool = True,
) -> list[synthetic.Phantom]:
    """Draws one phantom radiograph per `(relative path, findings)` of `plan` and writes it under `root` with
    `write(path, image)` (default: 8-bit PNG). Returns the phantoms, in plan order, so a writer can also save their
    masks or list their labels. The same arguments give the same files.

    Each image also gets patient attributes (`phantom_attributes`): in `root/metadata.csv` (`file`, relative path, and
    sex, age, view, site) unless `metadata` is False, and, for a planned `.dcm` file (always written as DICOM), as
    its PatientSex, PatientAge, ViewPosition and InstitutionName tags."""
    Path(root).mkdir(parents=True, exist_ok=True)
    (Path(root) / SYNTHETIC_MARKER).write_text(
        "# Synthetic data\n\nEvery image here is a phantom drawn by `spcxr_hub.data.synthetic`, not a radiograph of a "
        "person. Models trained on it, and their numbers, say so.\n"
    )
    phantoms, rows = [], []
    for index, (relative, findings) in enumerate(plan):
        phantom = synthetic.generate(image_seed(seed, index), size, findings)
        path = Path(root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        attributes = phantom_attributes(seed, index)
        if path.suffix.lower() in DICOM_SUFFIXES:
            tags = {"PatientSex": attributes["sex"], "PatientAge": f"{attributes['age']:03d}Y",
                    "ViewPosition": attributes["view"], "InstitutionName": attributes["site"]}
            synthetic.write_dicom(path, phantom.image, tags=tags)
        else:
            write(path, phantom.image)
        phantoms.append(phantom)
        rows.append({"file": Path(relative).as_posix(), **attributes})
    if metadata:
        with open(Path(root) / METADATA_FILE, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["file", "sex", "age", "view", "site"])
            writer.writeheader()
            writer.writerows(rows)
    return phantoms


def phantom_attributes(seed: int, index: int) -> dict:
    """Sex, age (years), view and site of the `index`-th phantom of a dataset made with `seed`: seeded by the pair
    alone, so independent of the image's label and findings (no group is built to be harder). Half F, ages uniform
    over 18-89, one in three AP, three sites."""
    rng = np.random.default_rng([int(seed), int(index), 7])
    return {"sex": "MF"[int(rng.integers(2))], "age": int(rng.integers(18, 90)),
            "view": "AP" if rng.random() < 1 / 3 else "PA", "site": SITES[int(rng.integers(len(SITES)))]}
