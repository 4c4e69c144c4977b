"""GMML self-supervised pretraining of SS-CXR with 🤗 Accelerate: `python pretrain.py …`,
`accelerate launch pretrain.py …` (and `spcxr pretrain …`).

One process, one GPU, many GPUs, many machines, FSDP or DDP on CPU: the launcher decides (see docs/pretraining.md);
this file only ever talks to an `Accelerator`.

Step (per micro-batch, on the device): clean batch → `gmml.corrupt` (a `torch.Generator` seeded from (seed, step,
micro-batch, rank)) → `SpcxrForMaskedImageModeling(corrupted, labels=clean, pixel_mask=mask)` → L1 on the corrupted
pixels → backward; every `--grad-accum` micro-batches: clip, set lr / weight decay from their schedules, AdamW step.

Recipe defaults (DESIGN.md §GMML, the official GMML code): AdamW, lr 5e-4 × global batch / 256 (linear warm-up over
10 epochs, cosine to 1e-6), weight decay cosine 0.04 → 0.4 (not on biases and norms), gradient clipping 3, corrupted
area per image ~ U[0.5, 0.75] filled with N(0, 1) noise (or, for half the images, rectangles pasted from another image
of the batch), 800 epochs, 64 images per GPU. Augmentation: random resized crop (scale 0.35-1: a CXR crop must keep
enough anatomy to be a chest), light intensity jitter (p 0.3), Gaussian blur (p 0.1); horizontal flips are off by
default because the heart side is anatomy, not noise (`--hflip` turns them on).

Exact resume: the data order is a pure function of (seed, epoch), each sample's augmentation of (seed, epoch, index),
each micro-batch's corruption of (seed, step, micro-batch, rank) and lr / weight decay of the step; `accelerator.
save_state` holds weights, optimizer, the global RNGs and the training progress. A run killed at any point and resumed
from its last checkpoint ends with bitwise the same weights as the uninterrupted run (same hardware and launch).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoints import META as CHECKPOINT_META
from .checkpoints import check_checkpoint, list_checkpoints, model_config_fingerprint, save_checkpoint
from ..models.spcxr.configuration_spcxr import SpcxrConfig
from ..errors import DEBUG_ENV as SPCXR_DEBUG_ENV
from ..errors import UsageError, internal_error_line, one_line
from .gmml import CorruptionConfig, corrupt
from ..models.spcxr.imaging import DEFAULT_MAX_PIXELS, ImageDecodeError, list_images, load_image
from ..hub.saving import atomic_directory, atomic_file
from .presets import CONFIG_PRESETS

__all__ = [
    "CONFIG_PRESETS",
    "Augmentation",
    "UsageError",
    "build_parser",
    "learning_rate_at",
    "main",
    "scaled_learning_rate",
    "weight_decay_at",
]

PROG = "pretrain.py"
BASE_LR = 5e-4
REFERENCE_BATCH = 256
RECIPE_EPOCHS = 800
RECIPE_WARMUP_EPOCHS = 10


CHECKPOINT_DIR = "checkpoints"
BACKBONE_DIR = "backbone"
PREVIEW_DIR = "previews"
LOG_DIR = "logs"
TRAINER_STATE = "trainer_state.json"
LOSS_CURVE = "loss_curve.png"
UNREADABLE_LOG = "unreadable_images.log"
OUTPUTS = (CHECKPOINT_DIR, BACKBONE_DIR, PREVIEW_DIR, LOG_DIR, TRAINER_STATE, LOSS_CURVE, UNREADABLE_LOG)
# Options that change how a run is watched or stored, not what it computes: they may differ on resume.
RUN_CONTROL_OPTIONS = frozenset({
    "output_dir", "resume", "overwrite", "num_workers", "checkpoint_every", "keep_checkpoints", "preview_every",
    "preview_images", "report_to", "log_every", "strict", "mixed_precision",
})
# Set to a folder to make every rank write debug-rank<N>.json (samples seen, parameter hashes); used by the DDP test.
DEBUG_ENV = "SPCXR_PRETRAIN_DEBUG_DIR"


class UnreadableImageError(UsageError):
    """An image that cannot be decoded, with `--strict`."""


# ---------------------------------------------------------------------------------------------------- schedules


def scaled_learning_rate(global_batch_size: int, base_lr: float = BASE_LR) -> float:
    """The linear scaling rule of the recipe: `base_lr × global batch / 256`."""
    return base_lr * global_batch_size / REFERENCE_BATCH


def learning_rate_at(step: int, *, total_steps: int, warmup_steps: int, peak: float, minimum: float) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up to `peak` reached at step `warmup_steps - 1`,
    then half a cosine from `peak` (at `warmup_steps`) down to `minimum` (approached at `total_steps`)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return minimum + 0.5 * (peak - minimum) * (1.0 + math.cos(math.pi * progress))


def weight_decay_at(step: int, *, total_steps: int, start: float, end: float) -> float:
    """Weight decay for step `step`: half a cosine from `start` (step 0) to `end` (at `total_steps`), as DINO/GMML."""
    progress = min(1.0, step / max(1, total_steps))
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def _seed_from(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence), for torch generators."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] & ((1 << 63) - 1))


# ---------------------------------------------------------------------------------------------------- arguments


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2 (argparse's default prints the whole usage first)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _integer_at_least(minimum: int, kind: str):
    """An argparse `type` for integers >= `minimum`, with one-line messages naming `kind` ("positive", …)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a {kind} integer, got {value}")
        return value

    return parse


