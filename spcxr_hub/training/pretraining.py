"""GMML self-supervised pretraining of SS-CXR with 🤗 Accelerate: `spcxr pretrain …`, `python pretrain.py …`,
`accelerate launch pretrain.py …` (options: `spcxr_hub.training.pretraining_options`).

One process, one GPU, many GPUs, many machines, FSDP or DDP on CPU: the launcher decides (see docs/pretraining.md);
this file only ever talks to an `Accelerator`. `pretrain` reads top to bottom: check everything (a UsageError before a
file is written), build, loop over optimizer steps, save.

Step (per micro-batch, on the device): clean batch → `gmml.corrupt` (a `torch.Generator` seeded from (seed, step,
micro-batch, rank)) → `SpcxrForMaskedImageModeling(corrupted, labels=clean, pixel_mask=mask)` → L1 on the corrupted
pixels → backward; every `--grad-accum` micro-batches: clip, set lr / weight decay from their schedules, AdamW step.

Recipe defaults (DESIGN.md §GMML, the official GMML code): AdamW, lr 5e-4 × global batch / 256 (linear warm-up over
10 epochs, cosine to 1e-6), weight decay cosine 0.04 → 0.4 (not on biases and norms), gradient clipping 3, corrupted
area per image ~ U[0.5, 0.75] filled with N(0, 1) noise (or, for half the images, rectangles pasted from another image
of the batch), 800 epochs, 64 images per GPU; augmentation in `augmentation.py`.

Exact resume: the data order is a pure function of (seed, epoch), each sample's augmentation of (seed, epoch, index)
(`pretraining_data.py`), each micro-batch's corruption of (seed, step, micro-batch, rank) and lr / weight decay of the
step (`schedules.py`); `accelerator.save_state` holds weights, optimizer, the global RNGs and the training progress. A
run killed at any point and resumed from its last checkpoint ends with bitwise the same weights as the uninterrupted
run (same hardware and launch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError, one_line
from ..hub.saving import atomic_file
from .augmentation import Augmentation
from .checkpoints import check_checkpoint, model_config_fingerprint, save_checkpoint
from .gmml import CorruptionConfig, corrupt
from .presets import preset_config
from .pretraining_data import UnreadableImageError, map_style_batches, open_data, preview_images
from .pretraining_data import streaming_batches
from .pretraining_options import BACKBONE_DIR, UNREADABLE_LOG, PretrainOptions
from .pretraining_outputs import CHECKPOINT_DIR, LOG_DIR, LOSS_CURVE, PREVIEW_DIR, TRAINER_STATE, check_output_dir
from .pretraining_outputs import delete_outputs, resolve_resume, save_backbone, write_json, write_loss_curve
from .pretraining_outputs import write_preview
from .schedules import Plan, learning_rate_at, plan_run, weight_decay_at

__all__ = ["BACKBONE_DIR", "PretrainOptions", "UnreadableImageError", "main", "pretrain"]

# Options that change how a run is watched or stored, not what it computes: they may differ on resume.
RUN_CONTROL_OPTIONS = frozenset({
    "output_dir", "resume", "overwrite", "num_workers", "checkpoint_every", "keep_checkpoints", "preview_every",
    "preview_images", "report_to", "log_every", "strict", "mixed_precision",
})
# Options folded into the model config or the plan, which the fingerprint holds instead.
DERIVED_OPTIONS = frozenset({"batch_size", "grad_accum", "config", "image_size", "mask_ratio", "mask_fill", "lr",
                             "epochs", "warmup_epochs", "warmup_steps", "max_steps"})
# Set to a folder to make every rank write debug-rank<N>.json (samples seen, parameter hashes); used by the DDP test.
DEBUG_ENV = "SPCXR_PRETRAIN_DEBUG_DIR"


def main(argv: Sequence[str] | None = None, prog_name: str = "pretrain.py") -> int:
    """`spcxr pretrain` as a program of its own (`python pretrain.py`, `accelerate launch pretrain.py`) or called
    with `argv`: the same command, options and messages. Returns the exit status (2 for bad input)."""
    import typer

    from ..cli import app

    command = typer.main.get_command(app).commands["pretrain"]
    return command.main(argv, prog_name=prog_name, standalone_mode=False) or 0


def pretrain(options: PretrainOptions) -> None:
    """One pretraining run: everything is checked before the first file is written; then train and save."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    overrides = {name: getattr(options, name) for name in ("image_size", "mask_ratio", "mask_fill")}
    config = preset_config(options.config, **{name: value for name, value in overrides.items() if value is not None})
    corruption = corruption_config(options, config)
    augmentation = Augmentation(size=config.image_size, scale=options.crop_scale, hflip=options.hflip)
    output_dir = Path(options.output_dir)
    accelerator = make_accelerator(options, output_dir)
    world = accelerator.num_processes
    data = open_data(options, augmentation, process_index=accelerator.process_index, num_processes=world)
    plan = plan_run(options, data, world)
    fingerprint = run_fingerprint(options, config, plan, world)
    check_output_dir(options, output_dir)
    resume_from = None if options.resume is None else resolve_resume(options.resume, output_dir)
    if resume_from is not None:
        check_checkpoint(resume_from, fingerprint)

    if accelerator.is_main_process:  # the first write
        if options.overwrite and output_dir.is_dir():
            delete_outputs(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    set_seed(options.seed)  # the model's initialisation; nothing later draws from the global generators
    model, optimizer = accelerator.prepare(*model_and_optimizer(config, options, plan.peak_lr))
    progress = Progress(world)
    accelerator.register_for_checkpointing(progress)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        accelerator.print(f"resumed from {resume_from} at step {progress.step}")
    if options.trackers:
        accelerator.init_trackers("pretrain", config=hyperparameters(options, plan, world))
    run = Run(options, accelerator, model, optimizer, config, corruption, augmentation, data, plan, progress,
              fingerprint, output_dir, last_checkpoint=None if resume_from is None else progress.step)

    accelerator.print(
        f"pretraining on {data.description}: {plan.total_steps} steps ({plan.steps_per_epoch or '?'} per epoch), "
        f"global batch {plan.global_batch} ({options.batch_size} × {world} process(es) × {options.grad_accum}), "
        f"peak lr {plan.peak_lr:.3g}, {plan.warmup_steps} warm-up steps, device {accelerator.device}, mixed "
        f"precision {accelerator.mixed_precision}"
    )
    # A context manager: the bar is closed before an error is reported, so the error stays the last line on stderr.
    with tqdm(total=plan.total_steps, initial=progress.step, desc="pretraining", unit="step",
              disable=not accelerator.is_main_process, dynamic_ncols=True) as bar:
        run.bar = bar
        while progress.step < plan.total_steps:
            lr, wd, epoch = run.optimizer_step()
            step = progress.step
            if step % options.log_every == 0 or step == plan.total_steps:
                run.log(lr, wd, epoch)
            if options.preview_every and step % options.preview_every == 0 and step < plan.total_steps:
                run.preview(f"step-{step:08d}.png")
            if options.checkpoint_every and step % options.checkpoint_every == 0:
                run.checkpoint()
    run.finish()


# ---------------------------------------------------------------------------------------------------- before training


def corruption_config(options: PretrainOptions, config) -> CorruptionConfig:
    try:
        return CorruptionConfig(mask_ratio=config.mask_ratio, fill=config.mask_fill, paste_prob=options.paste_prob,
                                align=config.patch_size if options.align_to_patches else None)
    except ValueError as error:
        raise UsageError(f"corruption settings: {error}") from None


def make_accelerator(options: PretrainOptions, output_dir: Path):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    try:
        accelerator = Accelerator(
            gradient_accumulation_steps=options.grad_accum,
            mixed_precision=options.mixed_precision,
            log_with=options.trackers,
            project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / LOG_DIR),
                                                automatic_checkpoint_naming=False),
        )
    except ValueError as error:  # e.g. fp16 where it is not supported, an unknown tracker
        raise UsageError(f"accelerate: {one_line(error)}") from None
    check_launch(accelerator)
    return accelerator


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


