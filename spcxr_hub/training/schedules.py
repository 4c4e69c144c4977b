"""GMML's schedules (DINO's): the linear lr scaling rule, linear warm-up then cosine learning rate, cosine weight
decay — pure functions of the optimizer step, so a resumed run recomputes them exactly — and a run's `Plan` (steps,
warm-up, peak lr). Light: the recipe's numbers are option defaults of the command line."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from .pretraining_data import Data
    from .pretraining_options import PretrainOptions

BASE_LR = 5e-4
REFERENCE_BATCH = 256
RECIPE_EPOCHS = 800
RECIPE_WARMUP_EPOCHS = 10  # a stream of unknown length warms up for this fraction of its steps: 10 / 800


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


@dataclass(frozen=True)
class Plan:
    """The run's geometry and schedule, fixed before anything is written."""

    global_batch: int
    steps_per_epoch: int | None  # None: a stream of unknown length
    total_steps: int
    warmup_steps: int
    peak_lr: float


def plan_run(options: PretrainOptions, data: Data, num_processes: int) -> Plan:
    global_batch = options.batch_size * num_processes * options.grad_accum
    if data.map_style is not None:
        steps_per_epoch = len(data.map_style) // global_batch
        if steps_per_epoch == 0:
            raise UsageError(
                f"{data.description}: fewer images than one global batch ({global_batch} = --batch-size "
                f"{options.batch_size} × {num_processes} process(es) × --grad-accum {options.grad_accum})"
            )
    else:
        steps_per_epoch = (data.size // global_batch if data.size else 0) or None
    total_steps = options.max_steps if options.max_steps is not None else options.epochs * steps_per_epoch
    if options.warmup_steps is not None:
        warmup_steps = options.warmup_steps
    elif steps_per_epoch is not None:
        warmup_steps = round(options.warmup_epochs * steps_per_epoch)
    else:  # a stream of unknown length: the recipe's proportion, 10 of 800 epochs
        warmup_steps = round(total_steps * RECIPE_WARMUP_EPOCHS / RECIPE_EPOCHS)
    peak_lr = options.lr if options.lr is not None else scaled_learning_rate(global_batch, options.base_lr)
    return Plan(global_batch, steps_per_epoch, total_steps, min(warmup_steps, total_steps), peak_lr)