_positive_int = _integer_at_least(1, "positive")
_non_negative_int = _integer_at_least(0, "non-negative")


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="GMML self-supervised pretraining of SS-CXR (a ViT for chest radiographs). Launch with python "
        "(one process) or `accelerate launch` (multi-GPU, multi-node, FSDP; CPU DDP with ACCELERATE_USE_CPU=1).",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True,
                      help="a folder of images (searched recursively: PNG, JPEG, 16-bit PNG, DICOM…), a Hugging Face "
                      "dataset id, or 'synthetic' (phantom radiographs, for demos and tests)")
    data.add_argument("--image-column", help="image column of a Hub dataset (default: the first Image feature)")
    data.add_argument("--split", default="train", help="split of a Hub dataset (default: train)")
    data.add_argument("--streaming", action="store_true",
                      help="stream a Hub dataset instead of downloading it (for datasets larger than the disk); "
                      "needs --max-steps")
    data.add_argument("--shuffle-buffer", type=_positive_int, default=10_000,
                      help="shuffle buffer of --streaming (default: 10000)")
    data.add_argument("--synthetic-size", type=_positive_int, default=256,
                      help="number of phantom images of --data synthetic (default: 256)")
    data.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS,
                      help="images with more pixels are treated as unreadable (decompression-bomb guard)")
    data.add_argument("--num-workers", type=_non_negative_int, default=min(4, os.cpu_count() or 1),
                      help="data-loading worker processes per process (default: min(4, CPUs))")
    data.add_argument("--strict", action="store_true",
                      help="stop at the first unreadable image instead of skipping it (skipped ones are listed in "
                      f"OUTPUT_DIR/{UNREADABLE_LOG})")

    model = parser.add_argument_group("model and corruption")
    model.add_argument("--config", default="vit-s",
                       help=f"model config: a preset ({', '.join(CONFIG_PRESETS)}; default vit-s = ViT-S/16) or a "
                       "JSON file / folder with config.json of an SpcxrConfig")
    model.add_argument("--image-size", type=_positive_int, help="training resolution (default: the config's, 224)")
    model.add_argument("--mask-ratio", type=float,
                       help="p: corrupted-area fraction per image ~ U[min(0.5, p), p] (default: the config's, 0.75)")
    model.add_argument("--mask-fill", choices=("noise", "zeros"),
                       help="fill of the corrupted rectangles: N(0, 1) noise (GMML) or zeros (SiT); default: config's")
    model.add_argument("--paste-prob", type=float, default=0.5,
                       help="probability per image of pasting rectangles from another image of the batch instead "
                       "(default: 0.5, as GMML)")
    model.add_argument("--align-to-patches", action="store_true",
                       help="snap the corruption rectangles to the patch grid (default: pixel-aligned, as GMML)")

    aug = parser.add_argument_group("augmentation")
    aug.add_argument("--crop-scale", type=float, nargs=2, default=(0.35, 1.0), metavar=("MIN", "MAX"),
                     help="area range of the random resized crop (default: 0.35 1.0)")
    aug.add_argument("--hflip", action="store_true",
                     help="random horizontal flips (off by default: the heart is on the patient's left in a CXR)")

    optim = parser.add_argument_group("optimisation (defaults: the GMML recipe)")
    optim.add_argument("--epochs", type=_positive_int, default=RECIPE_EPOCHS,
                       help=f"passes over the data (default: {RECIPE_EPOCHS}); --max-steps overrides")
    optim.add_argument("--max-steps", type=_positive_int, help="optimizer steps in all (overrides --epochs)")
    optim.add_argument("--batch-size", type=_positive_int, default=64, help="images per device and micro-batch (64)")
    optim.add_argument("--grad-accum", type=_positive_int, default=1, help="gradient accumulation micro-batches (1)")
    optim.add_argument("--lr", type=_non_negative_float,
                       help="peak learning rate (default: --base-lr × global batch / 256)")
    optim.add_argument("--base-lr", type=_non_negative_float, default=BASE_LR,
                       help=f"learning rate per 256 images of global batch (default: {BASE_LR})")
    optim.add_argument("--min-lr", type=_non_negative_float, default=1e-6, help="end of the cosine (1e-6)")
    optim.add_argument("--warmup-epochs", type=_non_negative_float, default=RECIPE_WARMUP_EPOCHS,
                       help=f"linear warm-up in epochs (default: {RECIPE_WARMUP_EPOCHS}); --warmup-steps overrides")
    optim.add_argument("--warmup-steps", type=_non_negative_int, help="linear warm-up in optimizer steps")
    optim.add_argument("--weight-decay", type=_non_negative_float, default=0.04,
                       help="weight decay at the start (0.04)")
    optim.add_argument("--weight-decay-end", type=_non_negative_float, default=0.4,
                       help="weight decay at the end, cosine schedule (0.4)")
    optim.add_argument("--clip-grad", type=_non_negative_float, default=3.0,
                       help="gradient-norm clipping, 0 disables (3.0)")
    optim.add_argument("--seed", type=_non_negative_int, default=0, help="seed of everything random (0)")
    optim.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"),
                       help="override accelerate's setting (default: from `accelerate config` / launch flags)")

    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", required=True,
                     help=f"where checkpoints, logs, previews and the backbone (OUTPUT_DIR/{BACKBONE_DIR}) go")
    run.add_argument("--overwrite", action="store_true",
                     help="reuse a non-empty --output-dir, deleting this script's previous outputs there")
    run.add_argument("--resume", nargs="?", const="latest",
                     help="continue from a checkpoint: 'latest' (the newest in OUTPUT_DIR), a checkpoint folder or "
                     "another run's output folder")
    run.add_argument("--checkpoint-every", type=_non_negative_int, default=1000,
                     help="save a resumable checkpoint every N optimizer steps and at the end (0: never; 1000)")
    run.add_argument("--keep-checkpoints", type=_positive_int, default=2, help="checkpoints kept (the newest; 2)")
    run.add_argument("--preview-every", type=_non_negative_int, default=1000,
                     help="write a reconstruction preview PNG every N steps (0: only at the end; 1000)")
    run.add_argument("--preview-images", type=_positive_int, default=4, help="images in a preview (4)")
    run.add_argument("--log-every", type=_positive_int, default=10,
                     help="log loss, lr, weight decay and img/s every N steps (10)")
    run.add_argument("--report-to", default="tensorboard",
                     help="accelerate tracker(s), comma-separated (tensorboard, wandb, …) or 'none' (tensorboard)")
    return parser


# ---------------------------------------------------------------------------------------------------- configs


