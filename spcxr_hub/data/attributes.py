"""Patient and acquisition attributes of the files of a split, for subgroup results (`--group-by`, `--metadata`).

Four attributes: `sex`, `age` (binned), `view` (PA, AP, ...) and `site`. Each file's value comes from, in order of
precedence:
1. a `--metadata` CSV keyed by file: a `file` column of file names or relative paths (a row matches the record
   whose path ends with it; the longest match wins) and columns named after the attributes;
2. the attributes a task's reader put in the record (`record["attributes"]`, named by `record["attributes_source"]`;
   the screening task carries NIH ChestX-ray14's `Patient Gender`, `Patient Age` and `View Position`), or the
   same-named columns of a Hub dataset;
3. the header of a DICOM input (PatientSex, PatientAge, ViewPosition, InstitutionName), read without its pixels.
A file without a readable value is *missing* for that attribute: counted, never guessed.
"""

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import InputNotFoundError, UsageError

ATTRIBUTES = ("sex", "age", "view", "site")
DICOM_TAGS = {"sex": "PatientSex", "age": "PatientAge", "view": "ViewPosition", "site": "InstitutionName"}
DICOM_SOURCE = "DICOM tags"
# Age groups by their upper bound (exclusive). Children (<18) are apart because pediatric films differ in anatomy,
# positioning and exposure; adults in twenty-year bands, so that each holds enough images of a typical hospital set
# (NIH ChestX-ray14's median age is 49) to bootstrap; 80 and over are apart because frailty, portable AP films and
# comorbidity rise steeply there. Finer bins (decades) would leave most groups of a test split too small.
AGE_GROUPS = ((18, "<18"), (40, "18–39"), (60, "40–59"), (80, "60–79"), (math.inf, "≥80"))
DICOM_AGE_UNITS = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}  # DICOM AS: nnnY / nnnM / nnnW / nnnD
SEXES = {"m": "M", "male": "M", "f": "F", "female": "F", "o": "O", "other": "O"}


class MetadataError(UsageError):
    """A --metadata CSV that cannot be read as one; the message names the file and what was expected."""


EXPECTED_CSV = f"a CSV with a 'file' column (file names or relative paths) and attribute columns among {', '.join(ATTRIBUTES)}"


@dataclass(frozen=True)
class Metadata:
    """A --metadata CSV: `rows` maps a file's path parts to its raw attribute values (the columns it has)."""

    path: Path
    columns: tuple[str, ...]
    rows: dict = field(repr=False)

    @property
    def source(self) -> str:
        return f"metadata CSV {self.path.name}"

    def lookup(self, image) -> dict | None:
        parts = Path(image).parts
        for start in range(len(parts)):
            if parts[start:] in self.rows:
                return self.rows[parts[start:]]
        return None


@dataclass(frozen=True)
class Grouping:
    """What `--group-by` / `--metadata` asked for: the attributes, in the order given, and the CSV if any."""

    attributes: tuple[str, ...]
    metadata: Metadata | None = None


def parse_group_by(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """`"sex,age"` (or a sequence) → `("sex", "age")`; an unknown name is a UsageError listing the known ones."""
    names = value.split(",") if isinstance(value, str) else list(value or ())
    names = [name.strip().lower() for name in names if name.strip()]
    unknown = [name for name in names if name not in ATTRIBUTES]
    if unknown:
        raise UsageError(f"--group-by: unknown attribute {', '.join(map(repr, unknown))}; known: {', '.join(ATTRIBUTES)}")
    return tuple(dict.fromkeys(names))


def grouping(group_by, metadata: str | Path | None = None) -> Grouping | None:
    """The checked options (None when subgroups were not asked for). Call it before any long work: bad input fails
    here, before a model is trained or evaluated."""
    attributes = parse_group_by(group_by)
    if metadata is not None and not attributes:
        raise UsageError(f"--metadata {metadata}: needs --group-by (which of {', '.join(ATTRIBUTES)} to report)")
    if not attributes:
        return None
    return Grouping(attributes, read_metadata(metadata) if metadata is not None else None)


def path_key(value: str) -> tuple[str, ...]:
    parts = PurePosixPath(value.strip().replace("\\", "/")).parts
    return tuple(part for part in parts if part != ".")


def read_metadata(path: str | Path) -> Metadata:
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"--metadata {path}: no such file (expected {EXPECTED_CSV})")
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            header = [name.strip() for name in reader.fieldnames or ()]
            lowered = {name.lower(): raw for name, raw in zip(header, reader.fieldnames or ())}
            if "file" not in lowered:
                raise MetadataError(f"--metadata {path}: no 'file' column (columns: {', '.join(header) or 'none'}); "
                                    f"expected {EXPECTED_CSV}")
            columns = tuple(name for name in ATTRIBUTES if name in lowered)
            rows = {}
            for row in reader:
                name = (row.get(lowered["file"]) or "").strip()
                if not name:
                    continue
                key = path_key(name)
                if key in rows:
                    raise MetadataError(f"--metadata {path}, line {reader.line_num}: file {name!r} listed twice")
                rows[key] = {column: (row.get(lowered[column]) or "").strip() for column in columns}
    except (UnicodeDecodeError, csv.Error, OSError) as error:
        raise MetadataError(f"--metadata {path}: unreadable ({type(error).__name__}); expected {EXPECTED_CSV}") from error
    return Metadata(path, columns, rows)


