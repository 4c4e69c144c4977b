"""The trust sections of a classifier's card, read from `metrics.json` (never typed): the headline metrics' bootstrap
intervals, calibration before and after temperature scaling with the reliability diagram, the operating points, the
conformal prediction sets, subgroups, the input gate and the explanation grid.

A part `metrics.json` lacks renders as "not evaluated", with the reason from its `notes` when a note names that part
(notes start with "calibration:", "operating points:", …); nulls render as "n/a"; numbers have 3 decimals and
intervals read "0.912 (0.871–0.948)". A picture is linked only when its file is in the card's folder (the folder
`spcxr export` copies every top-level PNG of, `publishing.PLOT_SUFFIX`); otherwise the card says "not drawn".

Entry point: `trust_context(metrics, folder, template_dirs) -> dict` (the rendered `markdown` and flags for the
main template).
"""

from __future__ import annotations

import math
from pathlib import Path

from .card_facts import is_hub_id

TEMPLATE = "trust.md.j2"
DIGITS = 3
NOT_AVAILABLE = "n/a"
# Which notes name which part: a note names a part when it starts with one of these (lower-cased).
PART_NOTES = {
    "calibration": ("calibration", "temperature scaling"),
    "confidence_intervals": ("confidence interval", "bootstrap"),
    "operating_points": ("operating point",),
    "prediction_sets": ("prediction set",),
    "subgroups": ("subgroup",),
    "input_gate": ("input gate", "out-of-distribution", "ood"),
    "explanations": ("explanation",),
}
CALIBRATION_ROWS = (("ece", "ECE ({bins} equal-width bins)"), ("adaptive_ece", "adaptive ECE ({bins} equal-mass bins)"),
                    ("brier", "Brier score"), ("nll", "negative log-likelihood"))
RATES = (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("ppv", "PPV"), ("npv", "NPV"))
METHODS = {"gradcam": "Grad-CAM", "rollout": "attention rollout"}


# ------------------------------------------------------------------------------------------------- formatting