def build_model_config(args: argparse.Namespace) -> SpcxrConfig:
    """The SpcxrConfig of the run: the preset or file of `--config`, then --image-size / --mask-ratio / --mask-fill."""
    if args.config in CONFIG_PRESETS:
        fields = dict(CONFIG_PRESETS[args.config])
    else:
        path = Path(args.config)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise UsageError(
                f"--config {args.config}: neither a preset ({', '.join(CONFIG_PRESETS)}) nor a JSON file"
            )
        try:
            fields = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise UsageError(f"--config {path}: not a readable JSON file ({one_line(error)})") from None
        if not isinstance(fields, dict):
            raise UsageError(f"--config {path}: expected a JSON object of SpcxrConfig fields")
        for key in ("model_type", "transformers_version", "architectures", "auto_map", "_name_or_path"):
            fields.pop(key, None)
    if args.image_size is not None:
        fields["image_size"] = args.image_size
    if args.mask_ratio is not None:
        fields["mask_ratio"] = args.mask_ratio
    if args.mask_fill is not None:
        fields["mask_fill"] = args.mask_fill
    try:
        return SpcxrConfig(**fields)
    except Exception as error:  # strict dataclass validation, unknown fields
        raise UsageError(f"invalid model settings (--config {args.config} and options): {one_line(error)}") from None


def build_corruption_config(args: argparse.Namespace, config: SpcxrConfig) -> CorruptionConfig:
    try:
        return CorruptionConfig(
            mask_ratio=config.mask_ratio, fill=config.mask_fill, paste_prob=args.paste_prob,
            align=config.patch_size if args.align_to_patches else None,
        )
    except ValueError as error:
        raise UsageError(f"corruption settings: {error}") from None


# ---------------------------------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augmentation:
    """GMML's augmentation for radiographs, driven by a numpy Generator: (H, W) [0, 1] → (1, size, size) normalised.

    Random resized crop (area `scale`, aspect `ratio`, as torchvision's RandomResizedCrop; bilinear, antialiased)
    → with probability `jitter_p` brightness and contrast factors in [1 - jitter, 1 + jitter] → with probability
    `blur_p` a Gaussian blur (sigma in `blur_sigma` pixels of the output) → with `hflip`, a flip with probability
    0.5 → `(x - mean) / std` (SpcxrImageProcessor's normalisation).
    """

    size: int
    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter_p: float = 0.3
    jitter: float = 0.2
    blur_p: float = 0.1
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    hflip: bool = False
    mean: float = 0.5
    std: float = 0.25

    def crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, left, crop height, crop width), torchvision's algorithm (10 tries, then a central crop)."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        """(h, w) → (size, size), bilinear with antialiasing."""
        return F.interpolate(image[None, None], size=(self.size, self.size), mode="bilinear", align_corners=False,
                             antialias=True)[0, 0]

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        return ((image.clamp(0.0, 1.0) - self.mean) / self.std)[None].contiguous()

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        top, left, h, w = self.crop_box(*image.shape, rng)
        x = self.resize(torch.from_numpy(np.ascontiguousarray(image[top : top + h, left : left + w], np.float32)))
        if rng.random() < self.jitter_p:
            brightness = rng.uniform(1 - self.jitter, 1 + self.jitter)
            contrast = rng.uniform(1 - self.jitter, 1 + self.jitter)
            x = (x * brightness).clamp(0.0, 1.0)
            mean = x.mean()
            x = ((x - mean) * contrast + mean).clamp(0.0, 1.0)
        if rng.random() < self.blur_p:
            x = gaussian_blur(x, rng.uniform(*self.blur_sigma))
        if self.hflip and rng.random() < 0.5:
            x = x.flip(-1)
        return self.normalise(x)

    def plain(self, image: np.ndarray) -> torch.Tensor:
        """No augmentation: the whole image resized (stretched) to size × size and normalised (for previews)."""
        return self.normalise(self.resize(torch.from_numpy(np.ascontiguousarray(image, np.float32))))


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an (H, W) tensor, kernel radius ceil(3 sigma), reflected borders."""
    radius = max(1, min(math.ceil(3 * sigma), min(image.shape) - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(image[None, None], (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x[0, 0]


# ---------------------------------------------------------------------------------------------------- data sources


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
        self.folder, self.paths, self.max_pixels = folder, paths, max_pixels
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
        self.description = f"{count} synthetic phantom radiographs ({resolution}×{resolution}, spcxr_hub.data.synthetic)"

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


def collate(items: list[dict]) -> dict:
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
    """Streaming training data: micro-batches (dicts as `collate` makes) from this process's shard of a Hub
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
                batch = collate(items)
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


def open_data(args: argparse.Namespace, augmentation: Augmentation, *, process_index: int, num_processes: int) -> Data:
    """The run's data, checked: a non-empty folder, a Hub dataset with an image column, or phantoms."""
    if args.data == "synthetic":
        if args.streaming:
            raise UsageError("--streaming applies to Hub datasets, not to --data synthetic")
        source = SyntheticSource(args.synthetic_size, max(64, augmentation.size))
        return Data(source.description, True, AugmentedImages(source, augmentation, args.seed, args.strict),
                    size=len(source))
    folder = Path(args.data)
    if folder.is_dir():
        if args.streaming:
            raise UsageError(f"--streaming applies to Hub datasets, not to the folder {folder}")
        paths = list_images(folder)
        if not paths:
            raise UsageError(f"{folder}: no images found (searched recursively for PNG, JPEG, TIFF, BMP and DICOM)")
        source = FolderSource(folder, paths, args.max_pixels)
        synthetic = _marked_synthetic(folder)
        if synthetic:
            source.description += f" (synthetic phantoms: {synthetic} marks the dataset)"
        return Data(source.description, bool(synthetic),
                    AugmentedImages(source, augmentation, args.seed, args.strict), size=len(source))
    if folder.exists():
        raise UsageError(f"{folder}: a file, not a folder of images (nor 'synthetic', nor a Hub dataset id)")
    return _open_hub(args, augmentation, process_index=process_index, num_processes=num_processes)


