"""`spcxr`: the command line of SPCXR Hub.

Every command prints one readable line and exits with status 2 on bad input (set SPCXR_DEBUG=1 for the traceback).
Heavy libraries (accelerate, datasets, evaluate, matplotlib, timm) are imported inside the commands that need them,
so `spcxr predict` starts fast.
"""

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

# `pretrain`'s options, from their one declaration (light: no torch at start-up).
from .training.pretraining_options import PretrainCommand, typer_options

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SS-CXR: a self-supervised foundation model for chest radiographs, with task plugins.")

EXIT_BAD_INPUT = 2
EXIT_BUG = 1


@app.callback()
def quiet_libraries():
    """Library chatter (weight-loading bars, backend notices) would drown the one line a command prints. Set through
    the environment so that commands which never load transformers (a fast `predict`) do not pay for importing it."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def warn(line: str) -> None:
    typer.echo(line, err=True)


def readable_errors(command):
    """Errors a user can cause become one line on stderr and exit status 2; any other exception is a bug: one line
    saying so and exit status 1, its traceback shown with SPCXR_DEBUG=1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from .errors import DEBUG_ENV, SpcxrError, internal_error_line, one_line
        from .models.spcxr.imaging import ImageDecodeError  # Hub remote code: it cannot import errors.py, so it is named here

        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except (SpcxrError, ImageDecodeError) as error:
            if os.environ.get(DEBUG_ENV):
                raise
            fail(one_line(error))
        except Exception as error:
            if os.environ.get(DEBUG_ENV):
                raise
            typer.echo(internal_error_line(error), err=True)
            raise typer.Exit(EXIT_BUG) from None

    return wrapper


def registry():
    from .plugins.registry import get_registry

    loaded = get_registry()
    for error in loaded.errors:
        typer.echo(f"warning: {error}", err=True)
    return loaded


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


RECIPE_OPTIONS = {"config": "config", "shots": "shots", "epochs": "epochs", "max_steps": "max_steps",
                  "batch_size": "batch_size", "lr": "learning_rate", "layer_decay": "layer_decay",
                  "weight_decay": "weight_decay", "warmup_epochs": "warmup_epochs", "drop_path": "drop_path_rate",
                  "image_size": "image_size", "strict": "strict"}


def recipe(arguments: dict) -> dict:
    """The shared options among a command's arguments, as `Recipe` fields (the CLI says --lr, --drop-path)."""
    return {field: arguments[option] for option, field in RECIPE_OPTIONS.items()}


def load_task(name: str):
    return registry().task(name)


@app.command("plugins")
@readable_errors
def plugins_command(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False):
    """List the installed plugins with their distribution, version, tasks and backbones."""
    loaded = registry()
    rows = [
        {"name": info.name, "distribution": info.distribution, "version": info.version, "tasks": info.tasks,
         "backbones": info.backbones, "errors": info.errors}
        for info in sorted(loaded.plugins.values(), key=lambda info: info.name)
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no plugins loaded (SPCXR_LOAD_PLUGINS may be limiting them)")
    for row in rows:
        provided = ", ".join(row["tasks"] + [f"backbone:{b}" for b in row["backbones"]]) or "-"
        status = "  [error]" if row["errors"] else ""
        typer.echo(f"{row['name']:<14} {row['distribution']} {row['version']:<8} {provided}{status}")


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
):
    """Fine-tune a backbone on a task; evaluate on its test split; save model, metrics and plots."""
    from .training.finetuning import FinetuneOptions, finetune as run

    chosen = load_task(task)
    report = run(FinetuneOptions(
        **recipe(locals()),
        task=task, data=data, output_dir=output_dir, init=init, backbone=backbone, seed=seed, eval_split=eval_split,
        eval_data=eval_data, checkpoint_every=checkpoint_every, resume=resume, overwrite=overwrite,
    ), chosen)
    if report:
        typer.echo(json.dumps(report["metrics"], indent=2))
        typer.echo(f"saved to {output_dir}")


