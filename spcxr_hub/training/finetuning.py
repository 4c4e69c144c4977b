"""Fine-tuning a backbone on a task (DeiT/BEiT recipe: AdamW, layer-wise lr decay, warm-up, cosine, drop path).

The backbone is SS-CXR's ViT by default (`backbone="spcxr"`) or any registered one
(`spcxr_hub.training.model_factories`: the timm baselines, plugins' backbones); layer-wise lr decay applies where the
backbone maps parameters to blocks (ViTs), other backbones (CNNs) train with one learning rate.

Runs under Accelerate (`accelerate launch -m spcxr_hub.cli finetune …` for several processes). The output directory
is written all at once at the end: the model (loadable by the Auto classes and pipelines), `metrics.json` and plots
from the test split, `training_log.json` and `loss_curve.png`. Checkpoints for `--resume` live beside it in
`<output-dir>-checkpoints/` until the run finishes (`spcxr_hub.training.checkpoints`, shared with pretraining); resuming
with another model configuration, task or recipe is refused with one line naming what differs.
"""

import json
import math
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .model_factories import SCRATCH, get_model_factory, layer_id
from .checkpoints import check_checkpoint, latest_checkpoint, model_config_fingerprint, save_checkpoint
from ..data.records import load_records
from ..data.task_dataset import TaskDataset, collate
from ..errors import InputNotFoundError, OutputExistsError, UsageError
from ..models.spcxr.image_processing_spcxr import SpcxrImageProcessor
from .recipe import Recipe
from ..hub.saving import atomic_directory
from ..plugins.tasks import MULTI_LABEL, SEGMENTATION, SINGLE_LABEL, Task

PROGRESS_FILE = "progress.json"  # the step and the losses so far, beside accelerate's state in each checkpoint
KEEP_CHECKPOINTS = 2
CARD_EXPLANATIONS = 4  # the most confident test errors drawn with their saliency maps for the card (4 backward passes)
# FinetuneOptions fields that change how a run is watched or stored, not what it trains: they may differ on resume.
RUN_CONTROL_OPTIONS = frozenset({"output_dir", "resume", "overwrite", "checkpoint_every", "progress", "strict",
                                 "eval_split", "eval_data", "calibrate", "target_sensitivity", "target_specificity",
                                 "coverage", "group_by", "metadata"})


@dataclass(kw_only=True)
class FinetuneOptions(Recipe):
    task: str
    data: str
    output_dir: Path
    init: str | None = None  # None: the backbone's default (spcxr/vit-s for spcxr, scratch for timm baselines)
    backbone: str = "spcxr"
    seed: int = 0
    eval_split: str = "test"
    eval_data: str | None = None
    checkpoint_every: int = 0
    resume: str | None = None
    overwrite: bool = False
    # Fitted on the validation split after training (spcxr_hub.evaluation.validation_fit); calibrate None: when one exists.
    calibrate: bool | None = None
    target_sensitivity: float = 0.95
    target_specificity: float = 0.95
    coverage: float = 0.9


def sample_shots(task: Task, records, shots: int, seed: int) -> list:
    """The paper's few-shot protocol: `shots` labelled images per class (per label and of normals for multi-label;
    `shots` images for segmentation), drawn with `seed`."""
    rng = random.Random(seed)
    order = list(range(len(records)))
    rng.shuffle(order)
    if task.kind == SEGMENTATION:
        return [records[i] for i in order[:shots]]
    chosen, counts = [], {}
    for i in order:
        label = records[i]["label"]
        keys = [k for k, v in enumerate(label) if v] or ["none"] if task.kind == MULTI_LABEL else [int(label)]
        if any(counts.get(k, 0) < shots for k in keys):
            chosen.append(records[i])
            for k in keys:
                counts[k] = counts.get(k, 0) + 1
    missing = [task.labels[k] for k in range(len(task.labels)) if task.kind == SINGLE_LABEL and counts.get(k, 0) < shots]
    if missing:
        raise UsageError(f"--shots {shots}: the training split has fewer than {shots} images of {', '.join(missing)}")
    return chosen