def _open_hub(args, augmentation: Augmentation, *, process_index: int, num_processes: int) -> Data:
    import datasets

    try:
        dataset = datasets.load_dataset(args.data, split=args.split, streaming=args.streaming)
    except Exception as error:  # offline, unknown id, unknown split…: the message is what the user needs
        raise UsageError(
            f"{args.data}: not a folder, not 'synthetic', and not a loadable Hugging Face dataset "
            f"({type(error).__name__}: {one_line(error)})"
        ) from None
    if not args.streaming:
        column = _find_image_column(dataset, args.image_column, args.data)
        dataset = _undecoded(dataset.select_columns([column]), column)
        if len(dataset) == 0:
            raise UsageError(f"{args.data}: split {args.split!r} is empty")
        source = HubSource(dataset, args.data, args.split, column, args.max_pixels)
        return Data(source.description, False, AugmentedImages(source, augmentation, args.seed, args.strict),
                    size=len(source))
    first = None
    if getattr(dataset, "features", None) is None:
        first = next(iter(dataset.take(1)), None)
        if first is None:
            raise UsageError(f"{args.data}: split {args.split!r} is empty")
    column = _find_image_column(dataset, args.image_column, args.data, first)
    dataset = _undecoded(dataset.select_columns([column]), column)
    preview = []
    for example in dataset.take(max(args.preview_images * 4, 8)):
        try:
            preview.append(_decode(example[column], args.max_pixels))
        except ImageDecodeError:
            continue
        if len(preview) == args.preview_images:
            break
    if not preview:
        raise UsageError(f"{args.data}: no readable image at the start of split {args.split!r}")
    from datasets.distributed import split_dataset_by_node

    shuffled = dataset.shuffle(seed=args.seed, buffer_size=args.shuffle_buffer)
    shard = split_dataset_by_node(shuffled, rank=process_index, world_size=num_processes)
    size = None
    splits = getattr(getattr(dataset, "info", None), "splits", None)
    if splits and args.split in splits and splits[args.split].num_examples:
        size = int(splits[args.split].num_examples)
    stream = StreamingImages(shard, column, args.data, augmentation, seed=args.seed, process_index=process_index,
                             batch_size=args.batch_size, strict=args.strict, max_pixels=args.max_pixels)
    description = f"the Hugging Face dataset {args.data} (split {args.split}, column {column}, streamed)"
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
            data, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers, pin_memory=pin_memory,
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


# ---------------------------------------------------------------------------------------------------- progress state


