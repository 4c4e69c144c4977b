"""The pretraining data: where images come from (a folder, a Hub dataset, downloaded or streamed, or phantoms), how
each process gets its share of them, and the micro-batches the loop reads.

Exact resume rests here: the order of an epoch is a permutation drawn from (seed, epoch) and each sample's
augmentation is seeded by (seed, epoch, index), so the batches of step s are a pure function of s, whatever the number
of data-loading workers; a stream is read again from the start of its epoch and the batches already trained on are
dropped. Unreadable images are skipped (the next readable one takes their place) and reported with the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import UsageError, one_line
from ..models.spcxr.imaging import ImageDecodeError, list_images, load_image
from .augmentation import Augmentation

if TYPE_CHECKING:
    from .pretraining_options import PretrainOptions


class UnreadableImageError(UsageError):
    """An image that cannot be decoded, with `--strict`."""


def _decode(value, max_pixels: int) -> np.ndarray:
    """A Hub dataset cell (undecoded Image dict, path, bytes, PIL image, array) → (H, W) float32 in [0, 1]."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return load_image(value["bytes"], max_pixels=max_pixels)
        if value.get("path"):
            return load_image(value["path"], max_pixels=max_pixels)
        raise ImageDecodeError("empty image cell (no bytes, no path)")
    if value is None:
        raise ImageDecodeError("missing image (None)")
    return load_image(value, max_pixels=max_pixels)


class FolderSource:
    """Image files under a folder (recursive)."""

    def __init__(self, folder: Path, paths: list[Path], max_pixels: int):
        self.paths, self.max_pixels = paths, max_pixels
        self.description = f"{len(paths)} images under {folder}"

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return str(self.paths[index])

    def load(self, index: int) -> np.ndarray:
        return load_image(self.paths[index], max_pixels=self.max_pixels)


class HubSource:
    """A (downloaded) Hugging Face dataset's image column."""

    def __init__(self, dataset, dataset_id: str, split: str, column: str, max_pixels: int):
        self.dataset, self.column, self.max_pixels = dataset, column, max_pixels
        self.dataset_id, self.split = dataset_id, split
        self.description = (f"{len(dataset)} images of the Hugging Face dataset {dataset_id} "
                            f"(split {split}, column {column})")

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, index: int) -> str:
        return f"{self.dataset_id}[{self.split}][{index}]"

    def load(self, index: int) -> np.ndarray:
        try:
            return _decode(self.dataset[index][self.column], self.max_pixels)
        except ImageDecodeError as error:
            raise ImageDecodeError(f"{self.name(index)}: {one_line(error)}") from None


class SyntheticSource:
    """Phantom chest radiographs from `spcxr_hub.data.synthetic` (normal and abnormal), phantom i drawn from seed i."""

    def __init__(self, count: int, resolution: int):
        self.count, self.resolution = count, resolution
        self.description = (f"{count} synthetic phantom radiographs ({resolution}×{resolution}, "
                            "spcxr_hub.data.synthetic)")

    def __len__(self) -> int:
        return self.count

    def name(self, index: int) -> str:
        return f"synthetic phantom {index}"

    def load(self, index: int) -> np.ndarray:
        from ..data import synthetic

        rng = np.random.default_rng([index, 0x5C])
        findings = synthetic.sample_findings(rng, str(rng.choice(synthetic.LABELS)))
        return synthetic.generate(index, self.resolution, findings).image


