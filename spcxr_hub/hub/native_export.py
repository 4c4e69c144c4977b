"""Native exports (`export_native`, `spcxr export --native`): an SS-CXR backbone or classifier as a repository that
stock transformers loads as `ViTModel` / `ViTForImageClassification` with a stock `ViTImageProcessor`: no
`auto_map`, no code files, so Hub widgets (whose hosted inference never runs repository code), inference servers and
policies that forbid `trust_remote_code` can use it.

SS-CXR's encoder is a plain pre-norm ViT, so the export is a renaming of its weights, with two changes of form: the
fused qkv projection is split into ViT's q/k/v projections, and the one-channel patch embedding becomes a
three-channel one with a third of the weights on each channel (pipelines convert every PIL image to RGB, and a grey
film given as RGB then gives exactly the features of the grey film). The processor's mean 0.5 / std 0.25 on each
channel is SS-CXR's (x − 0.5) / 0.25.

What the stock processor cannot do is stated on the card and on the terminal: it stretches non-square films where
SS-CXR letterboxes them, and it decodes what Pillow opens as 8 bits (no DICOM, no 16-bit depth). Every export ends
with an equivalence check, SS-CXR through `SpcxrImageProcessor` against the written repository through
`pipeline(...)` (classifiers) or `ViTModel` + `ViTImageProcessor` (backbones), whose numbers go into the card.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .card_facts import describe_source, model_kind, read_json
from .publishing import LOG_FILES, PLOT_SUFFIX, PublishError, check_export_paths
from .saving import atomic_directory

# The one limitation line (terminal and card): what SpcxrImageProcessor does and the stock ViTImageProcessor cannot.
PROCESSOR_LIMITS = ("the native ViTImageProcessor stretches non-square films to the square (SS-CXR letterboxes "
                    "them) and reads images as Pillow opens them in 8 bits (no DICOM, no 16-bit depth); decode such "
                    "files with spcxr_hub's load_image first, or use the remote-code export")
MIN_AGREEMENT = 0.99  # top-1 agreement (classifiers) or CLS-feature cosine (backbones) below this refuses the export
CHECK_IMAGES = 32  # synthetic phantoms for the equivalence check when no held-out images are given
MAX_SPLIT_IMAGES = 256  # of the evaluation split: enough for a 99% agreement to mean something, quick on a CPU
NATIVE_CLASSES = {"SpcxrModel": "backbone", "SpcxrForImageClassification": "classification"}


class NativeExportError(PublishError):
    """A model that has no native transformers layout, or a native copy that does not agree with it."""


@dataclass
class Equivalence:
    """SS-CXR vs the native repository on `images` held-out images. Classifiers: the largest absolute logit
    difference and the fraction of images with the same top class. Backbones: the largest absolute difference of
    `last_hidden_state` and the smallest cosine of the CLS features (in `agreement`)."""

    kind: str
    images: int
    source: str
    max_difference: float
    agreement: float

    def line(self) -> str:
        if self.kind == "classification":
            return (f"equivalence on {self.images} {self.source}: max |logit difference| {self.max_difference:.2e}, "
                    f"top-1 agreement {100 * self.agreement:.1f}%")
        return (f"equivalence on {self.images} {self.source}: max |feature difference| {self.max_difference:.2e}, "
                f"min CLS cosine {self.agreement:.6f}")


def check_native(model_dir: Path) -> tuple[dict, str]:
    """(config, kind) of a model that has a native layout; anything else fails with one line saying why."""
    config = read_json(model_dir / "config.json", "config.json")
    if config.get("model_type") != "spcxr":
        raise NativeExportError(
            f"{model_dir / 'config.json'}: model_type {config.get('model_type')!r} is not an SS-CXR ViT; only SS-CXR "
            "backbones and classifiers have a native transformers layout (`spcxr export` without --native publishes "
            "this model with its code)")
    kind = model_kind(config, model_dir)
    name = (config.get("architectures") or ["?"])[0]
    if kind == "segmentation":
        raise NativeExportError(
            f"{model_dir}: {name} cannot be exported natively: transformers has no native UNETR; the remote-code "
            "export (`spcxr export` without --native) is the way")
    if name not in NATIVE_CLASSES:
        raise NativeExportError(f"{model_dir / 'config.json'}: architecture {name} has no native transformers "
                                "layout (only SpcxrModel and SpcxrForImageClassification do)")
    if config.get("classifier_pooling", "cls") != "cls":
        raise NativeExportError(
            f"{model_dir / 'config.json'}: classifier_pooling {config['classifier_pooling']!r} cannot be native: "
            "transformers' ViT pools the CLS token; use the remote-code export (`spcxr export` without --native)")
    if config.get("num_channels", 1) not in (1, 3):
        raise NativeExportError(f"{model_dir / 'config.json'}: num_channels {config['num_channels']} cannot be "
                                "native (pipelines give 3-channel RGB; SS-CXR models have 1)")
    return config, kind


def vit_config(spcxr_config, kind: str):
    """The ViTConfig of the same network. The backbone's pooler is an identity (dense = I, linear activation), so
    `AutoModel` builds ViTModel with every weight loaded and `pooler_output` is SS-CXR's: the normalised CLS token."""
    from transformers import ViTConfig

    c = spcxr_config
    fields = dict(hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
                  num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
                  hidden_act=c.hidden_act, hidden_dropout_prob=c.hidden_dropout_prob,
                  attention_probs_dropout_prob=c.attention_probs_dropout_prob,
                  initializer_range=c.initializer_range, layer_norm_eps=c.layer_norm_eps, image_size=c.image_size,
                  patch_size=c.patch_size, num_channels=3, qkv_bias=c.qkv_bias, encoder_stride=c.patch_size,
                  pooler_act="linear")
    if kind == "classification":
        id2label = {int(k): str(v) for k, v in c.id2label.items()}
        # label2id from id2label: SS-CXR configs may carry only id2label, the pipeline maps scores by it.
        fields.update(id2label=id2label, label2id={v: k for k, v in id2label.items()}, problem_type=c.problem_type)
        # The decisions fitted on validation travel as plain config fields (spcxr_hub.inference.decisions reads them).
        fields.update({key: getattr(c, key) for key in ("operating_points", "prediction_sets")
                       if getattr(c, key, None) is not None})
    return ViTConfig(**fields)