# Where inference runs (spcxr_hub.inference.devices.resolve_device): predict, evaluate and embed.
DeviceOption = Annotated[str, typer.Option(help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps.")]


@app.command()
@readable_errors
def evaluate(
    task: Annotated[str, typer.Argument(help="Task name.")],
    model: Annotated[str, typer.Option(help="Model directory or Hub id.")],
    data: Annotated[str, typer.Option(help="Local folder in the native layout, or a Hub dataset id.")],
    split: Annotated[str, typer.Option()] = "test",
    output_dir: Annotated[Path | None, typer.Option(help="Default: <model>/eval-<split>.")] = None,
    batch_size: Annotated[int, typer.Option()] = 16,
    strict: Annotated[bool, typer.Option(help="Fail on the first undecodable image.")] = False,
    device: DeviceOption = "auto",
):
    """Evaluate a model on a task's split: metrics JSON, confusion matrix and ROC, or mask overlays."""
    from .data.records import load_records
    from .evaluation.evaluate import check_model_labels, evaluate_model
    from .inference import predictions
    from .inference.devices import resolve_device

    target = resolve_device(device)
    chosen = load_task(task)
    loaded, processor, _ = predictions.load_for_inference(model)
    loaded = loaded.to(target)  # evaluate_model runs batches on the model's device
    check_model_labels(loaded, chosen, model)
    records = load_records(chosen, data, split)
    output_dir = output_dir or (Path(model) / f"eval-{split}" if Path(model).is_dir() else Path(f"eval-{task}-{split}"))
    report = evaluate_model(loaded, processor, chosen, records, output_dir, split=split, source=data,
                            batch_size=batch_size, strict=strict)
    typer.echo(json.dumps(report["metrics"], indent=2))
    typer.echo(f"wrote {output_dir / 'metrics.json'}")


@app.command()
@readable_errors
def predict(
    files: Annotated[list[Path], typer.Argument(help="Images (PNG, JPEG, 16-bit PNG, DICOM) or folders.")],
    model: Annotated[str, typer.Option(help="Model directory or Hub id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    output_dir: Annotated[Path | None, typer.Option(help="Segmentation: where mask PNGs and overlays go.")] = None,
    batch_size: Annotated[int, typer.Option()] = 8,
    top_k: Annotated[int, typer.Option(help="Labels shown per image.")] = 3,
    strict: Annotated[bool, typer.Option(help="Fail on the first undecodable image.")] = False,
    trust_remote_code: Annotated[bool, typer.Option()] = False,
    fast: Annotated[bool, typer.Option(
        "--fast", help="Deployment path (spcxr_hub.inference.deploy): on CPUs with AVX-512-BF16/AMX, bf16 with fused oneDNN "
                       "kernels (~5x fp32 for ViT-S; top-1 agrees with fp32, see benchmarks/); other CPUs: dynamic "
                       "int8; CUDA: bf16. Prints the path taken and why on stderr.")] = False,
    device: DeviceOption = "auto",
    workers: Annotated[int | None, typer.Option(help="Image-decoding threads (default: CPUs, at most 4).")] = None,
):
    """Predict labels and scores (classification) or masks (segmentation) for images."""
    from dataclasses import asdict

    import torch

    from .inference import predictions
    from .inference.devices import model_device, resolve_device, to_device

    target = resolve_device(device)
    paths = predictions.image_files(files)
    loaded, processor, segmentation = predictions.load_for_inference(model, trust_remote_code, lean=True)
    if segmentation and output_dir is None:
        fail("--output-dir is required for a segmentation model (masks and overlays are written there)")
    fast_path = None
    if fast:
        from .inference.deploy import choose_fast_path, optimize

        fast_path = choose_fast_path(target)
        typer.echo(fast_path.line, err=True)  # CPUs of one cloud instance type differ: say which path ran
        loaded = optimize(loaded, target, batch_size=batch_size, path=fast_path)
    else:
        loaded = loaded.to(target)
    where = model_device(loaded)
    results, skipped = [], []
    with torch.inference_mode():
        for batch in predictions.decoded_batches(paths, processor, batch_size, strict, skipped, workers):
            output = loaded(pixel_values=to_device(torch.cat([pixels for _, pixels in batch]), where))
            logits = (output if isinstance(output, torch.Tensor) else output.logits).float().cpu()
            for (path, _), item in zip(batch, logits):
                if segmentation:
                    results.append(predictions.write_segmentation(path, item, processor, loaded.config.id2label, output_dir))
                else:
                    results.append(predictions.classification_result(path, item, loaded.config, top_k))
                if fast_path is not None:
                    results[-1]["fast_path"] = asdict(fast_path)
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    else:
        for result in results:
            if segmentation:
                fractions = ", ".join(f"{k} {v:.1%}" for k, v in result["fractions"].items())
                typer.echo(f"{result['file']}\t{fractions}\t{result['mask']}")
            else:
                labels = "  ".join(f"{p['label']} {p['score']:.3f}" for p in result["predictions"])
                typer.echo(f"{result['file']}\t{labels}")
    if skipped:
        typer.echo(f"skipped {len(skipped)} unreadable file(s):", err=True)
        for message in skipped:
            typer.echo(f"  {message}", err=True)
    if not results:  # nothing predicted is a failure, even if the (empty) output was well-formed
        fail(f"none of the {len(paths)} input file(s) could be read")


@app.command()
@readable_errors
def embed(
    files: Annotated[list[Path], typer.Argument(help="Images or folders.")],
    model: Annotated[str, typer.Option(help="Backbone (or fine-tuned model) directory or Hub id.")],
    output: Annotated[Path, typer.Option(help="Parquet file: file, cls, mean (one row per image).")],
    batch_size: Annotated[int, typer.Option()] = 8,
    strict: Annotated[bool, typer.Option()] = False,
    device: DeviceOption = "auto",
):
    """One embedding per image: the CLS token and the mean patch token of the last layer."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoImageProcessor, AutoModel

    import spcxr_hub  # noqa: F401
    from .hub.saving import atomic_file
    from .inference import predictions
    from .inference.devices import model_device, resolve_device, to_device

    target = resolve_device(device)
    paths = predictions.image_files(files)
    backbone = AutoModel.from_pretrained(model).eval().to(target)
    processor = AutoImageProcessor.from_pretrained(model)
    where = model_device(backbone)
    rows, skipped = {"file": [], "cls": [], "mean": []}, []
    with torch.inference_mode():
        for batch in predictions.decoded_batches(paths, processor, batch_size, strict, skipped):
            hidden = backbone(pixel_values=to_device(torch.cat([p for _, p in batch]), where)).last_hidden_state
            hidden = hidden.float().cpu()
            if hidden.ndim != 3:
                fail(f"{model}: embed needs a ViT backbone (token sequence); this model returns feature maps")
            rows["file"].extend(str(path) for path, _ in batch)
            rows["cls"].extend(hidden[:, 0].tolist())
            rows["mean"].extend(hidden[:, 1:].mean(dim=1).tolist())
    with atomic_file(output) as staging:
        pq.write_table(pa.table(rows), staging)
    typer.echo(f"wrote {len(rows['file'])} embeddings of size {len(rows['cls'][0]) if rows['cls'] else 0} to {output}")
    for message in skipped:
        typer.echo(f"skipped: {message}", err=True)


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
):
    """Fine-tune each model with one recipe and seed(s); evaluate; write results.json and the paper-style table."""
    from .training.reproduce import ReproduceOptions, parse_models, parse_seeds, reproduce as run

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
    from .training.pretraining import pretrain as run

    run(options)


@app.command()
@readable_errors
def convert(
    checkpoint: Annotated[Path, typer.Argument(help="timm/DeiT/DINO/GMML ViT checkpoint (.safetensors or .pth).")],
    output_dir: Annotated[Path, typer.Option(help="Where the SpcxrModel directory goes.")],
    image_size: Annotated[int | None, typer.Option(help="Resize the position embeddings to this input size.")] = None,
):
    """Convert a ViT checkpoint (3-channel or 1-channel) into an SS-CXR backbone directory."""
    from .hub.convert import convert_vit_checkpoint
    from .models.spcxr.image_processing_spcxr import SpcxrImageProcessor
    from .hub.saving import save_model_directory

    model = convert_vit_checkpoint(checkpoint, **({"image_size": image_size} if image_size else {}))
    size = model.config.image_size
    save_model_directory(output_dir, model, SpcxrImageProcessor(size={"height": size, "width": size}))
    typer.echo(f"saved SpcxrModel ({model.config.num_hidden_layers} blocks, width {model.config.hidden_size}) to {output_dir}")


SYNTHETIC_OPTION = typer.Option(
    "--synthetic/--real-data",
    help="Say whether the model was trained on synthetic phantoms (default: what training_log.json records).")


@app.command()
@readable_errors
def card(
    model_dir: Annotated[Path, typer.Argument(help="Model directory (backbone, classifier or segmenter).")],
    repo_id: Annotated[str | None, typer.Option(help="Hub id the card is written for. Default: the task's.")] = None,
    example_image: Annotated[list[Path] | None, typer.Option(
        help="Widget example (repeatable). Default: the examples already there, else two phantom films.")] = None,
    synthetic: Annotated[bool | None, SYNTHETIC_OPTION] = None,
    training_summary: Annotated[Path | None, typer.Option(
        help="Training log JSON kept elsewhere (default: training_log.json, or trainer_state.json in or beside "
        "the folder).")] = None,
):
    """Write MODEL_DIR/README.md: the model card, with numbers read from metrics.json and a computed widget."""
    from .hub.cards import build_card, write_bundle
    from .hub.publishing import validate_hub_id

    if repo_id is not None:
        validate_hub_id(repo_id)
    if not model_dir.is_dir():
        fail(f"{model_dir}: no such model directory")
    bundle = build_card(model_dir, repo_id=repo_id, example_images=example_image or None, synthetic=synthetic,
                        training_summary=training_summary)
    readme = write_bundle(bundle, model_dir)
    evaluated = "model-index from metrics.json" if bundle.evaluated else "not evaluated: no metrics.json"
    typer.echo(f"wrote {readme} ({bundle.kind} card, {evaluated})")


@app.command()
@readable_errors
def export(
    model_dir: Annotated[Path, typer.Argument(help="Model directory to publish.")],
    repo_dir: Annotated[Path, typer.Option(help="Where the Hub repository folder is written.")],
    repo_id: Annotated[str | None, typer.Option(help="Hub id 'org/name' the card is written for.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --repo-dir.")] = False,
    example_image: Annotated[list[Path] | None, typer.Option(help="Widget example (repeatable).")] = None,
    synthetic: Annotated[bool | None, SYNTHETIC_OPTION] = None,
    training_summary: Annotated[Path | None, typer.Option(help="Training log JSON kept elsewhere.")] = None,
    native: Annotated[bool, typer.Option(help="Stock transformers ViT, no remote code: loads without "
                                         "trust_remote_code and in Hub widgets (backbones, classifiers).")] = False,
    check_images: Annotated[Path | None, typer.Option(
        help="--native: folder of held-out images for the equivalence check (default: the split the model was "
             "evaluated on, where its folder is still there; else 32 synthetic phantoms).")] = None,
    allow_disagreement: Annotated[bool, typer.Option(
        help="--native: publish even when top-1 agreement with the SS-CXR model is below 99% (warns).")] = False,
):
    """Write a complete Hub repository folder: safetensors, configs, code, card with widget, examples, metrics."""
    if native:
        from .hub.native_export import export_native

        if training_summary is not None:
            fail("--training-summary: not used by --native exports (they publish the model directory's own log)")
        folder, equivalence = export_native(model_dir, repo_dir, repo_id=repo_id, overwrite=overwrite,
                                            check_images=check_images, allow_disagreement=allow_disagreement,
                                            example_images=example_image or None, synthetic=synthetic, warn=warn)
        typer.echo(f"wrote {folder} (native transformers ViT, no remote code; {equivalence.line()})")
        return
    if check_images is not None or allow_disagreement:
        fail("--check-images and --allow-disagreement belong to --native exports")
    from .hub.publishing import export_repository

    folder = export_repository(model_dir, repo_dir, repo_id=repo_id, overwrite=overwrite,
                               example_images=example_image or None, synthetic=synthetic,
                               training_summary=training_summary)
    typer.echo(f"wrote {folder} ({len([p for p in folder.rglob('*') if p.is_file()])} files)")


@app.command()
@readable_errors
def push(
    model_dir: Annotated[Path, typer.Argument(help="Model directory or exported repository folder.")],
    repo_id: Annotated[str, typer.Option(help="Hub id 'org/name'.")],
    private: Annotated[bool, typer.Option(help="Create the repository as private.")] = False,
    revision: Annotated[str | None, typer.Option(help="Branch to push to (created if missing).")] = None,
    example_image: Annotated[list[Path] | None, typer.Option(help="Widget example (repeatable).")] = None,
    synthetic: Annotated[bool | None, SYNTHETIC_OPTION] = None,
    native: Annotated[bool, typer.Option(help="Push the native export (see `spcxr export --native`).")] = False,
    allow_disagreement: Annotated[bool, typer.Option(help="--native: as for `spcxr export`.")] = False,
):
    """Upload the model to the Hugging Face Hub as a complete repository (token: `hf auth login` or HF_TOKEN)."""
    from .hub.publishing import push_to_hub

    url = push_to_hub(model_dir, repo_id, private=private, revision=revision, example_images=example_image or None,
                      synthetic=synthetic, native=native, allow_disagreement=allow_disagreement, warn=warn)
    typer.echo(f"pushed {model_dir} to {repo_id}: {url}")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app(prog_name="spcxr")


if __name__ == "__main__":
    sys.exit(main())
