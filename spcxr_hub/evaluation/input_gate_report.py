"""The input gate over an evaluated split: metrics.json's `input_gate` section (how many images the gate flagged,
and why) and `flagged_examples.png`. The same checks as `spcxr predict` (`inference/input_checks.image_findings`),
so a card's count says how often a user of the model would have been warned on data like this split."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

FLAGGED_PICTURE = "flagged_examples.png"
MAX_EXAMPLES = 4  # the picture's films; the JSON lists every flagged file


def shown_name(path, source) -> str:
    """A file as metrics.json and the card name it: relative to the evaluated data folder (a public card must not
    carry a hospital's directory layout), else its own name."""
    path, root = Path(path), Path(str(source))
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return path.name


def gate_section(records, indices, features, statistics, max_pixels: int, output_dir: Path, source, *,
                 progress: bool = True) -> tuple[dict, list[str]]:
    """(the `input_gate` section, notes). `features`: the (N, D) pooled features of `indices`' images, or None;
    `source`: the evaluated data folder (or Hub id), that file names are given relative to."""
    from ..inference.input_checks import image_findings
    from ..models.spcxr.imaging import load_image

    flagged = []
    for row, index in enumerate(tqdm(indices, desc="input gate", unit="image", disable=not progress, leave=False)):
        image = records[index]["image"]
        path = image if isinstance(image, (str, os.PathLike)) else None  # a Hub dataset's image has no tags
        feature = None if features is None else np.asarray(features[row])
        findings, score = image_findings(path, load_image(image, max_pixels=max_pixels), statistics, feature)
        if findings:
            flagged.append({"file": shown_name(path, source) if path is not None else f"record {index}", "_path": path,
                            "codes": [f["code"] for f in findings], "reasons": [f["reason"] for f in findings],
                            "ood_score": None if score is None else round(score, 3)})
    notes = []
    if statistics is None:
        notes.append("input gate: the model has no OOD statistics (ood_statistics.safetensors), so the "
                     "out-of-distribution check was not run; tag and pixel checks were")
    # Most findings first, then the farthest from the training set: the examples worth a look.
    flagged.sort(key=lambda item: (-len(item["codes"]), -(item["ood_score"] or 0.0)))
    paths = [item.pop("_path") for item in flagged]
    picturable = [(path, item) for path, item in zip(paths, flagged) if path is not None][:MAX_EXAMPLES]
    picture = None
    if picturable:
        from .explanation_plots import findings_grid

        items = [(path, [{"code": c, "reason": r} for c, r in zip(item["codes"], item["reasons"])])
                 for path, item in picturable]
        picture = findings_grid(items, Path(output_dir) / FLAGGED_PICTURE, columns=min(4, len(items))).name
    section = {"images": len(indices), "flagged": len(flagged),
               "codes": dict(Counter(code for item in flagged for code in item["codes"]).most_common()),
               "ood_threshold": None if statistics is None else float(statistics.threshold),
               "examples": flagged[:MAX_EXAMPLES], "flagged_files": [
                   {"file": item["file"], "codes": item["codes"]} for item in flagged],
               "picture": picture}
    return section, notes