def vit_state_dict(state: dict, kind: str, num_layers: int, temperature=None) -> dict:
    """SS-CXR state dict → ViT's names in transformers (`models/vit/modeling_vit.py`): `layers.N.attention.qkv` →
    `q_proj`/`k_proj`/`v_proj`, `proj` → `o_proj`, `norm1`/`norm2` → `layernorm_before`/`layernorm_after`; the MLP,
    embeddings and final LayerNorm keep their names. A 1-channel patch kernel is spread over RGB (weight / 3 each).
    A classifier's `temperature` (float or one per label) is folded into its weight and bias (W/T, b/T): ViT's
    forward has no temperature, and the folded layer gives the same calibrated logits."""
    import torch

    prefix, target = ("spcxr.", "vit.") if kind == "classification" else ("", "")
    out = {}
    for name in ("embeddings.cls_token", "embeddings.position_embeddings",
                 "embeddings.patch_embeddings.projection.bias", "layernorm.weight", "layernorm.bias"):
        out[target + name] = state[prefix + name]
    patch = state[prefix + "embeddings.patch_embeddings.projection.weight"]
    if patch.shape[1] == 1:
        patch = patch.expand(-1, 3, -1, -1) / 3
    out[target + "embeddings.patch_embeddings.projection.weight"] = patch.contiguous()
    for n in range(num_layers):
        source, layer = f"{prefix}layers.{n}.", f"{target}layers.{n}."
        for kind_of in ("weight", "bias"):
            fused = state.get(f"{source}attention.qkv.{kind_of}")
            if fused is not None:  # qkv_bias=False has no fused bias
                for part, chunk in zip(("q_proj", "k_proj", "v_proj"), torch.chunk(fused, 3, dim=0)):
                    out[f"{layer}attention.{part}.{kind_of}"] = chunk.contiguous()
            out[f"{layer}attention.o_proj.{kind_of}"] = state[f"{source}attention.proj.{kind_of}"]
            out[f"{layer}layernorm_before.{kind_of}"] = state[f"{source}norm1.{kind_of}"]
            out[f"{layer}layernorm_after.{kind_of}"] = state[f"{source}norm2.{kind_of}"]
            out[f"{layer}mlp.fc1.{kind_of}"] = state[f"{source}mlp.fc1.{kind_of}"]
            out[f"{layer}mlp.fc2.{kind_of}"] = state[f"{source}mlp.fc2.{kind_of}"]
    if kind == "classification":
        weight, bias = state["classifier.weight"], state["classifier.bias"]
        if temperature is not None:
            scale = torch.as_tensor(temperature, dtype=weight.dtype).reshape(-1)  # (1,) or one per label
            weight, bias = weight / scale[:, None], bias / scale
        out["classifier.weight"], out["classifier.bias"] = weight.contiguous(), bias.contiguous()
    else:
        width = out["layernorm.weight"].shape[0]
        out["pooler.dense.weight"] = torch.eye(width, dtype=patch.dtype)
        out["pooler.dense.bias"] = torch.zeros(width, dtype=patch.dtype)
    return out


