"""Publishing commands: `spcxr convert`, `spcxr card`, `spcxr export` and `spcxr push`."""

from pathlib import Path
from typing import Annotated

import typer

from .app import app, fail, readable_errors, warn


@app.command()
@readable_errors
def convert(
    checkpoint: Annotated[Path, typer.Argument(help="timm/DeiT/DINO/GMML ViT checkpoint (.safetensors or .pth).")],
    output_dir: Annotated[Path, typer.Option(help="Where the SpcxrModel directory goes.")],
    image_size: Annotated[int | None, typer.Option(help="Resize the position embeddings to this input size.")] = None,
):
    """Convert a ViT checkpoint (3-channel or 1-channel) into an SS-CXR backbone directory."""
    from ..hub.convert import convert_vit_checkpoint
    from ..models.spcxr.image_processing_spcxr import SpcxrImageProcessor
    from ..hub.saving import save_model_directory

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
    from ..hub.cards import build_card, write_bundle
    from ..hub.publishing import validate_hub_id

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
    format: Annotated[str | None, typer.Option(
        "--format", help="onnx or openvino: a runtime export for CPUs (spcxr_hub.hub.runtime_export), run by "
                         "`spcxr predict --model REPO_DIR`.")] = None,
    int8: Annotated[bool, typer.Option(help="--format: static int8 post-training quantisation.")] = False,
    calibration_data: Annotated[Path | None, typer.Option(
        help="--int8: folder of a few hundred images (searched recursively) calibrating the activation ranges.")] = None,
    check_data: Annotated[str | None, typer.Option(
        help="--format: held-out data in the task's layout for the accuracy check (default: the split the model "
             "was evaluated on, else synthetic phantoms).")] = None,
    allow_drop: Annotated[bool, typer.Option(
        help="--format: write the export even when the metric drops more than 0.5 points (warns).")] = False,
):
    """Write a complete Hub repository folder: safetensors, configs, code, card with widget, examples, metrics."""
    if format is not None:
        from ..hub.runtime_export import export_runtime

        if native or training_summary is not None or check_images is not None:
            fail("--format: --native, --training-summary and --check-images do not apply to runtime exports")
        folder, check = export_runtime(model_dir, repo_dir, format=format, int8=int8,
                                       calibration_data=calibration_data, check_data=check_data,
                                       allow_drop=allow_drop, overwrite=overwrite, repo_id=repo_id,
                                       example_images=example_image or None, synthetic=synthetic, warn=warn)
        typer.echo(f"wrote {folder} ({format}, {'int8' if int8 else 'fp32'}; {check.line()})")
        return
    if int8 or calibration_data is not None or check_data is not None or allow_drop:
        fail("--int8, --calibration-data, --check-data and --allow-drop belong to --format exports")
    if native:
        from ..hub.native_export import export_native

        if training_summary is not None:
            fail("--training-summary: not used by --native exports (they publish the model directory's own log)")
        folder, equivalence = export_native(model_dir, repo_dir, repo_id=repo_id, overwrite=overwrite,
                                            check_images=check_images, allow_disagreement=allow_disagreement,
                                            example_images=example_image or None, synthetic=synthetic, warn=warn)
        typer.echo(f"wrote {folder} (native transformers ViT, no remote code; {equivalence.line()})")
        return
    if check_images is not None or allow_disagreement:
        fail("--check-images and --allow-disagreement belong to --native exports")
    from ..hub.publishing import export_repository

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
    from ..hub.publishing import push_to_hub

    url = push_to_hub(model_dir, repo_id, private=private, revision=revision, example_images=example_image or None,
                      synthetic=synthetic, native=native, allow_disagreement=allow_disagreement, warn=warn)
    typer.echo(f"pushed {model_dir} to {repo_id}: {url}")