def run_fingerprint(options: PretrainOptions, config, plan: Plan, num_processes: int) -> dict:
    """What a checkpoint must share with the run that resumes it: the model config and every option that changes
    the computation (the per-device batch may change if the global batch does not)."""
    training = {k: v for k, v in sorted(dataclasses.asdict(options).items())
                if k not in RUN_CONTROL_OPTIONS | DERIVED_OPTIONS}
    training.update(
        data=str(Path(options.data).resolve()) if Path(options.data).is_dir() else options.data,
        global_batch_size=plan.global_batch, total_steps=plan.total_steps, warmup_steps=plan.warmup_steps,
        peak_lr=plan.peak_lr, streaming_processes=num_processes if options.streaming else None,
    )
    return json.loads(json.dumps({"model": model_config_fingerprint(config), "training": training}))


def model_and_optimizer(config, options: PretrainOptions, peak_lr: float):
    """The GMML model (blocks it never trains frozen) and AdamW: DINO/GMML's weight decay, not on biases and norms."""
    from ..models.spcxr.modeling_spcxr import SpcxrForMaskedImageModeling

    model = SpcxrForMaskedImageModeling(config)
    model.train()
    freeze_unused_parameters(model)
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if name.endswith(".bias") or parameter.ndim <= 1 else decay).append(parameter)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": options.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=peak_lr)
    return model, optimizer


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