class AugmentedImages(torch.utils.data.Dataset):
    """Map-style training data: `dataset[(epoch, index)]` → the image at `index` (or, when it is unreadable, the next
    readable one) augmented with a generator seeded by (seed, epoch, index)."""

    def __init__(self, source, augmentation: Augmentation, seed: int, strict: bool):
        self.source, self.augmentation, self.seed, self.strict = source, augmentation, seed, strict
        self.known_bad: dict[int, str] = {}  # per process / worker: a cache, the outcome does not depend on it

    def __len__(self) -> int:
        return len(self.source)

    def load_readable(self, index: int) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """The image at `index` or the first readable one after it (cyclically); the unreadable ones met on the way."""
        bad = []
        n = len(self.source)
        for offset in range(n):
            j = (index + offset) % n
            if j in self.known_bad:  # still reported: the caller keeps the first report of each file
                bad.append((self.source.name(j), self.known_bad[j]))
                continue
            try:
                return self.source.load(j), bad
            except ImageDecodeError as error:
                reason = one_line(error)
                if self.strict:
                    raise UnreadableImageError(f"unreadable image (--strict): {reason}") from None
                self.known_bad[j] = reason
                bad.append((self.source.name(j), reason))
        raise UsageError(f"no readable image in the data ({len(bad)} tried, e.g. {bad[0][1] if bad else '-'})")

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        image, bad = self.load_readable(index)
        rng = np.random.default_rng([self.seed, epoch, index])
        return {"pixel_values": self.augmentation(image, rng), "index": index, "bad": bad}


def collate_samples(items: list[dict]) -> dict:
    """Samples of `AugmentedImages` → one micro-batch: stacked images, their indices, the unreadable files met."""
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in items]),
        "index": [item["index"] for item in items],
        "bad": [entry for item in items for entry in item["bad"]],
    }