def native_model(model, kind: str):
    """The transformers ViT holding `model`'s weights, loaded strictly: a name that does not map is an error here,
    not a randomly initialised weight in the published repository."""
    from transformers import ViTForImageClassification, ViTModel

    config = vit_config(model.config, kind)
    native = ViTForImageClassification(config) if kind == "classification" else ViTModel(config)
    temperature = getattr(model.config, "temperature", None) if kind == "classification" else None
    native.load_state_dict(vit_state_dict(model.state_dict(), kind, model.config.num_hidden_layers, temperature),
                           strict=True)
    return native.eval()


def source_processor(model_dir: Path, size: int):
    """The SpcxrImageProcessor the model was saved with (its size, mean and std), SS-CXR's defaults without one."""
    from ..models.spcxr.image_processing_spcxr import SpcxrImageProcessor

    path = model_dir / "preprocessor_config.json"
    saved = read_json(path, "preprocessor_config.json") if path.is_file() else {}
    if saved.get("image_processor_type") == "SpcxrImageProcessor":
        return SpcxrImageProcessor.from_pretrained(model_dir)
    return SpcxrImageProcessor(size={"height": size, "width": size})


def native_processor(reference):
    """The stock ViTImageProcessor closest to `reference`: its size (stretched to), bicubic resampling, and its
    one-channel mean and std on each of the three channels."""
    from transformers import ViTImageProcessor
    from transformers.image_utils import PILImageResampling

    return ViTImageProcessor(do_resize=True, size=dict(reference.size), resample=PILImageResampling.BICUBIC,
                             do_rescale=True, rescale_factor=1 / 255, do_normalize=reference.do_normalize,
                             image_mean=[reference.image_mean[0]] * 3, image_std=[reference.image_std[0]] * 3)


def check_images_for(size: int, images: Sequence | None, model_dir: Path) -> tuple[list, str]:
    """(held-out images, how the card names them) from a folder or a sequence of paths or arrays. Without `images`:
    the split the model was evaluated on when its training log names a local folder (what `spcxr finetune` wrote),
    else CHECK_IMAGES square phantoms at the model's size (half with consolidation), from seeds no training run of
    this project draws."""
    if isinstance(images, (str, os.PathLike)):  # a folder (`--check-images`), e.g. the task's test images
        from ..models.spcxr.imaging import list_images

        folder, images = Path(images), list_images(images) if Path(images).is_dir() else None
        if images is None:
            raise NativeExportError(f"--check-images {folder}: not a folder of images")
        if not images:
            raise NativeExportError(f"--check-images {folder}: no images in the folder")
    if images:
        return list(images), "held-out images"
    evaluated = evaluation_split(model_dir)
    if evaluated is not None:
        return evaluated
    from ..data import synthetic

    phantoms = [synthetic.generate(900_000 + i, size, ("pneumonia",) if i % 2 else ()).image
                for i in range(CHECK_IMAGES)]
    return phantoms, f"synthetic phantoms ({size}×{size}, spcxr_hub.data.synthetic)"


def evaluation_split(model_dir: Path) -> tuple[list, str] | None:
    """Up to MAX_SPLIT_IMAGES images of the split `spcxr finetune` evaluated the model on (its training log's task,
    `--data` and `eval_split`), where that is a local folder still in its layout; None otherwise."""
    log = model_dir / "training_log.json"
    if not log.is_file():
        return None
    options = read_json(log, "the training log").get("options") or {}
    task_name, split = options.get("task"), options.get("eval_split")
    data = options.get("eval_data") or options.get("data")
    if not (task_name and data and split and Path(data).is_dir()):
        return None
    from ..data.records import load_records
    from ..errors import SpcxrError
    from ..plugins.registry import get_task

    try:
        records = load_records(get_task(task_name), data, split)
    except SpcxrError:  # the folder moved on since training: fall back to phantoms rather than fail the export
        return None
    paths = [record["image"] for record in records][:MAX_SPLIT_IMAGES]
    return (paths, f"held-out images (the {task_name} {split} split, {describe_source(data)})") if paths else None


def as_8bit_grey(item):
    """A path or array → the 8-bit grey PIL image a pipeline's user hands in (both sides then see the same pixels)."""
    from PIL import Image

    from ..models.spcxr.imaging import load_image

    return Image.fromarray(np.round(np.clip(load_image(item), 0, 1) * 255).astype(np.uint8))