def parameter_groups(model, learning_rate: float, weight_decay: float, layer_decay: float,
                     layers: tuple | None = None) -> list[dict]:
    """BEiT's layer-wise lr decay: lr × decay^(depth − layer); no weight decay on biases, norms and embeddings.

    `layers` = (number of blocks, parameter name → layer) (see `spcxr_hub.training.model_factories.LayerMap`); by
    default SS-CXR's names. `(0, None)` puts every parameter at one learning rate (CNNs: their stages are not a ViT's blocks)."""
    num_layers, layer_of = layers or (model.config.num_hidden_layers, None)
    if layer_of is None:
        layer_of = (lambda name: layer_id(name, num_layers)) if layers is None else (lambda name: num_layers + 1)
    depth = num_layers + 1
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        layer = layer_of(name)
        no_decay = parameter.ndim == 1 or name.endswith(("cls_token", "position_embeddings", "pos_embed", "reg_token",
                                                          "dist_token"))
        key = (layer, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": learning_rate * layer_decay ** (depth - layer),
                           "weight_decay": 0.0 if no_decay else weight_decay}
        groups[key]["params"].append(parameter)
    return list(groups.values())


class Augment:
    """Light training augmentation of a decoded film: brightness and contrast jitter. Geometric augmentation is left
    out on purpose: anatomy position carries meaning in radiographs, and random crops hurt small-data fine-tuning
    in our measurements. Seeded per (seed, epoch, index) so a resumed run draws the same augmentations."""

    def __init__(self, seed: int):
        self.seed, self.epoch = seed, 0

    def __call__(self, image, mask, index):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image = (image - 0.5) * rng.uniform(0.85, 1.15) + 0.5 + rng.uniform(-0.05, 0.05)
        return np.clip(image, 0, 1).astype(np.float32), mask


