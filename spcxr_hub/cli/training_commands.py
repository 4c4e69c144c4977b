"""Training commands: `spcxr finetune`, `spcxr reproduce` and `spcxr pretrain`."""

import json
from pathlib import Path
from typing import Annotated

import typer

from .app import GroupByOption, MetadataOption, app, load_task, readable_errors
# `pretrain`'s options, from their one declaration (light: no torch at start-up).
from ..training.pretraining_options import PretrainCommand, typer_options


# The recipe options `finetune` and `reproduce` share (spcxr_hub.training.recipe.Recipe), declared once.
ConfigOption = Annotated[str, typer.Option(help="ViT a scratch model is built from: preset (vit-s, tiny) or JSON file.")]
ShotsOption = Annotated[int | None, typer.Option(help="Few-shot: N labelled training images per class.")]
EpochsOption = Annotated[int | None, typer.Option(help="Default: the task's.")]
MaxStepsOption = Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")]
BatchSizeOption = Annotated[int | None, typer.Option(help="Per process. Default: the task's.")]
LrOption = Annotated[float | None, typer.Option(help="Peak learning rate. Default: the task's.")]
LayerDecayOption = Annotated[float | None, typer.Option(help="Layer-wise lr decay (ViTs). Default: the task's.")]
WeightDecayOption = Annotated[float | None, typer.Option(help="Default: the task's.")]
WarmupEpochsOption = Annotated[int | None, typer.Option(help="Default: the task's.")]
DropPathOption = Annotated[float | None, typer.Option(help="Stochastic depth rate. Default: the task's.")]
ImageSizeOption = Annotated[int | None, typer.Option(help="Input size of scratch and timm models (a pretrained "
                                                         "SS-CXR keeps its own).")]
StrictOption = Annotated[bool, typer.Option(help="Fail on the first undecodable image instead of skipping it.")]
# Post-hoc fits on the validation split (spcxr_hub.evaluation.validation_fit), shared with `spcxr calibrate`.
TargetSensitivityOption = Annotated[float, typer.Option(help="Operating point: threshold reaching this sensitivity on "
                                                             "the validation split (predict's `positive`).")]
TargetSpecificityOption = Annotated[float, typer.Option(help="Second operating point: this specificity on validation.")]
CoverageOption = Annotated[float, typer.Option(help="Conformal (APS) prediction sets: guaranteed coverage, calibrated "
                                                    "on the validation split.")]


RECIPE_OPTIONS = {"config": "config", "shots": "shots", "epochs": "epochs", "max_steps": "max_steps",
                  "batch_size": "batch_size", "lr": "learning_rate", "layer_decay": "layer_decay",
                  "weight_decay": "weight_decay", "warmup_epochs": "warmup_epochs", "drop_path": "drop_path_rate",
                  "image_size": "image_size", "strict": "strict", "group_by": "group_by", "metadata": "metadata"}


def recipe(arguments: dict) -> dict:
    """The shared options among a command's arguments, as `Recipe` fields (the CLI says --lr, --drop-path)."""
    return {field: arguments[option] for option, field in RECIPE_OPTIONS.items()}


