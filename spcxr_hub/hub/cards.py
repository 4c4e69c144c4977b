"""Model cards: `README.md` of a model directory, rendered from the Jinja templates in `card_templates/` with
`huggingface_hub.ModelCard`.

Everything a card states is read from the directory: `config.json` (the kind of model, its size and labels),
`metrics.json` (the evaluation report `spcxr finetune` / `spcxr evaluate` write; its numbers become the
`model-index`, never typed by hand), `training_log.json` (fine-tuning: initialisation, data, recipe) or the
pretraining summary (`trainer_state.json` in the directory or beside it, as `pretrain.py` leaves it). A directory
without `metrics.json` gets a card that says "not evaluated" and has no `model-index`. A classifier's card also has
the trust sections of its `metrics.json` (calibration, operating points, prediction sets, subgroups, input gate;
`card_trust.py`), which are body text only: the `model-index` keeps the headline metrics.

Synthetic data is stated in the first lines of the card, from `synthetic=` or the `synthetic_data` flag of the
training log (pretraining also records `--data synthetic`). The widget's example images are written beside the card
(`examples/chest-N.png`) and their `output` is what the model's pipeline returns for them.

Entry points: `render_card(model_dir) -> ModelCard`, `write_card(model_dir) -> Path` and `spcxr card MODEL_DIR`.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .card_facts import (METRICS, CardError, declared_repo_id, describe_source, format_value, is_hub_id,
                         local_synthetic, lookup_task, model_kind, parameter_count, read_json, scalar_metrics,
                         synthetic_flag, training_summary_for, undefined_metrics)
from .card_trust import trust_context
from .saving import atomic_directory, atomic_file

TEMPLATE_DIR = Path(__file__).resolve().parent / "card_templates"  # package data: installed with the wheel
TEMPLATES = {"backbone": "backbone.md.j2", "classification": "classification.md.j2",
             "segmentation": "segmentation.md.j2"}
PIPELINE_TAGS = {"backbone": "image-feature-extraction", "classification": "image-classification",
                 "segmentation": "image-segmentation"}
BASE_TAGS = ("chest-x-ray", "medical-imaging", "self-supervised")
LICENSE = "apache-2.0"
EXAMPLES_DIR = "examples"
UNSET = object()

SPCXR_BIBTEX = """@article{anwar2022spcxr,
  title   = {{SPCXR}: Self-supervised Pretraining using Chest {X}-rays Towards a Domain Specific Foundation Model},
  author  = {Anwar, Syed Muhammad and Parida, Abhijeet and Atito, Sara and Awais, Muhammad and Nino, Gustavo and
             Kittler, Josef and Linguraru, Marius George},
  journal = {arXiv preprint arXiv:2211.12944},
  year    = {2022}
}"""

GMML_BIBTEX = """@article{atito2022gmml,
  title   = {{GMML} is All you Need},
  author  = {Atito, Sara and Awais, Muhammad and Kittler, Josef},
  journal = {arXiv preprint arXiv:2205.14986},
  year    = {2022}
}"""

VIT_S = {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536,
         "patch_size": 16}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@dataclass
class CardBundle:
    """A rendered card and the files it refers to (paths relative to the repository root → bytes)."""

    card: "object"
    files: dict[str, bytes] = field(default_factory=dict)
    kind: str = ""
    evaluated: bool = False


# ------------------------------------------------------------------------------------------------- examples


def default_example_images() -> list[tuple[np.ndarray, str]]:
    """Two phantom films from `spcxr_hub.data.synthetic`: publishing patient images in a card is never needed."""
    from ..data import synthetic

    return [(synthetic.generate(101, 256).image, "Synthetic phantom (no finding)"),
            (synthetic.generate(102, 256, ("pneumonia",)).image, "Synthetic phantom (lobar consolidation)")]


def collect_examples(model_dir: Path, example_images) -> list[tuple[np.ndarray, str]]:
    from ..models.spcxr.imaging import load_image

    if example_images is None:
        existing = sorted((model_dir / EXAMPLES_DIR).glob("chest-*.png"), key=lambda p: natural_key(p.name))
        if existing:  # a card rendered again (an exported repository pushed) keeps the examples it had
            titles = existing_titles(model_dir)
            return [(load_image(str(path)), titles.get(path.name, f"Example {i}"))
                    for i, path in enumerate(existing, 1)]
        return default_example_images()
    examples = []
    for i, item in enumerate(example_images, 1):
        if isinstance(item, np.ndarray):
            examples.append((np.clip(item.astype(np.float32), 0, 1), f"Example {i}"))
        else:
            path = Path(item)
            if not path.is_file():
                raise CardError(f"{path}: example image not found")
            examples.append((load_image(str(path)), path.stem))
    return examples


def existing_titles(model_dir: Path) -> dict[str, str]:
    """File name → example_title, from the widget of the card already in the directory."""
    readme = model_dir / "README.md"
    if not readme.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        widget = getattr(ModelCard(readme.read_text(), ignore_metadata_errors=True).data, "widget", None) or []
    except Exception:
        return {}
    return {str(entry.get("src", "")).rsplit("/", 1)[-1]: str(entry["example_title"])
            for entry in widget if isinstance(entry, dict) and entry.get("example_title")}


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def load_pipeline(model_dir: Path, kind: str, config: dict):
    from transformers import pipeline
    from transformers.utils import logging

    import spcxr_hub  # noqa: F401  (registers the SS-CXR classes, so no remote code runs for them)

    task = "image-classification" if kind == "classification" else "image-segmentation"
    remote = config.get("model_type") != "spcxr" and bool(config.get("auto_map"))
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    # The image-segmentation pipeline checks static name lists, not registered classes, and reports SS-CXR as
    # "not supported" at error level although it runs it: noise for a card, as are loading bars.
    logging.set_verbosity(logging.CRITICAL)
    logging.disable_progress_bar()
    try:
        return pipeline(task, model=str(model_dir), trust_remote_code=remote)
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def run_examples(model_dir: Path, kind: str, config: dict, examples, url_base: str) -> tuple[list, dict, list]:
    """(widget entries, files to write, rows for the card body). The widget `output` is the pipeline's answer for
    the PNG file exactly as it is written into the repository."""
    files, widget, rows = {}, [], []
    run = load_pipeline(model_dir, kind, config) if kind != "backbone" else None
    id2label = dict(enumerate(config_labels(config)))
    label2id = {v: k for k, v in id2label.items()}
    with tempfile.TemporaryDirectory(prefix="spcxr-card-") as scratch:
        for i, (image, title) in enumerate(examples, 1):
            name = f"{EXAMPLES_DIR}/chest-{i}.png"
            files[name] = png_bytes(image)
            local = Path(scratch) / f"chest-{i}.png"
            local.write_bytes(files[name])
            entry = {"src": url_base + name, "example_title": title}
            row = {"file": name, "title": title}
            if kind == "classification":
                top_k = min(5, len(id2label)) or None
                predictions = run(str(local), top_k=top_k)
                entry["output"] = [{"label": p["label"], "score": round(float(p["score"]), 4)} for p in predictions]
                row["predictions"] = entry["output"]
            elif kind == "segmentation":
                classes = None
                for result in run(str(local)):
                    mask = np.asarray(result["mask"]) > 0
                    if classes is None:
                        classes = np.zeros(mask.shape, dtype=np.int64)
                    classes[mask] = label2id.get(result["label"], 0)
                scale = 255 // max(1, len(id2label) - 1)
                mask_name = f"{EXAMPLES_DIR}/chest-{i}-mask.png"
                from PIL import Image

                buffer = io.BytesIO()
                Image.fromarray((classes * scale).astype(np.uint8)).save(buffer, format="PNG")
                files[mask_name] = buffer.getvalue()
                entry["output"] = {"url": url_base + mask_name}
                row["mask"] = mask_name
                row["fractions"] = [(id2label[k], float((classes == k).mean())) for k in sorted(id2label)]
            widget.append(entry)
            rows.append(row)
    return widget, files, rows


# ------------------------------------------------------------------------------------------------- the card


def config_labels(config: dict) -> list[str]:
    """Class names in index order: `id2label`, or `label_names` (timm wrappers)."""
    if config.get("id2label"):
        return [v for _, v in sorted((int(k), v) for k, v in config["id2label"].items())]
    return [str(name) for name in config.get("label_names") or []]


def architecture_text(config: dict, kind: str) -> str:
    if config.get("model_type") == "timm_wrapper":
        return f"timm `{config.get('architecture')}` with one input channel, {config.get('image_size')}×" \
               f"{config.get('image_size')} input"
    if config.get("model_type") not in ("spcxr", "vit"):  # vit: a native export of SS-CXR (native_export.py)
        return f"model type `{config.get('model_type')}`"
    shape = {k: config.get(k) for k in VIT_S}
    size = config.get("image_size")
    channels = config.get("num_channels", 1)
    channels = f"{channels} channel" + ("s (the grey film repeated)" if channels == 3 else "")
    if shape == VIT_S:
        text = f"ViT-S/16 (width 384, 12 blocks, 6 heads, MLP 1536), {size}×{size} input, {channels}"
    else:
        text = (f"a reduced ViT (width {shape['hidden_size']}, {shape['num_hidden_layers']} blocks, "
                f"{shape['num_attention_heads']} heads, MLP {shape['intermediate_size']}, "
                f"patch {shape['patch_size']}), "
                f"{size}×{size} input, {channels} — not the ViT-S of the paper")
    return text


def finetune_training(summary: dict, task) -> tuple[list[tuple[str, str]], str | None, str | None]:
    """(hyper-parameter rows, init, data) of a fine-tuning log."""
    options = summary.get("options") or {}
    defaults = task.defaults if task is not None else None
    rows = []

    def option(key, default_attr=None, label=None):
        value = options.get(key)
        if value is None and defaults is not None and default_attr:
            value = getattr(defaults, default_attr)
        if value is not None:
            rows.append((label or key.replace("_", " "), str(value)))

    if summary.get("train_images") is not None:
        rows.append(("training images", str(summary["train_images"])))
    if options.get("shots"):
        rows.append(("few-shot", f"{options['shots']} labelled images per class"))
    if summary.get("steps") is not None:
        rows.append(("optimizer steps", str(summary["steps"])))
    if options.get("max_steps"):
        option("max_steps", label="max steps (overrides epochs)")
    else:
        option("epochs", "epochs")
    option("batch_size", "batch_size", "batch size (per process)")
    option("learning_rate", "learning_rate", "peak learning rate")
    option("layer_decay", "layer_decay", "layer-wise lr decay")
    option("weight_decay", "weight_decay", "weight decay")
    option("drop_path_rate", "drop_path_rate", "drop path")
    option("seed")
    losses = [v for v in summary.get("losses") or [] if isinstance(v, (int, float))]
    if losses:
        tail = losses[-10:]
        rows.append(("final training loss", f"{sum(tail) / len(tail):.4f} (mean of the last {len(tail)} steps)"))
    return rows, options.get("init"), options.get("data")


def pretrain_training(summary: dict, config: dict) -> list[tuple[str, str]]:
    rows = []
    if summary.get("data"):
        description = str(summary["data"])
        source = str((summary.get("args") or {}).get("data") or "")
        if source and source != "synthetic" and not is_hub_id(source):
            description = description.replace(source, f"a local folder `{Path(source).name}`")
        rows.append(("data", description))
    for key, label in (("global_step", "optimizer steps"), ("global_batch_size", "global batch size"),
                       ("num_processes", "processes"), ("mixed_precision", "mixed precision")):
        if summary.get(key) is not None:
            rows.append((label, str(summary[key])))
    if isinstance(summary.get("epoch"), (int, float)):
        rows.append(("epochs", f"{summary['epoch']:.2f}"))
    if isinstance(summary.get("peak_learning_rate"), (int, float)):
        rows.append(("peak learning rate", f"{summary['peak_learning_rate']:.3g}"))
    if config.get("mask_ratio") is not None:
        rows.append(("corrupted area per image", f"U[{min(0.5, config['mask_ratio'])}, {config['mask_ratio']}], "
                     f"fill `{config.get('mask_fill', 'noise')}`"))
    if config.get("reconstruction_layers"):
        rows.append(("reconstruction head on blocks", str(list(config["reconstruction_layers"]))))
    if isinstance(summary.get("final_loss"), (int, float)):
        rows.append(("final training loss (L1, corrupted pixels)", f"{summary['final_loss']:.4f}"))
    return rows


def initialisation(init: str | None, base_model) -> tuple[str | None, bool | None, str | None]:
    """(base_model, whether the base was trained on synthetic data, text) for a fine-tuning `--init`.
    `base_model` given by the caller (a Hub id or None) wins over what the log says."""
    base_synthetic = None
    if base_model is UNSET:
        base_model = None
        if init and init != "scratch" and Path(init).is_dir():
            base_model = declared_repo_id(Path(init))
        elif is_hub_id(init):
            base_model = init
    if init and init != "scratch" and Path(init).is_dir():
        base_synthetic = local_synthetic(Path(init))
    if init == "scratch":
        text = "random initialisation (trained from scratch, no pretraining)"
    elif base_model:
        text = f"[`{base_model}`](https://huggingface.co/{base_model})"
    elif init:
        text = f"a local backbone (`{Path(init).name}`)"
    else:
        text = None
    return base_model, base_synthetic, text


def evaluation_context(metrics: dict, task, task_name: str | None, pipeline_tag: str, synthetic: bool | None,
                       data: str | None) -> tuple[dict, list]:
    """(the card's evaluation section, `EvalResult`s for the model-index): every number is metrics.json's."""
    from huggingface_hub import EvalResult

    numbers = scalar_metrics(metrics["metrics"])
    source = str(metrics.get("source") or "")
    eval_synthetic = metrics.get("synthetic_data")
    if not isinstance(eval_synthetic, bool):  # evaluated on the training source: as synthetic as the training data
        eval_synthetic = bool(synthetic) if (not data or source == str(data)) else False
    if eval_synthetic:
        dataset_type = "synthetic-phantoms"
        dataset_name = f"Synthetic phantoms in the {task_name or 'task'} layout (spcxr_hub.data.synthetic)"
    elif is_hub_id(source):
        dataset_type, dataset_name = source, (task.card.dataset_name if task else source)
    else:
        dataset_type = task.card.hub_datasets[0] if task and task.card.hub_datasets else (task_name or "local")
        dataset_name = task.card.dataset_name if task else (task_name or "local data")
    split = str(metrics.get("split") or "test")
    section = {
        "split": split, "source": describe_source(source), "num_images": metrics.get("num_images"),
        "num_skipped": metrics.get("num_skipped") or 0, "synthetic": eval_synthetic, "dataset_name": dataset_name,
        "rows": [(name, format_value(value)) for name, value in numbers],
        "undefined": undefined_metrics(metrics["metrics"]),
        "per_image": {k: len(v) for k, v in metrics["metrics"].items() if isinstance(v, list)},
    }
    results = [EvalResult(task_type=pipeline_tag, dataset_type=dataset_type, dataset_name=dataset_name,
                          dataset_split=split, metric_type=name, metric_name=f"{split} {name}", metric_value=value)
               for name, value in numbers]
    return section, results


def build_card(model_dir: str | os.PathLike, *, repo_id: str | None = None, example_images: Sequence | None = None,
               synthetic: bool | None = None, training_summary: str | os.PathLike | None = None,
               base_model=UNSET, license: str = LICENSE, revision: str | None = None,
               template_dir: str | os.PathLike | None = None, native: dict | None = None) -> CardBundle:
    """Reads the model directory, runs the model on the example images and renders the card (nothing written).
    `native`: the equivalence line and processor limits of a native transformers export (`native_export.py`),
    stated in the card's first lines."""
    from huggingface_hub import ModelCard, ModelCardData

    import spcxr_hub

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise CardError(f"{model_dir}: not a model directory (no config.json)")
    config = read_json(model_dir / "config.json", "config.json")
    if config.get("model_type") == "vit" and native is None:  # the equivalence numbers exist only at export time
        raise CardError(f"{model_dir}: a native export; its card is written by `spcxr export --native`")
    kind = model_kind(config, model_dir)
    pipeline_tag = PIPELINE_TAGS[kind]
    summary, flavour = training_summary_for(model_dir, training_summary)
    metrics = read_json(model_dir / METRICS, "metrics.json") if (model_dir / METRICS).is_file() else None
    if metrics is not None and not isinstance(metrics.get("metrics"), dict):
        raise CardError(f"{model_dir / METRICS}: not an evaluation report (no 'metrics' object)")
    summary_task = (summary or {}).get("task") or ((summary or {}).get("options") or {}).get("task")
    task_name = None if kind == "backbone" else ((metrics or {}).get("task") or summary_task)
    task = lookup_task(task_name)
    if synthetic is None:
        synthetic = synthetic_flag(summary, flavour)

    rows, init, data = [], None, None
    if flavour == "finetune":
        rows, init, data = finetune_training(summary, task)
    elif flavour == "pretrain":
        rows, data = pretrain_training(summary, config), (summary.get("args") or {}).get("data")
    base_model, base_synthetic, init_text = initialisation(init, base_model)

    repo_id = repo_id or (spcxr_hub.BACKBONE_REPO_ID if kind == "backbone" else
                          task.model_id if task is not None else f"spcxr/vit-s-{task_name or kind}")
    evaluation, eval_results = (evaluation_context(metrics, task, task_name, pipeline_tag, synthetic, data)
                                if metrics is not None else (None, []))
    examples = collect_examples(model_dir, example_images)
    url_base = f"https://huggingface.co/{repo_id}/resolve/{revision or 'main'}/"
    widget, files, example_rows = run_examples(model_dir, kind, config, examples, url_base)

    # What the model is: SS-CXR (GMML-pretrained ViT), its architecture from scratch, or another network (baseline).
    if config.get("model_type") != "spcxr" and not native:
        family = "baseline"
    elif kind != "backbone" and init == "scratch":
        family = "scratch"
    else:
        family = "ss-cxr"
    tags = [tag for tag in BASE_TAGS if family == "ss-cxr" or tag != "self-supervised"]
    tags += {"ss-cxr": ["vision-transformer", "gmml"], "scratch": ["vision-transformer"]}.get(family, [])
    if config.get("model_type") == "timm_wrapper":
        tags += ["timm", str(config.get("architecture"))]
    tags += [task_name] if task_name else []
    if synthetic or base_synthetic:
        tags.append("synthetic-data")
    if synthetic:
        datasets = None  # the model never saw the real dataset: do not claim it did
    elif is_hub_id(data):
        datasets = [data]
    else:
        datasets = list(task.card.hub_datasets) if task is not None and task.card.hub_datasets else None
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag=pipeline_tag, license=license, tags=tags, datasets=datasets,
        metrics=[result.metric_type for result in eval_results] or None, base_model=base_model, model_name=repo_id,
        eval_results=eval_results or None, widget=widget,
    )

    labels = config_labels(config)
    count = parameter_count(model_dir)
    template_dir = Path(template_dir or TEMPLATE_DIR)
    trust = (trust_context(metrics, model_dir, [template_dir, TEMPLATE_DIR],
                           synthetic=bool(synthetic or (evaluation or {}).get("synthetic")))
             if metrics is not None and kind == "classification" else None)
    context = dict(
        repo_id=repo_id, kind=kind, family=family, synthetic=bool(synthetic), base_synthetic=bool(base_synthetic),
        architecture=architecture_text(config, kind), architecture_class=(config.get("architectures") or ["?"])[0],
        parameters=f"{count / 1e6:.2f} M" if count else "unknown",
        hidden_size=config.get("hidden_size"), image_size=config.get("image_size"),
        pooling=config.get("classifier_pooling", "cls"), patch_size=config.get("patch_size"),
        labels=labels, multi_label=config.get("problem_type") == "multi_label_classification",
        task=task, task_name=task_name, init_text=init_text, training_rows=rows,
        data_text=describe_source(str(data)) if data and data != "synthetic" else None,
        evaluation=evaluation, examples=example_rows, spcxr_bibtex=SPCXR_BIBTEX, gmml_bibtex=GMML_BIBTEX,
        license=license, native=native, trust=trust,
    )
    template = template_dir / TEMPLATES[kind]
    if not template.is_file():
        raise CardError(f"{template}: model card template not found")
    rendered = ModelCard.from_template(card_data, template_path=str(template), **context)
    # Jinja block tags leave blank lines behind; Markdown needs at most one between blocks.
    card = ModelCard(re.sub(r"\n{3,}", "\n\n", str(rendered)).rstrip() + "\n")
    return CardBundle(card=card, files=files, kind=kind, evaluated=bool(eval_results))