# ------------------------------------------------------------------------------------------------ normalising values


def age_years(raw) -> float | None:
    """Years from an integer or a DICOM age string ("063Y", "006M", "010W", "005D"); None if unreadable."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([YMWD]?)\s*", str(raw), flags=re.IGNORECASE)
    if not match:
        return None
    years = float(match[1]) / DICOM_AGE_UNITS[(match[2] or "Y").upper()]
    return years if years < 130 else None


def age_group(raw) -> str | None:
    years = age_years(raw)
    return None if years is None else next(label for bound, label in AGE_GROUPS if years < bound)


def normalise(attribute: str, raw) -> str | None:
    """A raw value → its group name (sex M/F/O, age group, upper-case view, site as written); None if unreadable."""
    text = "" if raw is None else str(raw).strip()
    if not text or text.lower() in ("nan", "none", "unknown"):
        return None
    if attribute == "sex":
        return SEXES.get(text.lower())
    if attribute == "age":
        return age_group(text)
    return text.upper() if attribute == "view" else text


# ----------------------------------------------------------------------------------------------- reading the sources


def dicom_header(image) -> dict:
    """The attribute tags of a DICOM file, read with `stop_before_pixels` (no pixel data decoded); {} if it is not one."""
    from ..models.spcxr.imaging import is_dicom

    if not isinstance(image, (str, Path)) or not is_dicom(image):
        return {}
    import pydicom

    try:
        header = pydicom.dcmread(image, stop_before_pixels=True, specific_tags=list(DICOM_TAGS.values()))
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError):
        return {}
    values = {attribute: header.get(tag) for attribute, tag in DICOM_TAGS.items()}  # a keyword gets the value itself
    return {attribute: str(value) for attribute, value in values.items() if value not in (None, "")}


@dataclass
class AttributeValues:
    """One attribute over the evaluated files: `values[i]` the group of file i (None: missing), where the values came
    from, and examples of values that could not be read."""

    values: list
    sources: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)

    @property
    def source(self) -> str:
        return ", ".join(self.sources) or "none"


def file_attributes(records, indices: Sequence[int], chosen: Grouping) -> dict[str, AttributeValues]:
    """attribute → AttributeValues over `records[i]` for i in `indices` (the files that were evaluated)."""
    found = {attribute: AttributeValues([None] * len(indices)) for attribute in chosen.attributes}
    columns = set(getattr(records, "column_names", None) or ())  # a Hub dataset: its columns, not decoded images
    hub = {name: records[name] for name in chosen.attributes if name in columns}
    for position, index in enumerate(indices):
        record = None if columns else records[index]
        image = record.get("image") if record is not None else None
        row = chosen.metadata.lookup(image) if chosen.metadata is not None and isinstance(image, (str, Path)) else None
        carried = (record or {}).get("attributes") or {}
        header = None
        for attribute, result in found.items():
            candidates = [] if row is None else [(row.get(attribute), chosen.metadata.source)]
            candidates.append((carried.get(attribute), (record or {}).get("attributes_source", "the dataset's records")))
            if attribute in hub:
                candidates.append((hub[attribute][index], "Hub dataset columns"))
            raw, source = next(((raw, source) for raw, source in candidates if raw not in (None, "")), (None, None))
            if raw is None:
                header = dicom_header(image) if header is None else header
                raw, source = header.get(attribute), DICOM_SOURCE
            value = normalise(attribute, raw)
            if value is None:
                if raw not in (None, "") and len(result.unreadable) < 3 and str(raw) not in result.unreadable:
                    result.unreadable.append(str(raw))
                continue
            result.values[position] = value
            if source not in result.sources:
                result.sources.append(source)
    return found