def measure_equivalence(model, reference_processor, repo_dir: Path, kind: str, images: list,
                        source: str) -> Equivalence:
    """SS-CXR through SpcxrImageProcessor vs the repository as a stock transformers user loads it, in batches (a
    test split of full-size films does not fit in memory at once)."""
    import torch
    from transformers import ViTImageProcessor, ViTModel, pipeline

    if kind == "classification":
        classify = pipeline("image-classification", model=str(repo_dir))
        label2id = classify.model.config.label2id
    else:
        vit, processor = ViTModel.from_pretrained(repo_dir).eval(), ViTImageProcessor.from_pretrained(repo_dir)
    difference, agreement = 0.0, []
    for start in range(0, len(images), CHECK_IMAGES):
        batch = [as_8bit_grey(item) for item in images[start : start + CHECK_IMAGES]]
        with torch.no_grad():
            reference = model(**reference_processor(batch))
            if kind == "classification":
                expected = reference.logits.float()
                native = torch.zeros_like(expected)
                # function_to_apply="none": the pipeline's scores are the raw logits
                for row, predictions in zip(native, classify(batch, top_k=len(label2id), function_to_apply="none")):
                    for p in predictions:
                        row[label2id[p["label"]]] = p["score"]
                agreement += (native.argmax(-1) == expected.argmax(-1)).float().tolist()
            else:
                expected = reference.last_hidden_state.float()
                inputs = processor([image.convert("RGB") for image in batch], return_tensors="pt")
                native = vit(**inputs).last_hidden_state
                agreement += torch.nn.functional.cosine_similarity(native[:, 0], expected[:, 0], dim=-1).tolist()
        difference = max(difference, float((native - expected).abs().max()))
    score = sum(agreement) / len(agreement) if kind == "classification" else min(agreement)
    return Equivalence(kind, len(images), source, difference, score)


@contextmanager
def quiet():
    """No loading and writing bars from transformers on the terminal of a command that loads four models."""
    from transformers.utils import logging

    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            logging.enable_progress_bar()


def export_native(model_dir: str | os.PathLike, repo_dir: str | os.PathLike, *, repo_id: str | None = None,
                  overwrite: bool = False, check_images: Sequence | None = None, allow_disagreement: bool = False,
                  example_images=None, synthetic: bool | None = None, revision: str | None = None,
                  warn=None) -> tuple[Path, Equivalence]:
    """Writes a native transformers repository for the SS-CXR backbone or classifier in `model_dir` to `repo_dir`,
    all or nothing, and returns (repo_dir, the equivalence measured on it).

    `check_images` (a folder, or paths or arrays; default: the split the model was evaluated on, else synthetic
    phantoms) are the held-out images of the
    equivalence check; top-1 agreement (backbones: CLS cosine) below 99% refuses the export unless
    `allow_disagreement`, which calls `warn(line)` instead. `warn` also receives the processor's limitation line.
    The card (README.md, rendered from `metrics.json` and the training log like every card) states the numbers in
    its first lines."""
    import spcxr_hub  # noqa: F401  (registers the SS-CXR classes for loading the source model)
    from transformers import AutoModel, AutoModelForImageClassification

    from .cards import build_card, write_bundle

    model_dir, repo_dir = check_export_paths(model_dir, repo_dir, repo_id)
    config, kind = check_native(model_dir)
    images, source = check_images_for(config.get("image_size", 224), check_images, model_dir)
    loader = AutoModelForImageClassification if kind == "classification" else AutoModel
    with quiet():
        model = loader.from_pretrained(model_dir).eval()
    with atomic_directory(repo_dir, overwrite=overwrite) as staging, quiet():
        native_model(model, kind).save_pretrained(staging)
        reference = source_processor(model_dir, model.config.image_size)
        native_processor(reference).save_pretrained(staging)
        for path in sorted(model_dir.iterdir()):
            if path.is_file() and (path.name in LOG_FILES or path.suffix == PLOT_SUFFIX):
                shutil.copyfile(path, staging / path.name)
        equivalence = measure_equivalence(model, reference, staging, kind, images, source)
        if equivalence.agreement < MIN_AGREEMENT:
            message = (f"{model_dir}: the native export disagrees with the SS-CXR model ({equivalence.line()}, "
                       f"below {100 * MIN_AGREEMENT:.0f}%)")
            if not allow_disagreement:
                raise NativeExportError(message + "; --allow-disagreement publishes it anyway")
            if warn is not None:
                warn("warning: " + message)
        if warn is not None:
            warn("note: " + PROCESSOR_LIMITS)
        bundle = build_card(staging, repo_id=repo_id, example_images=example_images, synthetic=synthetic,
                            revision=revision, native={"line": equivalence.line(), "limits": PROCESSOR_LIMITS,
                                                       "equivalence": equivalence})
        write_bundle(bundle, staging)
        leftovers = [p.name for p in staging.iterdir() if p.suffix == ".py"]
        auto_map = "auto_map" in json.loads((staging / "config.json").read_text())
        if leftovers or auto_map:  # the promise of this layout; a transformers change must not break it silently
            raise NativeExportError(f"{staging}: native export would carry code ({leftovers or 'auto_map'})")
    return repo_dir, equivalence
