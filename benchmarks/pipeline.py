"""P3: `spcxr predict`'s loop over a folder of 1024² films against the model alone on the same batch size.

For each format (8-bit PNG, 16-bit PNG, DICOM), timed interleaved with the model-only forward passes:

* `predict loop`: what `spcxr predict` runs once the model is loaded — `spcxr_hub.inference.predictions.decoded_batches` (decoding and
  preprocessing on a thread pool, prefetching up to two batches) → forward → `predictions.classification_result`;
* `sequential` (the loop before the overlap was added): decode, then forward, in one thread;
* `model only`: the forward passes on pre-made batches of the same size and count.

The model is a ViT-S classifier as `spcxr predict` loads it (the lean loader, fp32). Per-image decoding cost (one
thread) is measured too: with every core busy in the forward pass, decoding can only hide in spare cycles, so
`compute / (compute + decode)` in core-seconds bounds the ratio on a machine with few cores.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .common import Row, Settings, interleaved, median

FORMATS = {"png8": "8-bit PNG", "png16": "16-bit PNG", "dicom": "DICOM"}


def write_films(root: Path, count: int, size: int, distinct: int = 16) -> dict[str, list[Path]]:
    from spcxr_hub.data import synthetic

    films = {name: [] for name in FORMATS}
    images = [synthetic.generate(seed, size, ("pneumonia",) if seed % 2 else ()).image for seed in range(distinct)]
    for i in range(count):
        image = images[i % distinct]
        films["png8"].append(synthetic.write_png8(root / "png8" / f"{i:04d}.png", image))
        films["png16"].append(synthetic.write_png16(root / "png16" / f"{i:04d}.png", image))
        films["dicom"].append(synthetic.write_dicom(root / "dicom" / f"{i:04d}.dcm", image))
    return films


def save_classifier(directory: Path, settings: Settings) -> None:
    import torch

    from spcxr_hub import SpcxrConfig, SpcxrForImageClassification, SpcxrImageProcessor
    from spcxr_hub.hub.saving import save_model_directory

    from .inference import vit_sizes

    torch.manual_seed(0)
    config = SpcxrConfig(**vit_sizes(settings), id2label={0: "normal", 1: "pneumonia"})
    size = settings.image_size
    save_model_directory(directory, SpcxrForImageClassification(config).eval(),
                         SpcxrImageProcessor(size={"height": size, "width": size}))


def measure(settings: Settings) -> list[Row]:
    import torch

    from spcxr_hub.inference import predictions
    from spcxr_hub.inference.deploy import choose_cpu_path, optimize_for_cpu

    torch.set_num_threads(settings.threads)
    fast_name = choose_cpu_path().name  # the fastest torch path here (what --fast runs without a registered export)
    count = 2 * settings.batch_size
    film_size = 96 if settings.quick else 1024
    with tempfile.TemporaryDirectory(prefix="spcxr-bench-p3-") as folder:
        root = Path(folder)
        films = write_films(root, count, film_size, distinct=4 if settings.quick else 16)
        save_classifier(root / "model", settings)
        model, processor, _ = predictions.load_for_inference(str(root / "model"), lean=True)
        fast = optimize_for_cpu(predictions.load_for_inference(str(root / "model"), lean=True)[0],
                                batch_size=settings.batch_size)
        batches = [torch.randn(settings.batch_size, 1, settings.image_size, settings.image_size)
                   for _ in range(count // settings.batch_size)]

        def predict_loop(paths, net):
            skipped, results = [], []
            for batch in predictions.decoded_batches(paths, processor, settings.batch_size, False, skipped):
                logits = net(pixel_values=torch.cat([pixels for _, pixels in batch]))
                results += [predictions.classification_result(path, item, net.config, 3) for (path, _), item in zip(batch, logits)]
            assert len(results) == len(paths), skipped

        def sequential_loop(paths, net):
            batch = []
            for path in paths:
                batch.append(torch.from_numpy(processor(str(path)))[None])
                if len(batch) == settings.batch_size:
                    net(pixel_values=torch.cat(batch))
                    batch = []

        def model_only(net):
            for pixels in batches:
                net(pixel_values=pixels)

        decode_ms = {}
        for name, paths in films.items():
            start = time.perf_counter()
            for path in paths[: min(len(paths), 16)]:
                processor(str(path))
            decode_ms[name] = 1000 * (time.perf_counter() - start) / min(len(paths), 16)

        candidates = {"model_only": lambda: model_only(model), "model_only_fast": lambda: model_only(fast)}
        for name, paths in films.items():
            candidates[f"{name}_predict"] = lambda paths=paths: predict_loop(paths, model)
            candidates[f"{name}_sequential"] = lambda paths=paths: sequential_loop(paths, model)
            candidates[f"{name}_predict_fast"] = lambda paths=paths: predict_loop(paths, fast)
        with torch.inference_mode():
            times = interleaved(candidates, warmup=1, repeats=max(2, settings.repeats - 1))
    rate = {name: count / median(values) for name, values in times.items()}
    model_core_ms = 1000 * settings.threads / rate["model_only"]
    rows = []
    for name, label in FORMATS.items():
        bound = model_core_ms / (model_core_ms + decode_ms[name])
        rows.append(Row(
            "P3", f"predict over {count} {film_size}² {label} files vs model only (batch {settings.batch_size}, fp32)",
            "predict loop (threaded decode)", rate[f"{name}_predict"], "model only", rate["model_only"], "img/s",
            ">= 0.9",
            notes=(f"before (sequential decode): {rate[f'{name}_sequential'] / rate['model_only']:.2f}; decoding "
                   f"{decode_ms[name]:.1f} ms/image on one core vs {model_core_ms:.0f} core-ms/image of compute: "
                   f"ceiling {bound:.2f} on {settings.threads} cores"),
            details={"sequential_img_s": rate[f"{name}_sequential"], "decode_ms_per_image": decode_ms[name],
                     "model_core_ms_per_image": model_core_ms, "ceiling": bound},
        ))
        rows.append(Row(
            "P3", f"predict --fast over {count} {film_size}² {label} files vs model only (--fast)",
            f"predict loop --fast ({fast_name})", rate[f"{name}_predict_fast"], "model only --fast",
            rate["model_only_fast"], "img/s", ""))
    rows[0].details["seconds"] = times
    return rows