def number(value, digits: int = DIGITS) -> str:
    """Floats with `digits` decimals, ints as they are; null, NaN, infinities and non-numbers as "n/a"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return NOT_AVAILABLE
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}" if math.isfinite(value) else NOT_AVAILABLE


def interval(entry) -> str:
    """{value, low, high} → "0.912 (0.871–0.948)"; the value alone when the bounds are null; "n/a" without one."""
    if isinstance(entry, (int, float)) and not isinstance(entry, bool):
        return number(entry)
    if not isinstance(entry, dict) or number(entry.get("value")) == NOT_AVAILABLE:
        return NOT_AVAILABLE
    value, low, high = (number(entry.get(key)) for key in ("value", "low", "high"))
    return value if NOT_AVAILABLE in (low, high) else f"{value} ({low}–{high})"


def cell(text) -> str:
    """Text from metrics.json made safe for one Markdown table cell (or one line)."""
    # "<" escaped too: the Hub renders inline HTML, and group names or reasons are free text.
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def source_text(source) -> str:
    """Where an attribute came from, without local paths (only a Hub id or a file's name is published)."""
    source = str(source or "")
    return source if is_hub_id(source) else (Path(source).name or source or "unknown")


def section(metrics: dict, key: str) -> dict | None:
    value = metrics.get(key)
    return value if isinstance(value, dict) and value else None


# ------------------------------------------------------------------------------------------------- notes, pictures


def notes_for(notes: list, part: str, *, absent: bool = False) -> list[str]:
    """The notes naming `part`, their "part:" prefix dropped. For an absent part with no such note, the notes that
    mention it anywhere (the validation-split note lists every part it skipped)."""
    keys = PART_NOTES[part]
    lines = [str(note) for note in notes if isinstance(note, str) and note.strip()]
    named = [note for note in lines if note.lower().startswith(keys)]
    if not named and absent:
        named = [note for note in lines if any(key in note.lower() for key in keys)]
    stripped = []
    for note in named:
        head, colon, rest = note.partition(":")
        stripped.append(cell(rest.strip() if colon and head.lower().rstrip("s") in keys else note).rstrip("."))
    return stripped


def reason(notes: list, part: str) -> str:
    reasons = notes_for(notes, part, absent=True)
    return "; ".join(reasons) if reasons else f"`metrics.json` has no `{part}` section"


def not_evaluated(notes: list, part: str) -> str:
    return f"**Not evaluated**: {reason(notes, part)}."


def picture(folder: Path, name, alt: str) -> dict:
    """{"markdown": an image link} for a PNG in the card's folder, else {"missing": why it is not shown}. Only a bare
    file name is linked: `spcxr export` copies the folder's top-level PNGs, nothing below or outside it."""
    if not name:
        return {"missing": f"{alt}: not drawn."}
    name = str(name)
    if Path(name).name != name or not name.lower().endswith(".png") or not (folder / name).is_file():
        return {"missing": f"{alt}: not drawn (`{cell(name)}` is not in the model's folder)."}
    return {"markdown": f"![{alt}]({name})"}


# ------------------------------------------------------------------------------------------------- the parts


def level_of(metrics: dict) -> str:
    """"95%" from the intervals' `level` (every interval of the report shares it), "" when unrecorded."""
    level = (section(metrics, "confidence_intervals") or {}).get("level")
    return f"{100 * level:g}%" if isinstance(level, (int, float)) and not isinstance(level, bool) else ""


def interval_rows(metrics: dict) -> tuple[list, str | None]:
    intervals = section(metrics, "confidence_intervals")
    if intervals is None or not isinstance(intervals.get("metrics"), dict) or not intervals["metrics"]:
        return [], None
    rows = [(cell(name), interval(entry)) for name, entry in intervals["metrics"].items()]
    by = f", stratified by {cell(intervals['stratified_by'])}" if intervals.get("stratified_by") else ""
    text = f"{level_of(metrics)} bootstrap intervals ({number(intervals.get('resamples'))} resamples{by})"
    return rows, text.strip()


def calibration_part(metrics: dict, folder: Path, notes: list) -> dict | None:
    calibration = section(metrics, "calibration")
    if calibration is None:
        return None
    before, after = calibration.get("uncalibrated"), calibration.get("calibrated")
    before, after = (part if isinstance(part, dict) else {} for part in (before, after))
    bins = calibration.get("bins") or before.get("bins")
    temperature = calibration.get("temperature")
    scaled = temperature is not None and bool(after)
    rows = [(label.format(bins=number(bins)), number(before.get(key)), *([number(after.get(key))] if scaled else []))
            for key, label in CALIBRATION_ROWS]
    if isinstance(temperature, list):  # multi-label: one T per label
        temperature = ", ".join(number(t) for t in temperature)
        temperature_text = f"one temperature per label: {temperature}"
    else:
        temperature_text = f"T = {number(temperature)}" if number(temperature) != NOT_AVAILABLE else None
    return {"temperature": temperature_text if scaled else None, "rows": rows, "notes": notes_for(notes, "calibration"),
            "unscaled": None if scaled else reason(notes, "calibration"),
            "diagram": picture(folder, calibration.get("reliability_diagram"), "Reliability diagram")}


def operating_points_part(metrics: dict, notes: list) -> dict | None:
    points = section(metrics, "operating_points")
    rows = [row for row in (points or {}).get("rows") or [] if isinstance(row, dict)]
    if not rows:
        return None
    table = []
    for row in rows:
        criterion = f"target {cell(row.get('criterion', '?'))} {number(row.get('target'))}"
        if row.get("default"):
            criterion += " (default)"
        table.append((cell(row.get("label", "?")), criterion, number(row.get("threshold")),
                      *(interval(row.get(key)) for key, _ in RATES)))
    return {"chosen_on": cell(points.get("chosen_on") or "unknown"), "default": cell(points.get("default") or ""),
            "rates": [label for _, label in RATES], "rows": table, "notes": notes_for(notes, "operating_points")}


def prediction_sets_part(metrics: dict, notes: list) -> dict | None:
    sets = section(metrics, "prediction_sets")
    if sets is None:
        return None
    counts = sets.get("set_size_counts")
    sizes = ", ".join(f"{cell(size)}: {number(count)}" for size, count in counts.items()) \
        if isinstance(counts, dict) and counts else None
    multi_label = sets.get("method") == "multi-label"
    return {"method": "Multi-label" if multi_label else cell(sets.get("method") or "conformal"),
            "calibration_split": cell(sets.get("calibration_split") or "unknown"),
            "rows": ([("a set covers an image when", "it holds every finding present")] if multi_label else [])
            + [("target coverage", number(sets.get("target_coverage"))),
                     ("empirical coverage", number(sets.get("empirical_coverage"))),
                     ("mean set size", number(sets.get("mean_set_size"))),
                     ("calibration images", number(sets.get("num_calibration")))]
            + ([("images per set size", sizes)] if sizes else []),
            "notes": notes_for(notes, "prediction_sets")}


def subgroups_part(metrics: dict, notes: list) -> dict | None:
    subgroups = section(metrics, "subgroups")
    if subgroups is None:
        return None
    attributes = []
    for attribute, report in subgroups.items():
        report = report if isinstance(report, dict) else {}
        groups = {name: group for name, group in (report.get("groups") or {}).items() if isinstance(group, dict)}
        names = []  # metric columns in the order the groups list them
        for group in groups.values():
            names += [name for name in group.get("metrics") or {} if name not in names]
        rows = [(cell(value), number(group.get("count")),
                 *(interval((group.get("metrics") or {}).get(name)) for name in names))
                for value, group in groups.items()]
        gap = report.get("largest_gap")
        if isinstance(gap, dict) and len(gap.get("between") or []) == 2:
            first, second = (cell(name) for name in gap["between"])
            gap = f"{cell(gap.get('metric', '?'))} {number(gap.get('difference'))}, between {first} and {second}"
        else:
            gap = NOT_AVAILABLE
        attributes.append({"name": cell(attribute), "source": cell(source_text(report.get("source"))),
                           "columns": [cell(name) for name in names], "rows": rows, "gap": gap,
                           "missing": number(report.get("missing", 0))})
    return {"attributes": attributes, "notes": notes_for(notes, "subgroups")}


def input_gate_part(metrics: dict, folder: Path, notes: list) -> dict | None:
    gate = section(metrics, "input_gate")
    if gate is None:
        return None
    images, flagged = gate.get("images"), gate.get("flagged")
    share = f" ({100 * flagged / images:.1f}%)" if isinstance(images, int) and isinstance(flagged, int) \
        and images > 0 else ""
    codes = gate.get("codes") if isinstance(gate.get("codes"), dict) else {}
    examples = []
    for example in gate.get("examples") or []:
        if isinstance(example, dict):
            reasons = [cell(reason) for reason in example.get("reasons") or []]
            examples.append((cell(Path(str(example.get("file", "?"))).name),
                             ", ".join(cell(code) for code in example.get("codes") or []) or NOT_AVAILABLE,
                             "; ".join(reasons) or NOT_AVAILABLE, number(example.get("ood_score"))))
    return {"images": number(images), "flagged": number(flagged), "share": share,
            "codes": [(cell(code), number(count)) for code, count in codes.items()],
            "ood_threshold": number(gate.get("ood_threshold")), "examples": examples,
            "picture": picture(folder, gate.get("picture"), "Flagged examples"),
            "notes": notes_for(notes, "input_gate")}


def explanations_part(metrics: dict, folder: Path, notes: list) -> dict | None:
    explanations = section(metrics, "explanations")
    if explanations is None:
        return None
    method = explanations.get("method")
    return {"method": METHODS.get(method, cell(method or "unknown")), "errors_shown": number(explanations.get(
        "errors_shown")), "picture": picture(folder, explanations.get("picture"), "Most confident errors"),
            "notes": notes_for(notes, "explanations")}


def trust_context(metrics: dict, folder: Path, template_dirs, *, synthetic: bool = False) -> dict:
    """{"markdown": the trust sections, "calibrated": a temperature was evaluated, "subgroups": attribute names}.
    `template_dirs`: where `trust.md.j2` is looked for, first match wins (a custom card folder, then the package's)."""
    import jinja2

    folder = Path(folder)
    notes = [note for note in metrics.get("notes") or [] if isinstance(note, str)]
    intervals, interval_text = interval_rows(metrics)
    parts = {
        "intervals": intervals, "interval_text": interval_text,
        "calibration": calibration_part(metrics, folder, notes),
        "operating_points": operating_points_part(metrics, notes),
        "prediction_sets": prediction_sets_part(metrics, notes),
        "subgroups": subgroups_part(metrics, notes),
        "input_gate": input_gate_part(metrics, folder, notes),
        "explanations": explanations_part(metrics, folder, notes),
    }
    missing = {part: not_evaluated(notes, part) for part in PART_NOTES}
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader([str(d) for d in template_dirs]),
                                     trim_blocks=True, lstrip_blocks=True, autoescape=False)
    markdown = environment.get_template(TEMPLATE).render(
        **parts, missing=missing, synthetic=synthetic, level=level_of(metrics),
        split=cell(metrics.get("split") or "test"), num_images=number(metrics.get("num_images")))
    calibration = parts["calibration"]
    return {"markdown": markdown.strip(),
            "calibrated": bool(calibration and calibration["temperature"]),
            "subgroups": [attribute["name"] for attribute in (parts["subgroups"] or {}).get("attributes", [])]}
