"""From image files to predictions, for `spcxr predict`, `evaluate` and `embed`: loading a model for inference,
finding the images, decoding them in batches ahead of the model, and turning logits into results.

Heavy libraries are imported inside the functions, so that `spcxr predict` on a classifier starts without
transformers' model machinery (see `deploy.load_lean_classifier`).
"""

import os
from pathlib import Path

from ..errors import InputNotFoundError, UsageError


def load_for_inference(model: str, trust_remote_code: bool = False, *, lean: bool = False):
    """Model (head chosen from its config) and image processor from a directory or Hub id.

    With `lean`, a local SS-CXR classifier directory loads through `spcxr_hub.inference.deploy` without importing transformers'
    model machinery (same outputs, about half the start-up time); a runtime export (`spcxr export --format`) loads
    on its runtime (`inference/runtimes.py`); anything else loads through the Auto classes."""
    from .runtimes import is_runtime_export

    if is_runtime_export(model):
        from .runtimes import load_runtime

        return load_runtime(model, lean=lean)
    if lean and not trust_remote_code and Path(model).is_dir():
        from .deploy import LeanProcessor, load_lean_classifier

        classifier = load_lean_classifier(model)
        processor = LeanProcessor.from_directory(model) if classifier is not None else None
        if processor is not None:
            return classifier, processor, False
    import spcxr_hub  # noqa: F401  (registers the Auto classes)
    from transformers import (AutoConfig, AutoImageProcessor, AutoModelForImageClassification,
                              AutoModelForSemanticSegmentation)

    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    segmentation = any(a.endswith("ForSemanticSegmentation") for a in config.architectures or [])
    auto = AutoModelForSemanticSegmentation if segmentation else AutoModelForImageClassification
    loaded = auto.from_pretrained(model, trust_remote_code=trust_remote_code).eval()
    processor = AutoImageProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
    return loaded, processor, segmentation


def image_files(files: list[Path]) -> list[Path]:
    """The images to predict on: files as given, folders searched recursively."""
    from ..models.spcxr.imaging import list_images

    expanded = []
    for path in files:
        if path.is_dir():
            expanded.extend(list_images(path))
        elif path.exists():
            expanded.append(path)
        else:
            raise InputNotFoundError(f"{path}: no such file or folder")
    if not expanded:
        raise UsageError("no image files given (folders are searched recursively for PNG, JPEG, TIFF, BMP and DICOM)")
    return expanded


def decoded_batches(paths: list[Path], processor, batch_size: int, strict: bool, skipped: list[str],
                    workers: int | None = None):
    """Yields lists of up to `batch_size` (path, pixel_values (1, C, H, W)) in the order of `paths`, skipping (or with
    `strict`, raising on) undecodable files. Decoding runs on `workers` threads (default: one per CPU, at most 4) up
    to two batches ahead of the consumer, so it overlaps with the model's forward pass: Pillow's decoders, zlib and
    numpy release the GIL."""
    import collections
    import concurrent.futures

    import torch

    from ..models.spcxr.imaging import ImageDecodeError

    def decode(path: Path):
        try:
            if hasattr(processor, "preprocess"):  # a transformers image processor
                return processor(str(path), return_tensors="np")["pixel_values"][0], None
            return processor(str(path)), None  # deploy.LeanProcessor
        except ImageDecodeError as error:
            return None, error

    workers = workers or min(4, os.cpu_count() or 1)
    pool = concurrent.futures.ThreadPoolExecutor(max(1, workers), thread_name_prefix="spcxr-decode")
    queued, remaining = collections.deque(), iter(paths)

    def top_up():
        while len(queued) < 2 * batch_size:
            path = next(remaining, None)
            if path is None:
                return
            queued.append((path, pool.submit(decode, path)))

    try:
        batch = []
        top_up()
        while queued:
            path, future = queued.popleft()
            top_up()
            pixels, error = future.result()
            if error is not None:
                if strict:
                    raise error
                skipped.append(str(error))
                continue
            batch.append((path, torch.from_numpy(pixels)[None]))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def classification_result(path: Path, logits, config, top_k: int) -> dict:
    import torch

    from .decisions import decisions

    multi = config.problem_type == "multi_label_classification"
    scores = torch.sigmoid(logits) if multi else torch.softmax(logits, dim=-1)
    order = scores.argsort(descending=True)[:top_k]
    return {"file": str(path), "predictions": [
        {"label": config.id2label[int(i)], "score": round(float(scores[i]), 6)} for i in order],
        **decisions(scores.numpy(), config)}  # positive at the stored operating point, the conformal set


def write_segmentation(path: Path, logits, processor, id2label: dict, output_dir: Path) -> dict:
    """Mask PNG (class ids × 255 / (K − 1)) and an overlay PNG at the film's original size."""
    import numpy as np
    from PIL import Image

    from ..evaluation.evaluate import original_size_probabilities
    from ..hub.saving import atomic_file
    from ..models.spcxr.imaging import load_image

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