def render_card(model_dir: str | os.PathLike, *, repo_id: str | None = None, example_images: Sequence | None = None,
                **options):
    """The model card of a model directory as a `huggingface_hub.ModelCard` (nothing is written).

    Args:
        model_dir: a saved SS-CXR model (backbone, classifier or segmenter), optionally with `metrics.json`,
            `training_log.json` or a pretraining `trainer_state.json` (in it or beside it).
        repo_id: the Hub id the card is written for (default: the task's `model_id`, or `spcxr/vit-s`).
        example_images: image files (PNG, JPEG, DICOM…) or float arrays for the widget; default: the examples
            already in `model_dir/examples`, else two phantom films.
        **options: `synthetic` (override the training log's flag), `training_summary` (a JSON path),
            `base_model` (a Hub id or None), `license`, `revision`, `template_dir`.
    """
    return build_card(model_dir, repo_id=repo_id, example_images=example_images, **options).card


def write_bundle(bundle: CardBundle, output_dir: Path) -> Path:
    """Example images first (the folder replaced at once), then README.md renamed into place."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if bundle.files:
        with atomic_directory(output_dir / EXAMPLES_DIR, overwrite=True) as staging:
            for name, content in bundle.files.items():
                target = staging / Path(name).relative_to(EXAMPLES_DIR)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
    readme = output_dir / "README.md"
    with atomic_file(readme) as staging:
        staging.write_text(str(bundle.card), encoding="utf-8")
    return readme


def write_card(model_dir: str | os.PathLike, *, repo_id: str | None = None, example_images: Sequence | None = None,
               output_dir: str | os.PathLike | None = None, **options) -> Path:
    """Renders the card and writes `README.md` and `examples/` into `model_dir` (or `output_dir`). Returns the
    README's path. See `render_card` for the arguments."""
    bundle = build_card(model_dir, repo_id=repo_id, example_images=example_images, **options)
    return write_bundle(bundle, Path(output_dir or model_dir))
