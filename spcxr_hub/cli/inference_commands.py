"""Inference commands: `spcxr evaluate`, `spcxr predict` and `spcxr embed`."""

import json
from pathlib import Path
from typing import Annotated

import typer

from .app import DeviceOption, GroupByOption, MetadataOption, app, fail, load_task, readable_errors


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
    explain: Annotated[int, typer.Option("--explain", help="Also draw the N most confident errors with their "
                                                           "saliency maps (explanations.png).")] = 0,
    gate: Annotated[str, typer.Option(help="Input gate over the split (metrics.json's input_gate section and "
                                           "flagged_examples.png): warn or off.")] = "warn",
    group_by: GroupByOption = None,
    metadata: MetadataOption = None,
):
    """Evaluate a model on a task's split: metrics JSON, confusion matrix and ROC, or mask overlays."""
    from ..data.attributes import grouping
    from ..data.records import load_records
    from ..evaluation.evaluate import check_model_labels, evaluate_model
    from ..inference import ood, predictions
    from ..inference.devices import resolve_device
    from ..inference.explain import check_explain_options
    from ..inference.runtimes import is_exported
    from ..plugins.tasks import SEGMENTATION

    if gate not in ("warn", "off"):
        fail(f"--gate {gate}: expected warn or off (evaluate reports flagged images; it does not withhold them)")
    target = resolve_device(device)
    chosen = load_task(task)
    subgroups = grouping(group_by, metadata)  # bad --group-by / --metadata fail before the model is loaded
    loaded, processor, _ = predictions.load_for_inference(model)
    loaded = loaded.to(target)  # evaluate_model runs batches on the model's device
    check_model_labels(loaded, chosen, model)
    output_dir = output_dir or (Path(model) / f"eval-{split}" if Path(model).is_dir() else Path(f"eval-{task}-{split}"))
    # Before the evaluation, not after minutes of it.
    check_explain_options(explain > 0, chosen.kind == SEGMENTATION, False, output_dir, runtime=is_exported(loaded))
    records = load_records(chosen, data, split)
    statistics = ood.load(model) if gate == "warn" and Path(model).is_dir() else None
    report = evaluate_model(loaded, processor, chosen, records, output_dir, split=split, source=data,
                            batch_size=batch_size, strict=strict, gate=gate == "warn", ood_statistics=statistics,
                            explain=explain, grouping=subgroups)
    typer.echo(json.dumps(report["metrics"], indent=2))
    for note in report.get("notes", []):  # what was not evaluated, and why
        typer.echo(f"note: {note}", err=True)
    gated = report.get("input_gate")
    if gated and gated["flagged"]:
        typer.echo(f"input gate: {gated['flagged']} of {gated['images']} image(s) flagged "
                   f"({', '.join(f'{c} {n}' for c, n in gated['codes'].items())}); see metrics.json", err=True)
    typer.echo(f"wrote {output_dir / 'metrics.json'}")
    if "explanations" in report:
        typer.echo(f"wrote {output_dir / report['explanations']['picture']}")


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
                       "kernels (top-1 agrees with fp32, see benchmarks/); other CPUs: the int8 runtime export of the "
                       "same weights registered by `spcxr export --format onnx|openvino --int8`, else dynamic int8 "
                       "(with the export command to run); CUDA: bf16. Prints the path taken and why on stderr.")] = False,
    device: DeviceOption = "auto",
    workers: Annotated[int | None, typer.Option(help="Image-decoding threads (default: CPUs, at most 4).")] = None,
    gate: Annotated[str, typer.Option(help="Input gate (spcxr_hub.inference.gate, .ood): warn (report findings and "
                                           "ood_score), refuse (withhold flagged predictions) or off.")] = "warn",
    explain: Annotated[bool, typer.Option("--explain", help="Write a saliency overlay PNG per image to --output-dir "
                                                            "(spcxr_hub.inference.explain).")] = False,
    explain_label: Annotated[str | None, typer.Option(help="The class to explain (default: the predicted one).")] = None,
    explain_method: Annotated[str, typer.Option(help="gradcam (SS-CXR and timm CNNs) or rollout (SS-CXR).")] = "gradcam",
):
    """Predict labels and scores (classification) or masks (segmentation) for images."""
    from dataclasses import asdict

    import torch

    from ..inference import predictions
    from ..inference.devices import model_device, resolve_device, to_device
    from ..inference.features import capture_pooled_features
    from ..inference.input_checks import InputChecks, flag_mark

    target = resolve_device(device)
    paths = predictions.image_files(files)
    loaded, processor, segmentation = predictions.load_for_inference(model, trust_remote_code, lean=True)
    if segmentation and output_dir is None:
        fail("--output-dir is required for a segmentation model (masks and overlays are written there)")
    from ..inference.explain import check_explain_options, explain_batch
    from ..inference.runtimes import is_exported

    check_explain_options(explain, segmentation, fast, output_dir, runtime=is_exported(loaded))
    fast_path = None
    if fast:
        from ..inference.deploy import choose_fast_path, optimize

        fast_path = choose_fast_path(target, loaded, source=model)
        for line in fast_path.lines:  # CPUs of one cloud instance type differ: say which path ran, and why
            typer.echo(line, err=True)
        if fast_path.export is not None:  # the registered int8 export of these weights runs instead
            from ..inference.runtimes import load_runtime

            loaded, processor, _ = load_runtime(fast_path.export, lean=True)
        loaded = optimize(loaded, target, batch_size=batch_size, path=fast_path)
    else:
        loaded = loaded.to(target)
    where = model_device(loaded)
    # A registered export that runs instead brings the OOD statistics fitted on its own features.
    checks = InputChecks(fast_path.export if fast_path and fast_path.export else model, gate, processor.max_pixels)
    results, skipped = [], []
    with torch.inference_mode():
        for batch in predictions.decoded_batches(paths, processor, batch_size, strict, skipped, workers):
            with capture_pooled_features(loaded) as features:
                output = loaded(pixel_values=to_device(torch.cat([pixels for _, pixels in batch]), where))
            logits = (output if isinstance(output, torch.Tensor) else output.logits).float().cpu()
            pooled = features[0] if features else [None] * len(batch)
            if explain:
                explained = explain_batch(loaded, torch.cat([p for _, p in batch]), logits, [p for p, _ in batch],
                                          processor, output_dir, label=explain_label, method=explain_method)
            for (path, _), item, feature in zip(batch, logits, pooled):
                if segmentation:
                    results.append(predictions.write_segmentation(path, item, processor, loaded.config.id2label, output_dir))
                else:
                    results.append(predictions.classification_result(path, item, loaded.config, top_k))
                checks.annotate(results[-1], path, feature)
                if explain:
                    results[-1].update(explained.pop(0))
                if fast_path is not None:
                    results[-1]["fast_path"] = asdict(fast_path)
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    else:
        for result in results:
            if result.get("refused"):
                typer.echo(f"{result['file']}\t{flag_mark(result)}")
            elif segmentation:
                fractions = ", ".join(f"{k} {v:.1%}" for k, v in result["fractions"].items())
                typer.echo(f"{result['file']}\t{fractions}\t{result['mask']}")
            else:
                labels = "  ".join(f"{p['label']} {p['score']:.3f}" for p in result["predictions"])
                typer.echo(f"{result['file']}\t{labels}" + (f"\t{flag_mark(result)}" if result.get("findings") else ""))
    if checks.notice and not as_json:  # after the results: --json carries it in each result's ood_note
        typer.echo(f"note: {checks.notice}", err=True)
    if skipped:
        typer.echo(f"skipped {len(skipped)} unreadable file(s):", err=True)
        for message in skipped:
            typer.echo(f"  {message}", err=True)
    if not results:  # nothing predicted is a failure, even if the (empty) output was well-formed
        fail(f"none of the {len(paths)} input file(s) could be read")
    if all(result.get("refused") for result in results):
        fail(f"--gate refuse: all {len(results)} image(s) were flagged; see their findings (--json), or --gate warn")


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
    from ..hub.saving import atomic_file
    from ..inference import predictions
    from ..inference.devices import model_device, resolve_device, to_device

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