class Progress:
    """Everything of the run that is not weights, optimizer or RNG: saved with every checkpoint."""

    def __init__(self, num_processes: int):
        self.step = 0
        self.history: list[dict] = []
        self.window = {"loss": 0.0, "grad_norm": 0.0, "steps": 0}
        self.unreadable: dict[str, str] = {}
        self.stream_positions = [[0, 0] for _ in range(num_processes)]
        self.train_seconds = 0.0

    def state_dict(self) -> dict:
        return {"step": self.step, "history": self.history, "window": self.window, "unreadable": self.unreadable,
                "stream_positions": self.stream_positions, "train_seconds": self.train_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.window = dict(state["window"])
        self.unreadable = dict(state["unreadable"])
        self.stream_positions = [list(p) for p in state["stream_positions"]]
        self.train_seconds = float(state.get("train_seconds", 0.0))


# ---------------------------------------------------------------------------------------------------- checkpoints
# Saving, listing and the fingerprint check (a UsageError naming what differs) live in spcxr_hub.training.checkpoints, shared
# with fine-tuning.


def resolve_resume(resume: str, output_dir: Path) -> Path:
    """The checkpoint folder `--resume` names: 'latest' in OUTPUT_DIR, a checkpoint, or a run's output folder."""
    if resume == "latest":
        found = list_checkpoints(output_dir / CHECKPOINT_DIR)
        if not found:
            raise UsageError(f"--resume latest: no checkpoint under {output_dir / CHECKPOINT_DIR}")
        return found[-1][1]
    path = Path(resume)
    if not path.exists():
        raise UsageError(f"--resume {resume}: no such checkpoint")
    if (path / CHECKPOINT_META).is_file():
        return path
    found = list_checkpoints(path / CHECKPOINT_DIR) or list_checkpoints(path)
    if found:
        return found[-1][1]
    raise UsageError(f"--resume {resume}: not a checkpoint of this script (no {CHECKPOINT_META})")


# ---------------------------------------------------------------------------------------------------- outputs


def _denormalise(x: torch.Tensor, augmentation: Augmentation) -> np.ndarray:
    return (x.float() * augmentation.std + augmentation.mean).clamp(0, 1).cpu().numpy()


def write_preview(path: Path, clean: torch.Tensor, corrupted: torch.Tensor, reconstruction: torch.Tensor,
                  augmentation: Augmentation, title: str) -> None:
    """A PNG with one row per image: original | corrupted | reconstruction (denormalised to [0, 1])."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = clean.shape[0]
    figure = Figure(figsize=(6, 2 * rows + 0.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 3, squeeze=False)
    for row in range(rows):
        for col, (name, images) in enumerate((("original", clean), ("corrupted", corrupted),
                                              ("reconstruction", reconstruction))):
            ax = axes[row][col]
            ax.imshow(_denormalise(images[row, 0], augmentation), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    with atomic_file(path) as staging:
        figure.savefig(staging, format="png")


def write_loss_curve(path: Path, history: list[dict]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    steps = [entry["step"] for entry in history]
    (loss_line,) = ax.plot(steps, [entry["loss"] for entry in history], lw=1, label="loss (L1, corrupted pixels)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("GMML reconstruction loss")
    ax2 = ax.twinx()
    (lr_line,) = ax2.plot(steps, [entry["lr"] for entry in history], color="tab:orange", lw=0.8, alpha=0.6,
                          label="learning rate")
    ax2.set_ylabel("learning rate")
    ax2.legend(handles=[loss_line, lr_line], loc="best", fontsize=8)
    figure.tight_layout()
    with atomic_file(path) as staging:
        figure.savefig(staging, format="png")


def model_card(*, data: Data, config: SpcxrConfig, final_loss: float | None, final_window: int, steps: int,
               epochs: float | None, global_batch: int, num_processes: int, lr: float, image_size: int) -> str:
    if data.synthetic:
        head = (
            "# SS-CXR backbone pretrained on synthetic phantoms (not real radiographs)\n\n"
            f"**Trained only on {data.description}**: a demonstration / test model, not a chest-radiograph foundation "
            "model. Do not use it for research conclusions or anything clinical.\n"
        )
    else:
        head = f"# SS-CXR backbone (GMML-pretrained ViT)\n\nPretrained on {data.description}.\n"
    loss = "not measured (no training step was run)" if final_loss is None else (
        f"{final_loss:.4f} (mean over the last {final_window} optimizer steps)")
    epochs_text = f" ({epochs:.2f} epochs)" if epochs is not None else ""
    size = (f"ViT (hidden {config.hidden_size}, {config.num_hidden_layers} blocks, {config.num_attention_heads} heads, "
            f"patch {config.patch_size}, {image_size}×{image_size}, {config.num_channels} channel)")
    return f"""{head}
- Model: `SpcxrModel`, {size}.
- Method: group-masked model learning (GMML; Anwar et al., "SPCXR", 2022): corrupted area per image
  ~ U[min(0.5, p), p] with p = {config.mask_ratio}, fill `{config.mask_fill}`; reconstruction head on blocks
  {list(config.reconstruction_layers)}; L1 loss over the corrupted pixels.
- Training: {steps} optimizer steps{epochs_text}, global batch {global_batch} on {num_processes} process(es), AdamW,
  peak learning rate {lr:.3g}.
- Final training loss (L1 on corrupted pixels, normalised units): {loss}.

## Use

```python
from transformers import AutoModel, AutoImageProcessor

model = AutoModel.from_pretrained("path/to/this/folder", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("path/to/this/folder", trust_remote_code=True)
features = model(**processor(images, return_tensors="pt")).pooler_output
```

Generated by `pretrain.py` (spcxr_hub.training.pretraining); the training log is `trainer_state.json` beside this folder.
"""


def save_backbone(path: Path, state_dict: dict, config: SpcxrConfig, image_size: int, card: str) -> None:
    """The backbone of the trained model as an `SpcxrModel` folder (code files, auto_map, image processor, README)."""
    from ..models.spcxr.image_processing_spcxr import SpcxrImageProcessor
    from ..models.spcxr.modeling_spcxr import SpcxrModel

    backbone = SpcxrModel(copy.deepcopy(config))
    prefix = "spcxr."
    weights = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    # The pretraining model has no final LayerNorm (GMML never trains it): the backbone's stays at its init (1, 0).
    missing, unexpected = backbone.load_state_dict(weights, strict=False)
    if unexpected or set(missing) != {"layernorm.weight", "layernorm.bias"}:
        raise RuntimeError(f"backbone weights do not match SpcxrModel: missing {missing}, unexpected {unexpected}")
    processor = SpcxrImageProcessor(size={"height": image_size, "width": image_size})
    with atomic_directory(path, overwrite=True) as staging:  # what save_model_directory does, plus the README
        backbone.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "README.md").write_text(card)


def write_json(path: Path, payload: dict) -> None:
    with atomic_file(path) as staging:
        staging.write_text(json.dumps(payload, indent=2, default=str) + "\n")


# ---------------------------------------------------------------------------------------------------- distributed


def check_launch(accelerator, environ=os.environ) -> None:
    """Fail when a launcher started several processes that accelerate does not connect (each would train alone).

    Measured with accelerate 1.15 on a machine without GPUs: `accelerate launch --multi_gpu --num_processes 2` (and
    torchrun) set WORLD_SIZE=2, RANK, LOCAL_RANK… in each process, but unless ACCELERATE_USE_CPU=1 accelerate keeps
    DistributedType.NO: every process has num_processes == 1 and process_index == 0, and trains on its own.
    """
    try:
        world = int(environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        world = 1
    if accelerator.num_processes == 1 and world > 1:
        hint = (
            "set ACCELERATE_USE_CPU=1 for DDP on CPU (gloo), e.g. `ACCELERATE_USE_CPU=1 accelerate launch "
            "--multi_gpu --num_processes 2 pretrain.py …`"
            if accelerator.device.type == "cpu"
            else "check the accelerate configuration (`accelerate env`)"
        )
        raise UsageError(
            f"started as one of {world} processes (WORLD_SIZE={world}) but accelerate runs this one alone "
            f"(num_processes=1): the processes would train {world} separate models; {hint}"
        )


def freeze_unused_parameters(model) -> list[str]:
    """Freeze the parameters the GMML objective never reaches, and return their names.

    The reconstruction head reads the outputs of `config.reconstruction_layers`, so any block after the last of those
    layers gets no gradient (the final LayerNorm the model leaves out itself). Frozen, they keep their initial values
    (AdamW would skip them anyway) and DDP needs no `find_unused_parameters` (without this it fails at the first
    backward)."""
    config = model.config
    last = max(config.reconstruction_layers)
    unused = tuple(f"spcxr.layers.{i}." for i in range(last, config.num_hidden_layers))
    frozen = []
    for name, parameter in model.named_parameters():
        if name.startswith(unused):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def _params_hash(model) -> str:
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(parameter.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pretrain.py` and `spcxr pretrain`. Returns the exit code (2 for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, argparse errors
        return int(exit_.code or 0)
    # One write call per report: under `accelerate launch` (unbuffered) every process reports at once, and print's
    # separate newline write would let their lines run together.
    try:
        return run(args)
    except (UsageError, ImageDecodeError) as error:
        sys.stderr.write(f"{PROG}: error: {one_line(error)}\n")
        return 2
    except Exception as error:
        if os.environ.get(SPCXR_DEBUG_ENV):
            raise
        sys.stderr.write(f"{PROG}: {internal_error_line(error)}\n")
        return 1


def _check_args(args: argparse.Namespace) -> None:
    if args.resume is not None and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other (resume continues the run in --output-dir)")
    if args.streaming and args.max_steps is None:
        raise UsageError("--streaming needs --max-steps (a stream has no known length to count epochs in)")
    low, high = args.crop_scale
    if not 0 < low <= high <= 1:
        raise UsageError(f"--crop-scale must satisfy 0 < MIN <= MAX <= 1, got {low} {high}")
    if not 0 <= args.paste_prob <= 1:
        raise UsageError(f"--paste-prob must be in [0, 1], got {args.paste_prob}")
    report = [name.strip() for name in args.report_to.split(",") if name.strip()]
    if not report:
        raise UsageError("--report-to needs a tracker name or 'none'")


def _prepare_output_dir(args: argparse.Namespace, output_dir: Path) -> None:
    """Refuse to write into a non-empty folder unless resuming or --overwrite (then only this script's outputs go)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"--output-dir {output_dir}: a file, not a folder")
    if args.resume is None and not args.overwrite and output_dir.is_dir() and any(output_dir.iterdir()):
        raise UsageError(
            f"--output-dir {output_dir}: already exists and is not empty (use --resume to continue the run there, "
            "--overwrite to start again, or another folder)"
        )


@dataclass(frozen=True)
class Plan:
    """The run's geometry and schedule, fixed before anything is written."""

    global_batch: int
    steps_per_epoch: int | None  # None: a stream of unknown length
    total_steps: int
    warmup_steps: int
    peak_lr: float


def plan_run(args: argparse.Namespace, data: Data, num_processes: int) -> Plan:
    global_batch = args.batch_size * num_processes * args.grad_accum
    if data.map_style is not None:
        steps_per_epoch = len(data.map_style) // global_batch
        if steps_per_epoch == 0:
            raise UsageError(
                f"{data.description}: fewer images than one global batch ({global_batch} = --batch-size "
                f"{args.batch_size} × {num_processes} process(es) × --grad-accum {args.grad_accum})"
            )
    else:
        steps_per_epoch = (data.size // global_batch if data.size else 0) or None
    total_steps = args.max_steps if args.max_steps is not None else args.epochs * steps_per_epoch
    if args.warmup_steps is not None:
        warmup_steps = args.warmup_steps
    elif steps_per_epoch is not None:
        warmup_steps = round(args.warmup_epochs * steps_per_epoch)
    else:  # a stream of unknown length: the recipe's proportion, 10 of 800 epochs
        warmup_steps = round(total_steps * RECIPE_WARMUP_EPOCHS / RECIPE_EPOCHS)
    peak_lr = args.lr if args.lr is not None else scaled_learning_rate(global_batch, args.base_lr)
    return Plan(global_batch, steps_per_epoch, total_steps, min(warmup_steps, total_steps), peak_lr)


def run_fingerprint(args: argparse.Namespace, config: SpcxrConfig, plan: Plan, num_processes: int) -> dict:
    """What a checkpoint must share with the run that resumes it: the model config and every option that changes
    the computation (the per-device batch may change if the global batch does not)."""
    derived = {"batch_size", "grad_accum", "config", "image_size", "mask_ratio", "mask_fill", "lr", "epochs",
               "warmup_epochs", "warmup_steps", "max_steps"}  # folded into the model config or the plan
    training = {k: v for k, v in sorted(vars(args).items()) if k not in RUN_CONTROL_OPTIONS | derived}
    training.update(
        data=str(Path(args.data).resolve()) if Path(args.data).is_dir() else args.data,
        global_batch_size=plan.global_batch, total_steps=plan.total_steps, warmup_steps=plan.warmup_steps,
        peak_lr=plan.peak_lr, streaming_processes=num_processes if args.streaming else None,
    )
    return json.loads(json.dumps({"model": model_config_fingerprint(config), "training": training}))


def _delete_outputs(output_dir: Path) -> None:
    for name in OUTPUTS:
        target = output_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def run(args: argparse.Namespace) -> int:
    """Check everything (raising UsageError before a file is written), then train and save."""
    pretraining = Pretraining(args)
    pretraining.setup()
    pretraining.train()
    pretraining.finish()
    return 0


class Pretraining:
    """One run of `pretrain.py`: `__init__` checks (no side effects), `setup` builds, `train` loops, `finish` saves."""

    def __init__(self, args: argparse.Namespace):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        _check_args(args)
        self.args = args
        self.config = build_model_config(args)
        self.corruption = build_corruption_config(args, self.config)
        self.augmentation = Augmentation(size=self.config.image_size, scale=tuple(args.crop_scale), hflip=args.hflip)
        self.output_dir = Path(args.output_dir)
        report_to = [name.strip() for name in args.report_to.split(",") if name.strip()]
        self.log_with = None if report_to == ["none"] else report_to
        try:
            self.accelerator = Accelerator(
                gradient_accumulation_steps=args.grad_accum,
                mixed_precision=args.mixed_precision,
                log_with=self.log_with,
                project_config=ProjectConfiguration(project_dir=str(self.output_dir),
                                                    logging_dir=str(self.output_dir / LOG_DIR),
                                                    automatic_checkpoint_naming=False),
            )
        except ValueError as error:  # e.g. fp16 where it is not supported, an unknown tracker
            raise UsageError(f"accelerate: {one_line(error)}") from None
        check_launch(self.accelerator)
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.device = self.accelerator.device
        self.data = open_data(args, self.augmentation, process_index=self.rank, num_processes=self.world)
        self.plan = plan_run(args, self.data, self.world)
        self.fingerprint = run_fingerprint(args, self.config, self.plan, self.world)
        _prepare_output_dir(args, self.output_dir)
        self.resume_from = None
        if args.resume is not None:
            self.resume_from = resolve_resume(args.resume, self.output_dir)
            check_checkpoint(self.resume_from, self.fingerprint)

    # ------------------------------------------------------------------------------------------ setup

    def setup(self) -> None:
        from accelerate.utils import set_seed

        from ..models.spcxr.modeling_spcxr import SpcxrForMaskedImageModeling

        args, accelerator = self.args, self.accelerator
        if accelerator.is_main_process:  # the first write
            if args.overwrite and self.output_dir.is_dir():
                _delete_outputs(self.output_dir)
            self.output_dir.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()

        set_seed(args.seed)  # the model's initialisation; nothing later draws from the global generators
        model = SpcxrForMaskedImageModeling(self.config)
        model.train()
        freeze_unused_parameters(model)
        decay, no_decay = [], []
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:  # DINO/GMML: no weight decay on biases and norms
                (no_decay if name.endswith(".bias") or parameter.ndim <= 1 else decay).append(parameter)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=self.plan.peak_lr)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.progress = Progress(self.world)
        accelerator.register_for_checkpointing(self.progress)
        if self.resume_from is not None:
            accelerator.load_state(str(self.resume_from))
            accelerator.print(f"resumed from {self.resume_from} at step {self.progress.step}")
        self.last_checkpoint = self.progress.step if self.resume_from is not None else None

        if self.log_with:
            hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in vars(args).items()}
            hparams.update(global_batch_size=self.plan.global_batch, peak_lr=self.plan.peak_lr,
                           total_steps=self.plan.total_steps, warmup_steps=self.plan.warmup_steps,
                           num_processes=self.world)
            accelerator.init_trackers("pretrain", config=hparams)

        self.pin = self.device.type == "cuda"
        if self.data.map_style is not None:
            self.stream_position = None
            self.batches = map_style_batches(
                self.data.map_style, start_step=self.progress.step, steps_per_epoch=self.plan.steps_per_epoch,
                seed=args.seed, batch_size=args.batch_size, num_processes=self.world, process_index=self.rank,
                grad_accum=args.grad_accum, num_workers=args.num_workers, pin_memory=self.pin)
        else:
            self.stream_position = list(self.progress.stream_positions[self.rank])
            self.batches = streaming_batches(
                self.data.streaming, epoch=self.stream_position[0], skip=self.stream_position[1],
                num_workers=args.num_workers, pin_memory=self.pin, position=self.stream_position)
        self.preview_batch, skipped = preview_images(self.data, self.augmentation, args.preview_images)
        self.unreadable: dict[str, str] = dict(skipped)  # this process's; merged into progress at checkpoints
        self.debug_dir = os.environ.get(DEBUG_ENV)
        self.debug = {"world_size": self.world, "process_index": self.rank, "samples": [], "param_hashes": []}

    # ------------------------------------------------------------------------------------------ training

    def train(self) -> None:
        from tqdm.auto import tqdm

        args, plan, progress = self.args, self.plan, self.progress
        self.accelerator.print(
            f"pretraining on {self.data.description}: {plan.total_steps} steps ({plan.steps_per_epoch or '?'} per "
            f"epoch), global batch {plan.global_batch} ({args.batch_size} × {self.world} process(es) × "
            f"{args.grad_accum}), peak lr {plan.peak_lr:.3g}, {plan.warmup_steps} warm-up steps, device "
            f"{self.device}, mixed precision {self.accelerator.mixed_precision}"
        )
        self.bar = tqdm(total=plan.total_steps, initial=progress.step, desc="pretraining", unit="step",
                        disable=not self.accelerator.is_main_process, dynamic_ncols=True)
        self.run_start = self.window_start = time.perf_counter()
        self.seconds_before = progress.train_seconds
        try:
            while progress.step < plan.total_steps:
                lr, wd, epoch, loss, grad_norm = self.step(progress.step)
                progress.step += 1
                window = progress.window
                window["loss"] += loss
                window["grad_norm"] += grad_norm or 0.0
                window["steps"] += 1
                if self.debug_dir:
                    self.debug["param_hashes"].append(_params_hash(self.accelerator.unwrap_model(self.model)))
                self.bar.update(1)
                if progress.step % args.log_every == 0 or progress.step == plan.total_steps:
                    self.log(lr, wd, epoch)
                if args.preview_every and progress.step % args.preview_every == 0 and progress.step < plan.total_steps:
                    self.preview(f"step-{progress.step:08d}.png")
                if args.checkpoint_every and progress.step % args.checkpoint_every == 0:
                    self.checkpoint()
        finally:  # closed before an error is reported, so the error stays the last line on stderr
            self.bar.close()

    def step(self, step: int) -> tuple[float, float, int, float, float | None]:
        """One optimizer step (`--grad-accum` micro-batches). Returns lr, weight decay, epoch, loss, grad norm."""
        args, plan, accelerator, model, optimizer = self.args, self.plan, self.accelerator, self.model, self.optimizer
        lr = learning_rate_at(step, total_steps=plan.total_steps, warmup_steps=plan.warmup_steps, peak=plan.peak_lr,
                              minimum=args.min_lr)
        wd = weight_decay_at(step, total_steps=plan.total_steps, start=args.weight_decay, end=args.weight_decay_end)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.param_groups[0]["weight_decay"] = wd  # group 1 (biases, norms) stays at 0
        loss_sum = torch.zeros((), device=self.device)
        grad_norm = None
        for micro in range(args.grad_accum):
            epoch, batch = next(self.batches)
            self.note_unreadable(batch["bad"])
            if self.debug_dir:
                self.debug["samples"].extend(batch["index"])
            clean = batch["pixel_values"].to(self.device, non_blocking=self.pin)
            with accelerator.accumulate(model):
                seed = _seed_from(args.seed, step, micro, self.rank)
                generator = torch.Generator(device=self.device).manual_seed(seed)
                corrupted, mask = corrupt(clean, self.corruption, generator=generator)
                loss = model(pixel_values=corrupted, labels=clean, pixel_mask=mask).loss
                accelerator.backward(loss)
                loss_sum += loss.detach().float()
                if accelerator.sync_gradients:
                    if args.clip_grad > 0:
                        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), args.clip_grad))
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
        loss = accelerator.reduce(loss_sum / args.grad_accum, reduction="mean").item()
        if not math.isfinite(loss):
            raise RuntimeError(f"the loss became {loss} at step {step + 1}; lower --lr or check the data")
        return lr, wd, epoch, loss, grad_norm

    def note_unreadable(self, bad: list[tuple[str, str]]) -> None:
        for name, reason in bad:
            if name not in self.unreadable:
                self.unreadable[name] = reason
                if self.accelerator.is_main_process:
                    self.bar.write(f"skipped unreadable image {reason}")

    def log(self, lr: float, wd: float, epoch: int) -> None:
        progress, window = self.progress, self.progress.window
        elapsed = time.perf_counter() - self.window_start
        entry = {
            "step": progress.step,
            "epoch": round(progress.step / self.plan.steps_per_epoch, 4) if self.plan.steps_per_epoch else epoch,
            "loss": window["loss"] / window["steps"],
            "lr": lr,
            "weight_decay": wd,
            "grad_norm": window["grad_norm"] / window["steps"] if self.args.clip_grad > 0 else None,
            "images_per_second": window["steps"] * self.plan.global_batch / elapsed if elapsed > 0 else None,
        }
        progress.history.append(entry)
        progress.window = {"loss": 0.0, "grad_norm": 0.0, "steps": 0}
        self.window_start = time.perf_counter()
        self.accelerator.log({f"train/{k}": v for k, v in entry.items() if k != "step" and v is not None},
                             step=progress.step)
        self.bar.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)

    def preview(self, name: str) -> None:
        """Reconstruct the fixed preview images (every process takes part: FSDP needs all of them for a forward)."""
        model = self.model
        was_training = self.accelerator.unwrap_model(model).training
        model.eval()
        with torch.no_grad():
            clean = self.preview_batch.to(self.device)
            generator = torch.Generator(device=self.device).manual_seed(_seed_from(self.args.seed, 0x9E51))
            corrupted, mask = corrupt(clean, self.corruption, generator=generator)
            output = model(pixel_values=corrupted, labels=clean, pixel_mask=mask)
        model.train(was_training)
        if self.accelerator.is_main_process:
            title = f"step {self.progress.step}: loss {float(output.loss):.4f} (original | corrupted | reconstruction)"
            write_preview(self.output_dir / PREVIEW_DIR / name, clean, corrupted, output.reconstruction.detach(),
                          self.augmentation, title)

    def gather_progress(self) -> None:
        """Bring every process's unreadable files and stream position into `progress` (before it is saved)."""
        from accelerate.utils import gather_object

        gather = gather_object if self.world > 1 else (lambda items: items)
        for part in gather([self.unreadable]):
            self.progress.unreadable.update(part)
        if self.stream_position is not None:
            self.progress.stream_positions = [list(p) for p in gather([list(self.stream_position)])]
        self.progress.train_seconds = self.seconds_before + time.perf_counter() - self.run_start

    def checkpoint(self) -> None:
        self.gather_progress()
        save_checkpoint(self.accelerator, self.output_dir / CHECKPOINT_DIR, self.progress.step, self.fingerprint,
                        keep=self.args.keep_checkpoints)
        self.last_checkpoint = self.progress.step

    # ------------------------------------------------------------------------------------------ the end

    def finish(self) -> None:
        """A last checkpoint, the final preview, the backbone with its card, the loss curve and trainer_state.json."""
        args, progress, accelerator = self.args, self.progress, self.accelerator
        if args.checkpoint_every and self.last_checkpoint != progress.step:
            self.checkpoint()
        else:
            self.gather_progress()
        self.preview("final.png")
        state_dict = accelerator.get_state_dict(self.model)  # every process takes part (FSDP gathers the shards)
        if self.debug_dir:
            Path(self.debug_dir).mkdir(parents=True, exist_ok=True)
            (Path(self.debug_dir) / f"debug-rank{self.rank}.json").write_text(json.dumps(self.debug))
        if accelerator.is_main_process:
            self.write_outputs(state_dict)
        accelerator.wait_for_everyone()
        accelerator.end_training()

    def write_outputs(self, state_dict: dict) -> None:
        args, plan, progress, out = self.args, self.plan, self.progress, self.output_dir
        history = progress.history
        tail = history[-10:]
        final_loss = sum(entry["loss"] for entry in tail) / len(tail) if tail else None
        first = history[-len(tail) - 1]["step"] if len(history) > len(tail) else 0
        epochs_done = progress.step / plan.steps_per_epoch if plan.steps_per_epoch else None
        card = model_card(data=self.data, config=self.config, final_loss=final_loss,
                          final_window=tail[-1]["step"] - first if tail else 0, steps=progress.step,
                          epochs=epochs_done, global_batch=plan.global_batch, num_processes=self.world,
                          lr=plan.peak_lr, image_size=self.config.image_size)
        save_backbone(out / BACKBONE_DIR, state_dict, self.config, self.config.image_size, card)
        if progress.unreadable:
            with atomic_file(out / UNREADABLE_LOG) as staging:
                staging.write_text("".join(f"{reason}\n" for _, reason in sorted(progress.unreadable.items())))
            print(f"{PROG}: skipped {len(progress.unreadable)} unreadable image(s), listed in {out / UNREADABLE_LOG}",
                  file=sys.stderr)
        if history:
            write_loss_curve(out / LOSS_CURVE, history)
        write_json(out / TRAINER_STATE, {
            "global_step": progress.step,
            "total_steps": plan.total_steps,
            "epoch": epochs_done,
            "steps_per_epoch": plan.steps_per_epoch,
            "global_batch_size": plan.global_batch,
            "per_device_batch_size": args.batch_size,
            "gradient_accumulation_steps": args.grad_accum,
            "num_processes": self.world,
            "mixed_precision": self.accelerator.mixed_precision,
            "peak_learning_rate": plan.peak_lr,
            "warmup_steps": plan.warmup_steps,
            "final_loss": final_loss,
            "data": self.data.description,
            "synthetic_data": self.data.synthetic,
            "unreadable_images": len(progress.unreadable),
            "train_runtime_seconds": progress.train_seconds,
            "backbone": str(out / BACKBONE_DIR),
            "model_config": model_config_fingerprint(self.config),
            "args": vars(args),
            "log_history": history,
        })
        from ..hub.cards import write_card

        write_card(out / BACKBONE_DIR)  # the full Hub card, from trainer_state.json written just above
        loss_text = "n/a" if final_loss is None else f"{final_loss:.4f}"
        print(f"{PROG}: done: {progress.step} steps, final loss {loss_text}; backbone in {out / BACKBONE_DIR}",
              file=sys.stderr)