@app.command()
@readable_errors
def finetune(
    task: Annotated[str, typer.Argument(help="Task name (see `spcxr plugins`).")],
    data: Annotated[str, typer.Option(help="Local folder in the dataset's native layout, or a Hub dataset id.")],
    output_dir: Annotated[Path, typer.Option(help="Where the fine-tuned model, metrics and plots go.")],
    init: Annotated[str | None, typer.Option(help="Weights: model directory, Hub id or 'scratch' (default spcxr/vit-s); "
                                               "timm backbones: 'scratch' (default) or a local weights file/folder.")] = None,
    backbone: Annotated[str, typer.Option(help="spcxr (SS-CXR's ViT), timm:densenet121|densenet169|efficientnet_b2|"
                                          "inception_resnet_v2|vit_small_patch16_224, or a plugin's (`spcxr plugins`).")] = "spcxr",
    config: ConfigOption = "vit-s",
    shots: ShotsOption = None,
    epochs: EpochsOption = None,
    max_steps: MaxStepsOption = None,
    batch_size: BatchSizeOption = None,
    lr: LrOption = None,
    layer_decay: LayerDecayOption = None,
    weight_decay: WeightDecayOption = None,
    warmup_epochs: WarmupEpochsOption = None,
    drop_path: DropPathOption = None,
    image_size: ImageSizeOption = None,
    seed: Annotated[int, typer.Option()] = 0,
    eval_split: Annotated[str, typer.Option(help="Split evaluated at the end.")] = "test",
    eval_data: Annotated[str | None, typer.Option(help="Evaluate on another source (drift).")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Save a resumable checkpoint every N steps (0: never).")] = 0,
    resume: Annotated[str | None, typer.Option(help="'latest' or a checkpoint folder.")] = None,
    strict: StrictOption = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --output-dir.")] = False,
    calibrate: Annotated[bool | None, typer.Option(
        "--calibrate/--no-calibrate", help="Temperature scaling fitted on the validation split, stored in the model "
                                           "(default: on when the task has a validation split).")] = None,
    target_sensitivity: TargetSensitivityOption = 0.95,
    target_specificity: TargetSpecificityOption = 0.95,
    coverage: CoverageOption = 0.9,
    group_by: GroupByOption = None,
    metadata: MetadataOption = None,
):
    """Fine-tune a backbone on a task; evaluate on its test split; save model, metrics and plots."""
    from ..training.finetuning import FinetuneOptions, finetune as run

    chosen = load_task(task)
    report = run(FinetuneOptions(
        **recipe(locals()),
        task=task, data=data, output_dir=output_dir, init=init, backbone=backbone, seed=seed, eval_split=eval_split,
        eval_data=eval_data, checkpoint_every=checkpoint_every, resume=resume, overwrite=overwrite,
        calibrate=calibrate, target_sensitivity=target_sensitivity, target_specificity=target_specificity,
        coverage=coverage,
    ), chosen)
    if report:
        typer.echo(json.dumps(report["metrics"], indent=2))
        for note in report.get("notes", []):
            typer.echo(f"note: {note}", err=True)
        typer.echo(f"saved to {output_dir}")


@app.command()
@readable_errors
def reproduce(
    task: Annotated[str, typer.Argument(help="Task name (see `spcxr plugins`).")],
    data: Annotated[str, typer.Option(help="Local folder in the dataset's native layout, or a Hub dataset id.")],
    output_dir: Annotated[Path, typer.Option(help="Where results.json, results.md and runs/ go.")],
    models: Annotated[str, typer.Option(help="Comma-separated: ss-cxr, scratch, timm:densenet121, … (NAME=WEIGHTS: "
                                              "given weights).")],
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds; several give mean ± std.")] = "0",
    shots: ShotsOption = None,
    eval_data: Annotated[str | None, typer.Option(help="Second source: the drift table.")] = None,
    ss_cxr: Annotated[str, typer.Option("--ss-cxr", help="The pretrained backbone `ss-cxr` stands for.")] = "spcxr/vit-s",
    config: ConfigOption = "vit-s",
    epochs: EpochsOption = None,
    max_steps: MaxStepsOption = None,
    batch_size: BatchSizeOption = None,
    lr: LrOption = None,
    layer_decay: LayerDecayOption = None,
    weight_decay: WeightDecayOption = None,
    warmup_epochs: WarmupEpochsOption = None,
    drop_path: DropPathOption = None,
    image_size: ImageSizeOption = None,
    strict: StrictOption = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --output-dir.")] = False,
    group_by: GroupByOption = None,
    metadata: MetadataOption = None,
):
    """Fine-tune each model with one recipe and seed(s); evaluate; write results.json and the paper-style table."""
    from ..training.reproduce import ReproduceOptions, parse_models, parse_seeds, reproduce as run

    chosen = load_task(task)
    parse_models(models.split(","), ss_cxr)  # an unknown name fails here, before any data is read
    run(ReproduceOptions(
        **recipe(locals()),
        task=task, data=data, output_dir=output_dir, models=models.split(","), seeds=parse_seeds(seeds),
        eval_data=eval_data, ss_cxr=ss_cxr, overwrite=overwrite,
    ), chosen)
    typer.echo((output_dir / "results.md").read_text())
    typer.echo(f"wrote {output_dir / 'results.json'} and {output_dir / 'results.md'}")


@app.command(cls=PretrainCommand)
@readable_errors
@typer_options
def pretrain(options):
    """GMML self-supervised pretraining of SS-CXR.

    The same command as `python pretrain.py` and `accelerate launch pretrain.py` (one CPU, GPUs, several machines:
    docs/pretraining.md)."""
    from ..training.pretraining import pretrain as run

    run(options)


