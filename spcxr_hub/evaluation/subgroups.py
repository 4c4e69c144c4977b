"""Subgroup results for `metrics.json` (`--group-by sex,age,view,site`): per attribute, the headline metrics of each
group with 95% stratified bootstrap intervals (the same statistics and resampling as `confidence_intervals`), the
largest gap between two groups, and how many evaluated files had no value. Segmentation groups report Dice.

    "subgroups": {"<attribute>": {"source": str, "groups": {"<value>": {"count": int, "metrics": {"<name>":
                  {"value", "low", "high"}}}}, "largest_gap": {"metric", "difference", "between"} | null,
                  "missing": int}}

What cannot be computed is null, never NaN, with a line in the report's notes: a group too small to resample, a
metric undefined in a group (AUROC of a group with one class), files without the attribute.
"""

import numpy as np

from . import bootstrap
from ..data.attributes import AGE_GROUPS, file_attributes
from ..plugins.tasks import MULTI_LABEL, SEGMENTATION

# Below this many images a group's bootstrap draws the same few films over and over: its interval says nothing.
MIN_GROUP_SIZE = 5
NULL = {"value": None, "low": None, "high": None}
AGE_ORDER = {label: rank for rank, (_, label) in enumerate(AGE_GROUPS)}  # youngest first, not "<18" after "60–79"


def largest_gap(groups: dict) -> dict | None:
    """The largest difference of one metric between two groups (over all metrics defined in at least two groups):
    `between` lists the group with the higher value first. None when no metric is defined in two groups."""
    best = None
    names = dict.fromkeys(name for group in groups.values() for name in group["metrics"])
    for name in names:
        values = {value: group["metrics"][name]["value"] for value, group in groups.items()
                  if group["metrics"].get(name, NULL)["value"] is not None}
        if len(values) < 2:
            continue
        high, low = max(values, key=values.get), min(values, key=values.get)
        difference = float(values[high] - values[low])
        if best is None or difference > best["difference"]:
            best = {"metric": name, "difference": difference, "between": [high, low]}
    return best


def segmentation_inputs(inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per image (true positives, predicted + reference pixels): pooled Dice of any set of images from sums."""
    overlap = np.array([np.count_nonzero((p != 0) & (r != 0)) for p, r in zip(inputs["predictions"], inputs["references"])])
    total = np.array([np.count_nonzero(p) + np.count_nonzero(r) for p, r in zip(inputs["predictions"], inputs["references"])])
    return overlap.astype(float), total.astype(float)


def group_metrics(task, members: np.ndarray, scores, references, names) -> dict:
    """The metrics of one group (positions `members` of the evaluated images), each with its interval."""
    if task.kind == SEGMENTATION:
        overlap, total = scores[0][members], scores[1][members]

        def dice(idx):
            with np.errstate(invalid="ignore", divide="ignore"):
                return 2 * overlap[idx].sum(axis=1) / total[idx].sum(axis=1)
        indices = bootstrap.resample_indices(np.zeros(len(members), int))
        return {"dice": bootstrap.interval(dice, indices, len(members))}
    from .trust_report import headline_intervals

    group_references = references[members]
    indices = bootstrap.resample_indices(bootstrap.strata_of(group_references))
    found = headline_intervals(scores[members], group_references, list(task.labels), task.kind == MULTI_LABEL,
                               indices)["metrics"]
    return {name: found.get(name, dict(NULL)) for name in names}


def subgroup_section(task, records, predictions: dict, inputs: dict, chosen, names: list[str]) -> tuple[dict, list]:
    """(the `subgroups` section, notes). `names`: the metrics reported (those of `confidence_intervals`; Dice for
    segmentation); `chosen`: the `spcxr_hub.data.attributes.Grouping` of the command line."""
    from .calibration import probabilities

    evaluated = predictions["indices"]
    if task.kind == SEGMENTATION:
        scores, references, names = segmentation_inputs(inputs), None, ["dice"]
    else:
        scores = probabilities(np.asarray(predictions["logits"], float), task.kind == MULTI_LABEL)
        references = np.asarray(inputs["references"])
    section, notes = {}, []
    for attribute, found in file_attributes(records, evaluated, chosen).items():
        values = np.array([value if value is not None else "" for value in found.values], dtype=object)
        missing = int((values == "").sum())
        groups, small, undefined = {}, [], []
        for value in sorted(set(values) - {""}, key=lambda value: (AGE_ORDER.get(value, len(AGE_ORDER)), value)):
            members = np.flatnonzero(values == value)
            if len(members) < MIN_GROUP_SIZE:
                metrics = {name: dict(NULL) for name in names}
                small.append(f"{value} ({len(members)})")
            else:
                metrics = group_metrics(task, members, scores, references, names)
                nulls = [name for name, row in metrics.items() if row["value"] is None]
                if nulls:
                    undefined.append(f"{value}: {', '.join(nulls)}")
            groups[value] = {"count": int(len(members)), "metrics": metrics}
        section[attribute] = {"source": found.source, "groups": groups, "largest_gap": largest_gap(groups),
                              "missing": missing}
        notes += attribute_notes(attribute, found, missing, len(evaluated), small, undefined, chosen)
    return section, notes


def attribute_notes(attribute, found, missing, count, small, undefined, chosen) -> list[str]:
    notes = []
    if missing == count:
        csv = f" or its column in --metadata {chosen.metadata.path.name}" if chosen.metadata else ""
        notes.append(f"subgroups {attribute}: none of the {count} evaluated files has a {attribute} (looked in the "
                     f"dataset's records, DICOM tags{csv}); pass --metadata CSV with a '{attribute}' column")
    elif missing:
        notes.append(f"subgroups {attribute}: {missing} of {count} evaluated files have no {attribute}; counted in "
                     f"'missing', left out of the groups")
    if found.unreadable:
        notes.append(f"subgroups {attribute}: unreadable values (e.g. {', '.join(map(repr, found.unreadable))}) "
                     "counted as missing")
    if small:
        notes.append(f"subgroups {attribute}: groups under {MIN_GROUP_SIZE} images, metrics not computed (n/a): "
                     f"{', '.join(small)}")
    if undefined:
        notes.append(f"subgroups {attribute}: undefined in a group (a class absent from it), n/a: "
                     f"{'; '.join(undefined)}")
    return notes
