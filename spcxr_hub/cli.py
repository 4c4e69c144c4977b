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

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SS-CXR: a self-supervised foundation model for chest radiographs, with task plugins.")

EXIT_BAD_INPUT = 2


@app.callback()
def quiet_libraries():
    """Library chatter (weight-loading bars, backend notices) would drown the one line a command prints."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def readable_errors(command):
    """Turns the errors a user can cause into one line on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as error:
            if os.environ.get("SPCXR_DEBUG"):
                raise
            message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
            fail(" ".join(message.split()) or type(error).__name__)

    return wrapper


def registry():
    from .plugins import get_registry

    loaded = get_registry()
    for error in loaded.errors:
        typer.echo(f"warning: {error}", err=True)
    return loaded


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
    init: Annotated[str, typer.Option(help="Backbone: model directory, Hub id, or 'scratch'.")] = "spcxr/vit-s",
    config: Annotated[str, typer.Option(help="With --init scratch: preset (vit-s, tiny) or JSON file.")] = "vit-s",
    shots: Annotated[int | None, typer.Option(help="Few-shot: N labelled training images per class.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Default: the task's.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Per process. Default: the task's.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate. Default: the task's.")] = None,
    layer_decay: Annotated[float | None, typer.Option(help="Layer-wise lr decay. Default: the task's.")] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    warmup_epochs: Annotated[int | None, typer.Option()] = None,
    drop_path: Annotated[float | None, typer.Option(help="Stochastic depth rate.")] = None,
    image_size: Annotated[int | None, typer.Option(help="With --init scratch: input size.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    eval_split: Annotated[str, typer.Option(help="Split evaluated at the end.")] = "test",
    eval_data: Annotated[str | None, typer.Option(help="Evaluate on another source (drift).")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Save a resumable checkpoint every N steps (0: never).")] = 0,
    resume: Annotated[str | None, typer.Option(help="'latest' or a checkpoint folder.")] = None,
    strict: Annotated[bool, typer.Option(help="Fail on the first undecodable image instead of skipping it.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --output-dir.")] = False,
):
    """Fine-tune a backbone on a task; evaluate on its test split; save model, metrics and plots."""
    from .finetuning import FinetuneOptions, finetune as run

    chosen = load_task(task)
    report = run(FinetuneOptions(
        task=task, data=data, output_dir=output_dir, init=init, config=config, shots=shots, epochs=epochs,
        max_steps=max_steps, batch_size=batch_size, learning_rate=lr, layer_decay=layer_decay,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, drop_path_rate=drop_path, image_size=image_size,
        seed=seed, eval_split=eval_split, eval_data=eval_data, checkpoint_every=checkpoint_every, resume=resume,
        strict=strict, overwrite=overwrite,
    ), chosen)
    if report:
        typer.echo(json.dumps(report["metrics"], indent=2))
        typer.echo(f"saved to {output_dir}")


def load_for_inference(model: str, trust_remote_code: bool = False):
    """Model (head chosen from its config) and image processor from a directory or Hub id."""
    import spcxr_hub  # noqa: F401  (registers the Auto classes)
    from transformers import (AutoConfig, AutoImageProcessor, AutoModelForImageClassification,
                              AutoModelForSemanticSegmentation)

    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    segmentation = any(a.endswith("ForSemanticSegmentation") for a in config.architectures or [])
    auto = AutoModelForSemanticSegmentation if segmentation else AutoModelForImageClassification
    loaded = auto.from_pretrained(model, trust_remote_code=trust_remote_code).eval()
    processor = AutoImageProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
    return loaded, processor, segmentation


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
):
    """Evaluate a model on a task's split: metrics JSON, confusion matrix and ROC, or mask overlays."""
    from .data import load_records
    from .evaluation import check_model_labels, evaluate_model

    chosen = load_task(task)
    loaded, processor, _ = load_for_inference(model)
    check_model_labels(loaded, chosen, model)
    records = load_records(chosen, data, split)
    output_dir = output_dir or (Path(model) / f"eval-{split}" if Path(model).is_dir() else Path(f"eval-{task}-{split}"))
    report = evaluate_model(loaded, processor, chosen, records, output_dir, split=split, source=data,
                            batch_size=batch_size, strict=strict)
    typer.echo(json.dumps(report["metrics"], indent=2))
    typer.echo(f"wrote {output_dir / 'metrics.json'}")


def expand_files(files: list[Path]) -> list[Path]:
    from .imaging import list_images

    expanded = []
    for path in files:
        if path.is_dir():
            expanded.extend(list_images(path))
        elif path.exists():
            expanded.append(path)
        else:
            fail(f"{path}: no such file or folder")
    if not expanded:
        fail("no image files given (folders are searched recursively for PNG, JPEG, TIFF, BMP and DICOM)")
    return expanded


def decoded_batches(paths: list[Path], processor, batch_size: int, strict: bool, skipped: list[str]):
    from .imaging import ImageDecodeError

    batch = []
    for path in paths:
        try:
            batch.append((path, processor(str(path), return_tensors="pt")["pixel_values"]))
        except ImageDecodeError as error:
            if strict:
                raise
            skipped.append(str(error))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


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
):
    """Predict labels and scores (classification) or masks (segmentation) for images."""
    import torch

    paths = expand_files(files)
    loaded, processor, segmentation = load_for_inference(model, trust_remote_code)
    if segmentation and output_dir is None:
        fail("--output-dir is required for a segmentation model (masks and overlays are written there)")
    results, skipped = [], []
    with torch.inference_mode():
        for batch in decoded_batches(paths, processor, batch_size, strict, skipped):
            logits = loaded(pixel_values=torch.cat([pixels for _, pixels in batch])).logits
            for (path, _), item in zip(batch, logits):
                if segmentation:
                    results.append(write_segmentation(path, item, processor, loaded.config.id2label, output_dir))
                else:
                    results.append(classification_result(path, item, loaded.config, top_k))
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