def hyperparameters(options: PretrainOptions, plan: Plan, num_processes: int) -> dict:
    """The run's settings as trackers take them (plain scalars)."""
    values = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
              for k, v in dataclasses.asdict(options).items()}
    return {**values, "global_batch_size": plan.global_batch, "peak_lr": plan.peak_lr,
            "total_steps": plan.total_steps, "warmup_steps": plan.warmup_steps, "num_processes": num_processes}


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


def seed_from(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence), for torch generators."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] & ((1 << 63) - 1))


# ---------------------------------------------------------------------------------------------------- the loop


class Run:
    """The loop's state and its parts: one optimizer step, logging, previews, checkpoints and the end."""

    def __init__(self, options, accelerator, model, optimizer, config, corruption, augmentation, data, plan, progress,
                 fingerprint, output_dir, *, last_checkpoint):
        self.options, self.accelerator, self.model, self.optimizer = options, accelerator, model, optimizer
        self.config, self.corruption, self.augmentation, self.data = config, corruption, augmentation, data
        self.plan, self.progress, self.fingerprint, self.output_dir = plan, progress, fingerprint, output_dir
        self.last_checkpoint = last_checkpoint
        self.world, self.rank, self.device = accelerator.num_processes, accelerator.process_index, accelerator.device
        self.pin = self.device.type == "cuda"
        self.bar = None
        if data.map_style is not None:
            self.stream_position = None
            self.batches = map_style_batches(
                data.map_style, start_step=progress.step, steps_per_epoch=plan.steps_per_epoch, seed=options.seed,
                batch_size=options.batch_size, num_processes=self.world, process_index=self.rank,
                grad_accum=options.grad_accum, num_workers=options.num_workers, pin_memory=self.pin)
        else:
            self.stream_position = list(progress.stream_positions[self.rank])
            self.batches = streaming_batches(
                data.streaming, epoch=self.stream_position[0], skip=self.stream_position[1],
                num_workers=options.num_workers, pin_memory=self.pin, position=self.stream_position)
        self.preview_batch, skipped = preview_images(data, augmentation, options.preview_images)
        self.unreadable: dict[str, str] = dict(skipped)  # this process's; merged into progress at checkpoints
        self.debug_dir = os.environ.get(DEBUG_ENV)
        self.debug = {"world_size": self.world, "process_index": self.rank, "samples": [], "param_hashes": []}
        self.started = self.window_start = time.perf_counter()
        self.seconds_before = progress.train_seconds

    def optimizer_step(self) -> tuple[float, float, int]:
        """One optimizer step (`--grad-accum` micro-batches), recorded in `progress`. Returns lr, weight decay, epoch."""
        options, plan, accelerator, model, optimizer = (self.options, self.plan, self.accelerator, self.model,
                                                        self.optimizer)
        step = self.progress.step
        lr = learning_rate_at(step, total_steps=plan.total_steps, warmup_steps=plan.warmup_steps, peak=plan.peak_lr,
                              minimum=options.min_lr)
        wd = weight_decay_at(step, total_steps=plan.total_steps, start=options.weight_decay,
                             end=options.weight_decay_end)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.param_groups[0]["weight_decay"] = wd  # group 1 (biases, norms) stays at 0
        loss_sum = torch.zeros((), device=self.device)
        grad_norm = None
        for micro in range(options.grad_accum):
            epoch, batch = next(self.batches)
            self.note_unreadable(batch["bad"])
            if self.debug_dir:
                self.debug["samples"].extend(batch["index"])
            clean = batch["pixel_values"].to(self.device, non_blocking=self.pin)
            with accelerator.accumulate(model):
                generator = torch.Generator(device=self.device).manual_seed(seed_from(options.seed, step, micro,
                                                                                      self.rank))
                corrupted, mask = corrupt(clean, self.corruption, generator=generator)
                loss = model(pixel_values=corrupted, labels=clean, pixel_mask=mask).loss
                accelerator.backward(loss)
                loss_sum += loss.detach().float()
                if accelerator.sync_gradients:
                    if options.clip_grad > 0:
                        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), options.clip_grad))
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
        loss = accelerator.reduce(loss_sum / options.grad_accum, reduction="mean").item()
        if not math.isfinite(loss):
            raise RuntimeError(f"the loss became {loss} at step {step + 1}; lower --lr or check the data")
        self.progress.step += 1
        window = self.progress.window
        window["loss"] += loss
        window["grad_norm"] += grad_norm or 0.0
        window["steps"] += 1
        if self.debug_dir:
            self.debug["param_hashes"].append(_params_hash(accelerator.unwrap_model(model)))
        self.bar.update(1)
        return lr, wd, epoch

    def note_unreadable(self, bad: list[tuple[str, str]]) -> None:
        for name, reason in bad:
            if name not in self.unreadable:
                self.unreadable[name] = reason
                if self.accelerator.is_main_process:
                    self.bar.write(f"skipped unreadable image {reason}")

    def log(self, lr: float, wd: float, epoch: int) -> None:
        progress, window, plan = self.progress, self.progress.window, self.plan
        elapsed = time.perf_counter() - self.window_start
        entry = {
            "step": progress.step,
            "epoch": round(progress.step / plan.steps_per_epoch, 4) if plan.steps_per_epoch else epoch,
            "loss": window["loss"] / window["steps"],
            "lr": lr,
            "weight_decay": wd,
            "grad_norm": window["grad_norm"] / window["steps"] if self.options.clip_grad > 0 else None,
            "images_per_second": window["steps"] * plan.global_batch / elapsed if elapsed > 0 else None,
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
            generator = torch.Generator(device=self.device).manual_seed(seed_from(self.options.seed, 0x9E51))
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
        self.progress.train_seconds = self.seconds_before + time.perf_counter() - self.started

    def checkpoint(self) -> None:
        self.gather_progress()
        save_checkpoint(self.accelerator, self.output_dir / CHECKPOINT_DIR, self.progress.step, self.fingerprint,
                        keep=self.options.keep_checkpoints)
        self.last_checkpoint = self.progress.step

    def finish(self) -> None:
        """A last checkpoint, the final preview, the backbone with its card, the loss curve and trainer_state.json."""
        accelerator = self.accelerator
        if self.options.checkpoint_every and self.last_checkpoint != self.progress.step:
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
        from ..hub.cards import write_card

        options, plan, progress, out = self.options, self.plan, self.progress, self.output_dir
        history = progress.history
        tail = history[-10:]
        final_loss = sum(entry["loss"] for entry in tail) / len(tail) if tail else None
        epochs_done = progress.step / plan.steps_per_epoch if plan.steps_per_epoch else None
        save_backbone(out / BACKBONE_DIR, state_dict, self.config)
        if progress.unreadable:
            with atomic_file(out / UNREADABLE_LOG) as staging:
                staging.write_text("".join(f"{reason}\n" for _, reason in sorted(progress.unreadable.items())))
            sys.stderr.write(f"skipped {len(progress.unreadable)} unreadable image(s), listed in "
                             f"{out / UNREADABLE_LOG}\n")
        if history:
            write_loss_curve(out / LOSS_CURVE, history)
        write_json(out / TRAINER_STATE, {
            "global_step": progress.step,
            "total_steps": plan.total_steps,
            "epoch": epochs_done,
            "steps_per_epoch": plan.steps_per_epoch,
            "global_batch_size": plan.global_batch,
            "per_device_batch_size": options.batch_size,
            "gradient_accumulation_steps": options.grad_accum,
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
            "args": dataclasses.asdict(options),
            "log_history": history,
        })
        write_card(out / BACKBONE_DIR)  # the Hub card, from trainer_state.json written just above
        loss_text = "n/a" if final_loss is None else f"{final_loss:.4f}"
        sys.stderr.write(f"pretraining done: {progress.step} steps, final loss {loss_text}; backbone in "
                         f"{out / BACKBONE_DIR}\n")


def _params_hash(model) -> str:
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(parameter.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