def finetune(options: FinetuneOptions, task: Task) -> dict:
    """Trains, evaluates on the test split and writes the output directory. Returns the evaluation report."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    from ..evaluation import plots
    from ..hub.cards import write_card
    from ..data.attributes import grouping
    from ..data.records import is_synthetic
    from ..evaluation.evaluate import evaluate_model
    from ..evaluation.validation_fit import ValidationFitOptions, fit_on_validation, validation_records
    from ..inference.features import write_ood_statistics

    defaults = task.defaults
    pick = lambda value, default: default if value is None else value  # noqa: E731
    epochs = pick(options.epochs, defaults.epochs)
    batch_size = pick(options.batch_size, defaults.batch_size)
    if batch_size <= 0 or epochs <= 0:
        raise UsageError(f"--batch-size and --epochs must be positive, got {batch_size} and {epochs}")
    output_dir = Path(options.output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not options.overwrite:
        raise OutputExistsError(f"{output_dir}: already exists and is not empty (choose another --output-dir or --overwrite)")
    checkpoints = Path(f"{output_dir}-checkpoints")
    subgroups = grouping(options.group_by, options.metadata)  # a bad --group-by / --metadata fails before training
    backbone = get_model_factory(options.backbone)
    backbone.check(task, options.image_size or defaults.image_size)
    init = options.init or backbone.default_init

    accelerator = Accelerator()
    set_seed(options.seed)
    train_records = load_records(task, options.data, "train")
    eval_source = options.eval_data or options.data
    eval_records = load_records(task, eval_source, options.eval_split)
    if options.shots:
        train_records = sample_shots(task, train_records, options.shots, options.seed)
    fit_options = ValidationFitOptions(calibrate=options.calibrate, target_sensitivity=options.target_sensitivity,
                                       target_specificity=options.target_specificity, coverage=options.coverage)
    # Raises before training when --calibrate cannot be done.
    fit_records, skipped_fit = validation_records(task, options.data, fit_options)
    notes = [skipped_fit] if skipped_fit else []

    model = backbone(task, init, config=options.config, image_size=options.image_size,
                     drop_path_rate=pick(options.drop_path_rate, defaults.drop_path_rate))
    size = getattr(model.config, "image_size", None) or options.image_size or defaults.image_size
    processor = SpcxrImageProcessor(size={"height": size, "width": size})
    augment = Augment(options.seed)
    dataset = TaskDataset(train_records, task, processor, transform=augment, strict=options.strict)
    generator = torch.Generator().manual_seed(options.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True,
                                         collate_fn=collate, generator=generator, drop_last=len(dataset) > batch_size)
    steps_per_epoch = math.ceil(len(loader) / accelerator.num_processes)
    total_steps = options.max_steps or epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(parameter_groups(
        model, pick(options.learning_rate, defaults.learning_rate), pick(options.weight_decay, defaults.weight_decay),
        # Layer-wise decay protects pretrained lower layers; from scratch there is nothing to protect.
        pick(options.layer_decay, 1.0 if init == SCRATCH else defaults.layer_decay),
        (backbone.layers(model) if backbone.layers else None) or (0, None)))
    warmup = min(total_steps // 2, pick(options.warmup_epochs, defaults.warmup_epochs) * steps_per_epoch)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    fingerprint = run_fingerprint(options, task, model, init, total_steps, accelerator.num_processes)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    state = {"step": 0, "losses": []}
    if options.resume:
        resume_from = latest_checkpoint(checkpoints) if options.resume == "latest" else Path(options.resume)
        if resume_from is None or not resume_from.is_dir():
            raise InputNotFoundError(f"--resume {options.resume}: no checkpoint found (looked in {checkpoints})")
        check_checkpoint(resume_from, fingerprint)  # before load_state: a foreign checkpoint is refused in one line
        accelerator.load_state(resume_from)
        state = json.loads((resume_from / PROGRESS_FILE).read_text())

    # A context manager: the bar is closed before an error propagates, so the error stays the last line on stderr.
    with tqdm(total=total_steps, initial=state["step"], desc=f"finetune {task.name}", unit="step",
              disable=not (options.progress and accelerator.is_main_process)) as bar:
        model.train()
        while state["step"] < total_steps:
            epoch, done_in_epoch = divmod(state["step"], steps_per_epoch)
            augment.epoch = epoch
            generator.manual_seed(options.seed + epoch)  # the shuffle order of each epoch is a function of the seed
            batches = accelerator.skip_first_batches(loader, done_in_epoch) if done_in_epoch else loader
            for batch in batches:
                if batch is None:
                    continue
                loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), 3.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                state["step"] += 1
                state["losses"].append(float(accelerator.gather(loss.detach()).mean()))
                bar.update(1)
                bar.set_postfix(loss=f"{state['losses'][-1]:.4f}")
                if options.checkpoint_every and state["step"] % options.checkpoint_every == 0:
                    save_checkpoint(accelerator, checkpoints, state["step"], fingerprint, keep=KEEP_CHECKPOINTS,
                                    digits=1, files={PROGRESS_FILE: state})
                if state["step"] >= total_steps:
                    break

    report = {}
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model)
        fitted = None
        if fit_records is not None:  # temperature, operating points, prediction sets → the config saved below
            fitted, fit_notes = fit_on_validation(model, processor, task, fit_records, fit_options,
                                                  strict=options.strict, progress=options.progress)
            notes += fit_notes
        with atomic_directory(output_dir, overwrite=options.overwrite) as staging:
            model.save_pretrained(staging)
            processor.save_pretrained(staging)
            statistics = write_ood_statistics(model, processor, task, train_records, staging, strict=options.strict,
                                              progress=options.progress)  # the input gate's OOD score (inference/ood.py)
            report = evaluate_model(model, processor, task, eval_records, staging, split=options.eval_split,
                                    source=eval_source, strict=options.strict, progress=options.progress, notes=notes,
                                    ood_statistics=statistics, explain=CARD_EXPLANATIONS, grouping=subgroups)
            recorded = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}
            log = {"options": {**recorded, "init": init},  # the backbone's default when none was given
                   "task": task.name, "train_images": len(train_records), "skipped_train_images": dataset.skipped,
                   "steps": state["step"], "losses": state["losses"], "validation_fit": fitted,
                   "synthetic_data": is_synthetic(options.data) or is_synthetic(eval_source)}
            (staging / "training_log.json").write_text(json.dumps(log, indent=2))
            plots.loss_curve(np.arange(1, len(state["losses"]) + 1), np.array(state["losses"]),
                             staging / "loss_curve.png", title=f"fine-tuning {task.name}")
            write_card(staging)  # numbers read back from the metrics.json just written
        shutil.rmtree(checkpoints, ignore_errors=True)
    accelerator.wait_for_everyone()
    return report


def run_fingerprint(options: FinetuneOptions, task: Task, model, init: str, total_steps: int, num_processes: int) -> dict:
    """What a checkpoint must share with the run that resumes it (spcxr_hub.training.checkpoints): the model config, the task
    and every option that changes what is trained (paths resolved, so another working directory still matches)."""
    local = lambda value: str(Path(value).resolve()) if value and Path(value).exists() else value  # noqa: E731
    training = {k: v for k, v in asdict(options).items() if k not in RUN_CONTROL_OPTIONS | {"task"}}
    training.update(data=local(options.data), init=local(init), total_steps=total_steps, num_processes=num_processes)
    return json.loads(json.dumps({"model": model_config_fingerprint(model.config), "task": {"name": task.name},
                                  "training": training}, default=str))
