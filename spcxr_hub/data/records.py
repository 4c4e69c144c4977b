"""Loading a task's data from a local folder in the dataset's native layout or from a Hugging Face dataset id.

The helpers here are the shared reading code of the plugins: file checks with errors that name the missing file,
label look-ups that name the offending file or line, and the Hub path (`datasets.load_dataset`).
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..models.spcxr.imaging import load_image
from ..plugins.tasks import MULTI_LABEL, SEGMENTATION, SINGLE_LABEL, Task


# Dropped at the root of every synthetic dataset (`layouts.write_phantoms`), so what is trained on it can say so.
SYNTHETIC_MARKER = "SYNTHETIC_DATA.md"


class LayoutError(UsageError):
    """A folder that is not in the layout a task expects; the message names the missing or malformed file."""


class UnknownLabelError(UsageError):
    """A label in the data that the task does not know; the message names the file (and line) it came from."""


def require(root: Path, *parts: str, layout: str) -> Path:
    """`root/parts…`, or a LayoutError naming it and the layout it belongs to."""
    path = Path(root).joinpath(*parts)
    if not path.exists():
        raise LayoutError(f"{path}: missing (expected the {layout} layout under {root})")
    return path


def label_index(labels: Sequence[str], name: str, where: str) -> int:
    """Index of `name` in `labels` (case-insensitive), or an UnknownLabelError naming `where`."""
    lowered = [label.lower() for label in labels]
    if name.lower() not in lowered:
        raise UnknownLabelError(f"{where}: label {name!r} is not one of the task's labels {', '.join(labels)}")
    return lowered.index(name.lower())


def check_split(task: Task, split: str) -> None:
    if split not in task.splits:
        raise UsageError(f"task {task.name!r} has no split {split!r}; its splits: {', '.join(task.splits)}")


def load_records(task: Task, source: str | Path, split: str) -> Sequence[dict]:
    """Records (`{"image": …, "label": …}`, see `spcxr_hub.plugins.tasks`) of one split.

    `source` is a local folder in the task's native layout, or a Hugging Face dataset id loaded with
    `datasets.load_dataset` (columns renamed by `task.hub_columns`; string labels mapped to the task's labels).
    """
    if Path(source).exists():
        check_split(task, split)
        if not Path(source).is_dir():
            raise LayoutError(f"{source}: expected a folder in the {task.name} dataset's native layout")
        records = task.read_folder(Path(source), split)
        if not records:
            raise LayoutError(f"{source}: no images found for split {split!r} of task {task.name!r}")
        return records
    return load_hub_records(task, str(source), split)


def is_synthetic(source: str | Path) -> bool:
    """True for a folder written by a task's synthetic writer (it carries `layouts.SYNTHETIC_MARKER`)."""
    return (Path(source) / SYNTHETIC_MARKER).is_file()


def load_hub_records(task: Task, dataset_id: str, split: str):
    import datasets  # heavy: only when a Hub dataset is asked for

    try:
        dataset = datasets.load_dataset(dataset_id, split=split)
    except Exception as error:
        raise LayoutError(
            f"{dataset_id}: neither a local folder nor a loadable Hugging Face dataset "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from error
    renames = {old: new for old, new in task.hub_columns.items() if old in dataset.column_names and old != new}
    if renames:
        dataset = dataset.rename_columns(renames)
    for column in ("image", "label"):
        if column not in dataset.column_names:
            raise LayoutError(
                f"{dataset_id}: no {column!r} column (columns: {', '.join(dataset.column_names)}); "
                f"map one with the task's hub_columns"
            )
    if task.kind == SINGLE_LABEL:
        names = getattr(dataset.features["label"], "names", None)  # a ClassLabel column stores indices
        if names:
            dataset = dataset.cast_column("label", datasets.Value("int64"))

        def to_index(example):
            name = names[example["label"]] if names else str(example["label"])
            name = task.hub_label_names.get(name, name)
            return {"label": label_index(task.labels, name, f"{dataset_id} ({split})")}

        dataset = dataset.map(to_index)
    elif task.kind == MULTI_LABEL and len(dataset[0]["label"]) != len(task.labels):
        raise LayoutError(f"{dataset_id}: label has {len(dataset[0]['label'])} entries, task has {len(task.labels)} labels")
    elif task.kind == SEGMENTATION and dataset[0]["label"] is None:
        raise LayoutError(f"{dataset_id}: empty mask column")
    return dataset


def load_mask(label) -> "np.ndarray":
    """A segmentation record's label → bool (H, W) foreground mask. The label is a mask image (path or array) or a
    list of them whose union is the mask (Montgomery ships left and right lung masks separately)."""
    parts = label if isinstance(label, (list, tuple)) else [label]
    masks = [load_image(part) > 0.5 for part in parts]
    return np.logical_or.reduce(masks)