def classification_result(path: Path, logits, config, top_k: int) -> dict:
    import torch

    multi = config.problem_type == "multi_label_classification"
    scores = torch.sigmoid(logits) if multi else torch.softmax(logits, dim=-1)
    order = scores.argsort(descending=True)[:top_k]
    return {"file": str(path), "predictions": [
        {"label": config.id2label[int(i)], "score": round(float(scores[i]), 6)} for i in order]}


def write_segmentation(path: Path, logits, processor, id2label: dict, output_dir: Path) -> dict:
    """Mask PNG (class ids × 255 / (K − 1)) and an overlay PNG at the film's original size."""
    import numpy as np
    from PIL import Image

    from .evaluation import original_size_probabilities
    from .imaging import load_image
    from .saving import atomic_file

    image = load_image(str(path), max_pixels=processor.max_pixels)
    classes = original_size_probabilities(processor, logits.float(), *image.shape).argmax(axis=0)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = path.name.rsplit(".", 1)[0]
    mask_path, overlay_path = output_dir / f"{stem}_mask.png", output_dir / f"{stem}_overlay.png"
    scale = 255 // max(1, len(id2label) - 1)
    with atomic_file(mask_path) as staging:
        Image.fromarray((classes * scale).astype(np.uint8)).save(staging, format="PNG")
    gray = (image * 255).astype(np.uint8)
    overlay = np.stack([gray, gray, gray], axis=-1).astype(np.float32)
    overlay[classes > 0] = 0.6 * overlay[classes > 0] + 0.4 * np.array([255, 60, 60])
    with atomic_file(overlay_path) as staging:
        Image.fromarray(overlay.astype(np.uint8)).save(staging, format="PNG")
    fractions = {id2label[k]: float((classes == k).mean()) for k in sorted(id2label)}
    return {"file": str(path), "mask": str(mask_path), "overlay": str(overlay_path), "fractions": fractions}


@app.command()
@readable_errors
def embed(
    files: Annotated[list[Path], typer.Argument(help="Images or folders.")],
    model: Annotated[str, typer.Option(help="Backbone (or fine-tuned model) directory or Hub id.")],
    output: Annotated[Path, typer.Option(help="Parquet file: file, cls, mean (one row per image).")],
    batch_size: Annotated[int, typer.Option()] = 8,
    strict: Annotated[bool, typer.Option()] = False,
):
    """One embedding per image: the CLS token and the mean patch token of the last layer."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoImageProcessor, AutoModel

    import spcxr_hub  # noqa: F401
    from .saving import atomic_file

    paths = expand_files(files)
    backbone = AutoModel.from_pretrained(model).eval()
    processor = AutoImageProcessor.from_pretrained(model)
    rows, skipped = {"file": [], "cls": [], "mean": []}, []
    with torch.inference_mode():
        for batch in decoded_batches(paths, processor, batch_size, strict, skipped):
            hidden = backbone(pixel_values=torch.cat([p for _, p in batch])).last_hidden_state
            rows["file"].extend(str(path) for path, _ in batch)
            rows["cls"].extend(hidden[:, 0].tolist())
            rows["mean"].extend(hidden[:, 1:].mean(dim=1).tolist())
    with atomic_file(output) as staging:
        pq.write_table(pa.table(rows), staging)
    typer.echo(f"wrote {len(rows['file'])} embeddings of size {len(rows['cls'][0]) if rows['cls'] else 0} to {output}")
    for message in skipped:
        typer.echo(f"skipped: {message}", err=True)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def pretrain(ctx: typer.Context):
    """GMML self-supervised pretraining (same options as `python pretrain.py --help`)."""
    from .pretraining import main as pretrain_main

    raise typer.Exit(pretrain_main(list(ctx.args)))


@app.command()
@readable_errors
def convert(
    checkpoint: Annotated[Path, typer.Argument(help="timm/DeiT/DINO/GMML ViT checkpoint (.safetensors or .pth).")],
    output_dir: Annotated[Path, typer.Option(help="Where the SpcxrModel directory goes.")],
    image_size: Annotated[int | None, typer.Option(help="Resize the position embeddings to this input size.")] = None,
):
    """Convert a ViT checkpoint (3-channel or 1-channel) into an SS-CXR backbone directory."""
    from .convert import convert_vit_checkpoint
    from .image_processing_spcxr import SpcxrImageProcessor
    from .saving import save_model_directory

    model = convert_vit_checkpoint(checkpoint, **({"image_size": image_size} if image_size else {}))
    size = model.config.image_size
    save_model_directory(output_dir, model, SpcxrImageProcessor(size={"height": size, "width": size}))
    typer.echo(f"saved SpcxrModel ({model.config.num_hidden_layers} blocks, width {model.config.hidden_size}) to {output_dir}")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app(prog_name="spcxr")


if __name__ == "__main__":
    sys.exit(main())
