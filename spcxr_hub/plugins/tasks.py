"""The Task contract: everything the hub needs to fine-tune, evaluate, publish and demo one chest-X-ray task.

Public API. A plugin builds `Task` objects and registers them from its `register_tasks(register)` hook.

A *record* is one labelled example as a dict: `{"image": <path or image>, "label": <label>}` where the label is
- an int class index for `SINGLE_LABEL`,
- a list of 0/1 per label (multi-hot) for `MULTI_LABEL`,
- for `SEGMENTATION`, a mask image (path or array; non-zero pixels = foreground, class 1) or a list of them whose
  union is the mask (Montgomery ships the left and right lung separately).
A reader may add `"attributes": {"sex": …, "age": …, "view": …, "site": …}` (raw values, any subset) and
`"attributes_source"` (where they came from, e.g. "NIH CSV Data_Entry_2017.csv") for subgroup results (`--group-by`).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

SINGLE_LABEL = "single-label"
MULTI_LABEL = "multi-label"
SEGMENTATION = "segmentation"
KINDS = (SINGLE_LABEL, MULTI_LABEL, SEGMENTATION)

FolderReader = Callable[[Path, str], list[dict]]
"""`read_folder(root, split)` → records of that split, from the dataset's native folder layout. It raises
`spcxr_hub.data.records.LayoutError` naming the missing file when `root` is not in the layout."""

SyntheticWriter = Callable[[Path, int, int], Path]
"""`write_synthetic(root, images_per_class, seed)` writes a small dataset in the task's native layout, made with
`spcxr_hub.data.synthetic`, and returns `root`: the demo and tests use it."""


class TaskError(UsageError):
    """A task definition that breaks the contract; the message names the field."""


@dataclass(frozen=True)
class FinetuneDefaults:
    """Default fine-tuning recipe of a task (DeiT/BEiT style: AdamW, layer-wise lr decay, warm-up, cosine)."""

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 5e-4
    layer_decay: float = 0.65
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    drop_path_rate: float = 0.1
    image_size: int = 224


@dataclass(frozen=True)
class CardText:
    """What the task's model card says about its data and use."""

    dataset_name: str
    dataset_citation: str
    intended_use: str
    limitations: str
    dataset_url: str = ""
    hub_datasets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    """One task. Required: name, kind, labels, read_folder, metrics, model_id, card.

    Args:
        name: command-line name (`spcxr finetune NAME`).
        kind: `SINGLE_LABEL`, `MULTI_LABEL` or `SEGMENTATION`.
        labels: class names in index order (segmentation: including "background" at 0).
        read_folder: reader of the native layout (see `FolderReader`).
        metrics: `evaluate` modules, as paths to module scripts shipped in the plugin (work offline) or Hub ids.
        model_id: default Hub id of the fine-tuned model, e.g. `spcxr/vit-s-covid`.
        card: model-card text.
        hub_columns: renames from a Hub dataset's columns to `image` and `label`.
        hub_label_names: for Hub datasets whose label column holds strings not equal to `labels`: their mapping.
        splits: splits the native layout provides.
        defaults: fine-tuning recipe.
        write_synthetic: writer of a synthetic dataset in the native layout (see `SyntheticWriter`).
        description: one line for `spcxr plugins`.
    """

    name: str
    kind: str
    labels: tuple[str, ...]
    read_folder: FolderReader
    metrics: tuple[str | Path, ...]
    model_id: str
    card: CardText
    hub_columns: Mapping[str, str] = field(default_factory=dict)
    hub_label_names: Mapping[str, str] = field(default_factory=dict)
    splits: tuple[str, ...] = ("train", "test")
    defaults: FinetuneDefaults = FinetuneDefaults()
    write_synthetic: SyntheticWriter | None = None
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or any(c.isspace() for c in self.name):
            raise TaskError(f"Task.name must be a non-empty word, got {self.name!r}")
        if self.kind not in KINDS:
            raise TaskError(f"Task {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if len(self.labels) < (1 if self.kind == MULTI_LABEL else 2) or len(set(self.labels)) != len(self.labels):
            raise TaskError(f"Task {self.name!r}: labels must be distinct class names (two or more), got {self.labels!r}")
        if not callable(self.read_folder):
            raise TaskError(f"Task {self.name!r}: read_folder must be callable (root, split) -> records")
        if not self.metrics:
            raise TaskError(f"Task {self.name!r}: metrics must name at least one evaluate module")
        if not isinstance(self.model_id, str) or self.model_id.count("/") != 1:
            raise TaskError(f"Task {self.name!r}: model_id must be a Hub id 'org/name', got {self.model_id!r}")
        if not isinstance(self.card, CardText):
            raise TaskError(f"Task {self.name!r}: card must be a spcxr_hub.CardText")

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def is_segmentation(self) -> bool:
        return self.kind == SEGMENTATION
