"""COVIDx CXR-3 in its native layout, read and written.

    train.txt, test.txt     one image a line: `patient_id filename label source`, label `negative` or `positive`
    train/<filename>        the images of each split
    test/<filename>

Only the CXR-3 labels are accepted: the three-class names of older COVIDx releases (`COVID-19`, `normal`,
`pneumonia`) are reported as unknown labels, with the file and line, rather than silently mapped.
"""

from pathlib import Path

import numpy as np

from spcxr_hub.plugin_api import LayoutError, label_index, numbered_lines, require, write_phantoms

LAYOUT = "COVIDx CXR-3 (train.txt/test.txt + train/, test/)"
LABELS = ("negative", "positive")


def read_folder(root: Path, split: str) -> list[dict]:
    """Records of `split` ("train" or "test"): label 0 negative, 1 positive."""
    listing = require(root, f"{split}.txt", layout=LAYOUT)
    records = []
    for number, line in numbered_lines(listing):
        where = f"{listing}, line {number}"
        fields = line.split()
        if len(fields) != 4:
            raise LayoutError(f"{where}: expected 'patient_id filename label source', got {line!r}")
        _, filename, label, _ = fields
        records.append({
            "image": require(root, split, filename, layout=LAYOUT),
            "label": label_index(LABELS, label, where),
        })
    return records


def write_synthetic(root: Path, images_per_class: int, seed: int) -> Path:
    """Phantoms in the COVIDx layout: positives show COVID-19 ground glass; negatives are normal or, as in COVIDx
    (whose negatives include other pneumonia), sometimes show a lobar consolidation. Sources and file names mimic
    the RSNA (negatives) and BIMCV (positives) parts of COVIDx."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    plan, lines = [], {"train": [], "test": []}
    for split in lines:
        for label in LABELS:
            for _ in range(images_per_class):
                patient = int(rng.integers(10_000, 99_999))
                if label == "positive":
                    findings, source = ("covid",), "bimcv"
                    patient_id = f"sub-S{patient}"
                    filename = f"{patient_id}_ses-E{patient + len(plan)}_run-1_bp-chest_vp-ap_dx.png"
                else:
                    findings = ("pneumonia",) if rng.random() < 0.3 else ()
                    source = "rsna"
                    patient_id = rng.bytes(16).hex()
                    filename = f"{patient_id}.png"
                plan.append((f"{split}/{filename}", findings))
                lines[split].append(f"{patient_id} {filename} {label} {source}")
    write_phantoms(root, plan, seed)
    for split, split_lines in lines.items():
        (root / f"{split}.txt").write_text("\n".join(split_lines) + "\n")
    return root
