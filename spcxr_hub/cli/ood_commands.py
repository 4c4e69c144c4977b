"""`spcxr ood-statistics`: adds the input gate's OOD statistics to a model fine-tuned before they existed."""

from pathlib import Path
from typing import Annotated

import typer

from .app import DeviceOption, app, fail, load_task, readable_errors


@app.command("ood-statistics")
@readable_errors
def ood_statistics(
    task: Annotated[str, typer.Argument(help="Task name (reads the data in its layout).")],
    model: Annotated[Path, typer.Option(help="Fine-tuned classifier directory.")],
    data: Annotated[str, typer.Option(help="The training data: local folder in the native layout or Hub dataset id.")],
    split: Annotated[str, typer.Option(help="The split the model was trained on.")] = "train",
    batch_size: Annotated[int, typer.Option()] = 16,
    strict: Annotated[bool, typer.Option(help="Fail on the first undecodable image.")] = False,
    device: DeviceOption = "auto",
):
    """Write ood_statistics.safetensors (mean, covariance and threshold of the training set's pooled features)."""
    from ..data.records import load_records
    from ..evaluation.evaluate import check_model_labels
    from ..inference import ood, predictions
    from ..inference.devices import resolve_device
    from ..inference.features import write_ood_statistics

    if not model.is_dir():
        fail(f"{model}: not a model directory")
    chosen = load_task(task)
    loaded, processor, segmentation = predictions.load_for_inference(str(model))
    if segmentation:
        fail(f"{model}: a segmentation model has no pooled classifier features; the OOD score covers classifiers")
    check_model_labels(loaded, chosen, str(model))
    records = load_records(chosen, data, split)
    statistics = write_ood_statistics(loaded.to(resolve_device(device)), processor, chosen, records, model,
                                      strict=strict, batch_size=batch_size)
    if statistics is None:
        fail(f"{data}: too few readable {split} images for OOD statistics (need at least {2 * ood.FOLDS})")
    typer.echo(f"wrote {model / ood.OOD_FILE}: {statistics.num_images} images, threshold {statistics.threshold:.2f} "
               f"at the {statistics.percentile:g}th percentile")
