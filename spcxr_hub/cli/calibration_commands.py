"""`spcxr calibrate`: fit temperature scaling, operating points and conformal prediction sets on a validation split
for a classifier that is already saved (`finetune` does the same at the end of training)."""

from pathlib import Path
from typing import Annotated

import typer

from .app import app, fail, load_task, readable_errors
from .training_commands import CoverageOption, TargetSensitivityOption, TargetSpecificityOption


@app.command()
@readable_errors
def calibrate(
    task: Annotated[str, typer.Argument(help="Task name.")],
    model: Annotated[Path, typer.Option(help="Fine-tuned classifier directory (its config.json is updated).")],
    data: Annotated[str, typer.Option(help="Local folder in the native layout, or a Hub dataset id.")],
    split: Annotated[str, typer.Option(help="Validation split to fit on (never the split you report).")] = "val",
    temperature: Annotated[bool, typer.Option(help="Fit temperature scaling (else only thresholds and sets).")] = True,
    target_sensitivity: TargetSensitivityOption = 0.95,
    target_specificity: TargetSpecificityOption = 0.95,
    coverage: CoverageOption = 0.9,
    batch_size: Annotated[int, typer.Option()] = 16,
    strict: Annotated[bool, typer.Option(help="Fail on the first undecodable image.")] = False,
):
    """Calibrate a saved classifier on a validation split: temperature, operating points and prediction sets are
    stored in its config.json, so predict, pipelines and exports apply them."""
    import json

    from ..data.records import load_records
    from ..evaluation.evaluate import check_model_labels
    from ..evaluation.validation_fit import ValidationFitOptions, check_targets, fit_on_validation, store_fitted_fields
    from ..inference import predictions
    from ..plugins.tasks import SEGMENTATION

    chosen = load_task(task)
    if chosen.kind == SEGMENTATION:
        fail(f"task {task!r} is a segmentation task: calibration, operating points and prediction sets are for classifiers")
    if not model.is_dir():
        fail(f"--model {model}: not a model directory (calibrate updates the directory's config.json)")
    options = ValidationFitOptions(calibrate=temperature, target_sensitivity=target_sensitivity,
                                   target_specificity=target_specificity, coverage=coverage, split=split)
    check_targets(options)
    loaded, processor, _ = predictions.load_for_inference(str(model))
    check_model_labels(loaded, chosen, str(model))
    records = load_records(chosen, data, split)
    summary, notes = fit_on_validation(loaded, processor, chosen, records, options, batch_size=batch_size, strict=strict)
    store_fitted_fields(model, loaded.config)
    typer.echo(json.dumps(summary, indent=2))
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"updated {model / 'config.json'} (re-run `spcxr evaluate` for test-split numbers and the card)")