class EpochBatchSampler(torch.utils.data.Sampler):
    """This process's micro-batches of one epoch, from micro-batch `start` on.

    The epoch's order is a permutation drawn from (seed, epoch). Optimizer step s takes the global batch
    `perm[s·G : (s+1)·G]` (G = batch × processes × accumulation; the incomplete last one is dropped); its
    micro-batch a on process r is the slice of `batch` images at `(a·processes + r)·batch`: processes see disjoint
    images, and the order does not depend on the number of data-loading workers.
    """

    def __init__(self, size: int, epoch: int, *, seed: int, batch_size: int, num_processes: int, process_index: int,
                 grad_accum: int, start: int = 0):
        self.size, self.epoch, self.seed, self.batch_size = size, epoch, seed, batch_size
        self.num_processes, self.process_index = num_processes, process_index
        self.grad_accum, self.start = grad_accum, start
        self.global_batch = batch_size * num_processes * grad_accum
        self.steps = size // self.global_batch

    def __len__(self) -> int:
        return max(0, self.steps * self.grad_accum - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = np.random.default_rng([self.seed, self.epoch, 0xDA7A]).permutation(self.size)
        for micro in range(self.start, self.steps * self.grad_accum):
            step, accum = divmod(micro, self.grad_accum)
            begin = step * self.global_batch + (accum * self.num_processes + self.process_index) * self.batch_size
            yield [(self.epoch, int(i)) for i in order[begin : begin + self.batch_size]]


class StreamingImages(torch.utils.data.IterableDataset):
    """Streaming training data: micro-batches (dicts as `collate_samples` makes) from this process's shard of a Hub
    IterableDataset, shuffled with a buffer reseeded per epoch; unreadable images are skipped and reported."""

    def __init__(self, dataset, column: str, dataset_id: str, augmentation: Augmentation, *, seed: int,
                 process_index: int, batch_size: int, strict: bool, max_pixels: int):
        self.dataset, self.column, self.dataset_id, self.augmentation = dataset, column, dataset_id, augmentation
        self.seed, self.process_index, self.batch_size = seed, process_index, batch_size
        self.strict, self.max_pixels = strict, max_pixels
        self.epoch = 0

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        worker_id = worker.id if worker is not None else 0
        self.dataset.set_epoch(self.epoch)
        items, bad = [], []
        for position, example in enumerate(self.dataset):
            name = (f"{self.dataset_id} (process {self.process_index}, worker {worker_id}, epoch {self.epoch}, "
                    f"item {position})")
            try:
                image = _decode(example[self.column], self.max_pixels)
            except ImageDecodeError as error:
                if self.strict:
                    raise UnreadableImageError(f"unreadable image (--strict): {name}: {one_line(error)}") from None
                bad.append((name, one_line(error)))
                continue
            rng = np.random.default_rng([self.seed, self.epoch, self.process_index, worker_id, position])
            items.append({"pixel_values": self.augmentation(image, rng), "index": position, "bad": []})
            if len(items) == self.batch_size:
                batch = collate_samples(items)
                batch["bad"], items, bad = bad, [], []
                yield batch


@dataclass
class Data:
    description: str
    synthetic: bool
    map_style: AugmentedImages | None = None
    streaming: StreamingImages | None = None
    size: int | None = None  # images (map-style) or the dataset's announced size (streaming), when known
    preview: list[np.ndarray] | None = None


def _find_image_column(dataset, requested: str | None, dataset_id: str, first_example=None) -> str:
    import datasets

    features = getattr(dataset, "features", None)
    columns = list(features) if features is not None else list(first_example or {})
    if requested is not None:
        if requested not in columns:
            raise UsageError(f"{dataset_id}: no column {requested!r} (columns: {', '.join(columns) or 'none'})")
        return requested
    if features is not None:
        images = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    else:
        from PIL import Image

        images = [name for name, value in (first_example or {}).items()
                  if isinstance(value, Image.Image) or (isinstance(value, dict) and "bytes" in value)]
    if not images:
        raise UsageError(
            f"{dataset_id}: no image column (columns: {', '.join(columns) or 'none'}); name it with --image-column"
        )
    return "image" if "image" in images else images[0]


def _undecoded(dataset, column: str):
    """The dataset with `column` left as {bytes, path}: decoding (and its errors) go through `imaging.load_image`."""
    import datasets

    features = getattr(dataset, "features", None)
    if features is not None and isinstance(features.get(column), datasets.Image):
        return dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def _marked_synthetic(folder: Path) -> Path | None:
    """The marker file of a synthetic dataset (`data.SYNTHETIC_MARKER`) at `folder` or above it, if any."""
    from ..data.records import SYNTHETIC_MARKER, is_synthetic

    for root in (folder.resolve(), *folder.resolve().parents):
        if is_synthetic(root):
            return root / SYNTHETIC_MARKER
    return None


def open_data(options: PretrainOptions, augmentation: Augmentation, *, process_index: int, num_processes: int) -> Data:
    """The run's data, checked: a non-empty folder, a Hub dataset with an image column, or phantoms."""
    if options.data == "synthetic":
        if options.streaming:
            raise UsageError("--streaming applies to Hub datasets, not to --data synthetic")
        source = SyntheticSource(options.synthetic_size, max(64, augmentation.size))
        return Data(source.description, True, AugmentedImages(source, augmentation, options.seed, options.strict),
                    size=len(source))
    folder = Path(options.data)
    if folder.is_dir():
        if options.streaming:
            raise UsageError(f"--streaming applies to Hub datasets, not to the folder {folder}")
        paths = list_images(folder)
        if not paths:
            raise UsageError(f"{folder}: no images found (searched recursively for PNG, JPEG, TIFF, BMP and DICOM)")
        source = FolderSource(folder, paths, options.max_pixels)
        synthetic = _marked_synthetic(folder)
        if synthetic:
            source.description += f" (synthetic phantoms: {synthetic} marks the dataset)"
        return Data(source.description, bool(synthetic),
                    AugmentedImages(source, augmentation, options.seed, options.strict), size=len(source))
    if folder.exists():
        raise UsageError(f"{folder}: a file, not a folder of images (nor 'synthetic', nor a Hub dataset id)")
    return _open_hub(options, augmentation, process_index=process_index, num_processes=num_processes)


def _open_hub(options: PretrainOptions, augmentation: Augmentation, *, process_index: int, num_processes: int) -> Data:
    import datasets

    try:
        dataset = datasets.load_dataset(options.data, split=options.split, streaming=options.streaming)
    except Exception as error:  # offline, unknown id, unknown split…: the message is what the user needs
        raise UsageError(
            f"{options.data}: not a folder, not 'synthetic', and not a loadable Hugging Face dataset "
            f"({type(error).__name__}: {one_line(error)})"
        ) from None
    if not options.streaming:
        column = _find_image_column(dataset, options.image_column, options.data)
        dataset = _undecoded(dataset.select_columns([column]), column)
        if len(dataset) == 0:
            raise UsageError(f"{options.data}: split {options.split!r} is empty")
        source = HubSource(dataset, options.data, options.split, column, options.max_pixels)
        return Data(source.description, False, AugmentedImages(source, augmentation, options.seed, options.strict),
                    size=len(source))
    first = None
    if getattr(dataset, "features", None) is None:
        first = next(iter(dataset.take(1)), None)
        if first is None:
            raise UsageError(f"{options.data}: split {options.split!r} is empty")
    column = _find_image_column(dataset, options.image_column, options.data, first)
    dataset = _undecoded(dataset.select_columns([column]), column)
    preview = []
    for example in dataset.take(max(options.preview_images * 4, 8)):
        try:
            preview.append(_decode(example[column], options.max_pixels))
        except ImageDecodeError:
            continue
        if len(preview) == options.preview_images:
            break
    if not preview:
        raise UsageError(f"{options.data}: no readable image at the start of split {options.split!r}")
    from datasets.distributed import split_dataset_by_node

    shuffled = dataset.shuffle(seed=options.seed, buffer_size=options.shuffle_buffer)
    shard = split_dataset_by_node(shuffled, rank=process_index, world_size=num_processes)
    size = None
    splits = getattr(getattr(dataset, "info", None), "splits", None)
    if splits and options.split in splits and splits[options.split].num_examples:
        size = int(splits[options.split].num_examples)
    stream = StreamingImages(shard, column, options.data, augmentation, seed=options.seed, process_index=process_index,
                             batch_size=options.batch_size, strict=options.strict, max_pixels=options.max_pixels)
    description = f"the Hugging Face dataset {options.data} (split {options.split}, column {column}, streamed)"
    return Data(description, False, streaming=stream, size=size, preview=preview)


def preview_images(data: Data, augmentation: Augmentation, count: int) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """A fixed batch (count, 1, S, S) for the reconstruction previews: the first images, unaugmented (unreadable ones
    replaced as in training); and the unreadable images met."""
    bad: list[tuple[str, str]] = []
    if data.map_style is not None:
        images = []
        for index in range(min(count, len(data.map_style))):
            image, skipped = data.map_style.load_readable(index)
            images.append(image)
            bad.extend(skipped)
    else:
        images = data.preview
    return torch.stack([augmentation.plain(image) for image in images]), bad


def map_style_batches(data: AugmentedImages, *, start_step: int, steps_per_epoch: int, seed: int, batch_size: int,
                      num_processes: int, process_index: int, grad_accum: int, num_workers: int, pin_memory: bool
                      ) -> Iterator[tuple[int, dict]]:
    """(epoch, micro-batch) for this process from optimizer step `start_step` on, epoch after epoch."""
    epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
    start = step_in_epoch * grad_accum
    while True:
        sampler = EpochBatchSampler(len(data), epoch, seed=seed, batch_size=batch_size, num_processes=num_processes,
                                    process_index=process_index, grad_accum=grad_accum, start=start)
        loader = torch.utils.data.DataLoader(
            data, batch_sampler=sampler, collate_fn=collate_samples, num_workers=num_workers, pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(seed),  # keeps the loader off torch's global RNG
        )
        for batch in loader:
            yield epoch, batch
        epoch, start = epoch + 1, 0


def streaming_batches(data: StreamingImages, *, epoch: int, skip: int, num_workers: int, pin_memory: bool,
                      position: list[int]) -> Iterator[tuple[int, dict]]:
    """(epoch, micro-batch) from this process's stream, endlessly (epoch after epoch). On resume the first `skip`
    micro-batches of `epoch` are read again and dropped, so the order continues exactly. `position` is kept at
    [epoch, micro-batches of the epoch handed out]."""
    while True:
        data.epoch = epoch
        loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                                             generator=torch.Generator().manual_seed(data.seed))
        seen = 0
        for batch in loader:
            seen += 1
            if seen <= skip:
                continue
            position[:] = [epoch, seen]
            yield epoch, batch
        if seen == 0:
            raise UsageError(f"{data.dataset_id}: process {data.process_index} got no batch of {data.batch_size} "
                             "readable images from its shard")
        epoch, skip = epoch + 1, 0
        position[:] = [epoch, 0]
