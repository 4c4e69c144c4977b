"""`spcxr reproduce`: the SPCXR paper's comparison on your data, with one command.

Every listed model — `ss-cxr` (the GMML-pretrained backbone), `scratch` (the same ViT from random weights), a timm
baseline (`timm:densenet121`, …) or a plugin's backbone — is fine-tuned with one recipe for each seed, evaluated on
the test split (and on a second source for the drift table), and summarised as `results.json` and `results.md`:
a Markdown table in the layout of the paper's (task, dataset, metric, value, model), mean ± sample standard deviation
over the seeds. The output directory is written to a temporary sibling and renamed at the end, so a failure leaves
nothing half-written:

    DIR/results.json          every run: model, backbone, init, seed, metrics, the recipe, the seeds
    DIR/results.md            the tables
    DIR/runs/<model>-seed<k>/ each fine-tuned model (as `spcxr finetune` writes it; drift metrics in eval-drift/)
"""

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .model_factories import SCRATCH, available_model_factories, get_model_factory
from ..errors import InputNotFoundError, SpcxrError, UsageError
from ..inference import ood
from .recipe import Recipe
from ..hub.saving import atomic_directory
from ..plugins.tasks import Task

SS_CXR = "ss-cxr"
DEFAULT_SS_CXR = "spcxr/vit-s"


class UnknownModelError(SpcxrError, KeyError):
    def __str__(self):
        return self.args[0]


@dataclass(frozen=True)
class ModelSpec:
    """One entry of `--models`: its label in the tables, the backbone and its `--init`."""

    label: str
    backbone: str
    init: str | None

    @property
    def slug(self) -> str:
        """Folder-safe form of the label: `timm:densenet121` → `timm-densenet121`."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.label).strip("-")


@dataclass(kw_only=True)
class ReproduceOptions(Recipe):
    task: str
    data: str
    output_dir: Path
    models: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    eval_data: str | None = None
    ss_cxr: str = DEFAULT_SS_CXR
    overwrite: bool = False


def known_models(registry=None) -> list[str]:
    return [SS_CXR, SCRATCH] + sorted(name for name in available_model_factories(registry) if name != "spcxr")


def parse_models(names: list[str], ss_cxr: str = DEFAULT_SS_CXR, registry=None) -> list[ModelSpec]:
    """`ss-cxr`, `scratch`, a registered backbone (`timm:densenet121`, a plugin's) or `timm:<architecture>`;
    `NAME=WEIGHTS` gives a backbone (or ss-cxr) its weights (a local file or folder; a model id for ss-cxr)."""
    specs, seen = [], set()
    for raw in names:
        label = raw.strip()
        if not label:
            continue
        if label in seen:
            raise UsageError(f"--models: {label!r} is listed twice")
        seen.add(label)
        name, _, weights = label.partition("=")
        if name == SS_CXR:
            specs.append(ModelSpec(label, "spcxr", weights or ss_cxr))
            continue
        if name == SCRATCH:
            if weights:
                raise UsageError(f"--models {label!r}: scratch takes no weights (use ss-cxr=MODEL)")
            specs.append(ModelSpec(label, "spcxr", SCRATCH))
            continue
        if name != "spcxr":
            try:
                get_model_factory(name, registry)
                specs.append(ModelSpec(label, name, weights or None))
                continue
            except KeyError:
                pass
        raise UnknownModelError(
            f"unknown model {name!r} in --models; known models: {', '.join(known_models(registry))} "
            "(or timm:<any timm architecture>; NAME=WEIGHTS for given weights)")
    if not specs:
        raise UsageError("--models: list at least one model, e.g. ss-cxr,scratch,timm:densenet121")
    return specs


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: expected distinct comma-separated integers, e.g. 0,1,2")
    return seeds


def dataset_label(source: str) -> str:
    """How a data source is named in the tables: a local folder by its name (marked when synthetic), a Hub id as is."""
    from ..data.records import is_synthetic

    path = Path(source)
    if path.exists():
        name = path.resolve().name
        return f"{name} (synthetic)" if is_synthetic(path) else name
    return str(source)


def scalar_metrics(metrics: dict) -> dict[str, float | None]:
    """The single-number metrics (lists, per-class dicts and curves stay in results.json only)."""
    return {key: value for key, value in metrics.items()
            if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))}


def summarise(runs: list[dict], key: str, task: Task, dataset: str, models: list[ModelSpec]) -> list[dict]:
    """One row per (metric, model): mean and sample standard deviation over the seeds' values of `run[key]`."""
    metric_names: list[str] = []
    for run in runs:
        for name in scalar_metrics(run[key]["metrics"]):
            if name not in metric_names:
                metric_names.append(name)
    rows = []
    for metric in metric_names:
        for spec in models:
            values = [run[key]["metrics"].get(metric) for run in runs if run["model"] == spec.label]
            present = [float(v) for v in values if v is not None]
            mean = sum(present) / len(present) if present else None
            std = (math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1))
                   if len(present) > 1 else None)
            rows.append({"task": task.name, "dataset": dataset, "metric": metric, "model": spec.label,
                         "mean": mean, "std": std, "n": len(present), "values": values,
                         "value": format_value(mean, std, len(values))})
    return rows


def format_value(mean: float | None, std: float | None, seeds: int) -> str:
    if mean is None:
        return "n/a"
    if seeds > 1:
        return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f} (one seed of {seeds} defined)"
    return f"{mean:.3f}"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| task | dataset | metric | value | model |", "|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['dataset']} | {r['metric']} | {r['value']} | {r['model']} |" for r in rows]
    return "\n".join(lines)


def render_markdown(results: dict) -> str:
    seeds = results["seeds"]
    spread = f"mean ± sample standard deviation over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else \
        f"seed {seeds[0]}"
    shots = f", {results['shots']} labelled images per class" if results["shots"] else ""
    parts = [f"# {results['task']}: {', '.join(m['label'] for m in results['models'])}", ""]
    if results["synthetic"]:
        parts += ["**Trained and evaluated on synthetic phantom radiographs: these numbers say nothing about "
                  "patients.**", ""]
    parts += [f"Test split of {results['dataset']}{shots}; {spread}.", "", markdown_table(results["table"]), ""]
    if results["drift_table"]:
        parts += [f"## Drift: trained on {results['dataset']}, evaluated on {results['eval_dataset']}", "",
                  markdown_table(results["drift_table"]), ""]
    recipe = ", ".join(f"{k} {v}" for k, v in results["recipe"].items() if v is not None)
    parts += [f"Recipe: {recipe or 'the task defaults'}. Models and metrics of every run: `results.json`; "
              "the fine-tuned models: `runs/`.", ""]
    return "\n".join(parts)


def evaluation_summary(report: dict) -> dict:
    return {key: report[key] for key in ("source", "split", "num_images", "num_skipped", "metrics")}


def load_model_directory(directory: Path):
    """A saved run through the Auto classes, as a user would load it."""
    import spcxr_hub  # noqa: F401  (registers SS-CXR with the Auto classes)
    from transformers import (AutoConfig, AutoImageProcessor, AutoModelForImageClassification,
                              AutoModelForSemanticSegmentation)

    config = AutoConfig.from_pretrained(directory)
    segmentation = any(a.endswith("ForSemanticSegmentation") for a in config.architectures or [])
    auto = AutoModelForSemanticSegmentation if segmentation else AutoModelForImageClassification
    return auto.from_pretrained(directory).eval(), AutoImageProcessor.from_pretrained(directory)


def reproduce(options: ReproduceOptions, task: Task) -> dict:
    """Fine-tunes and evaluates every (model, seed); writes the output directory. Returns results.json's content."""
    from ..data.attributes import grouping
    from ..data.records import is_synthetic, load_records
    from ..evaluation.evaluate import evaluate_model
    from .finetuning import FinetuneOptions, finetune

    specs = parse_models(options.models, options.ss_cxr)
    subgroups = grouping(options.group_by, options.metadata)  # each run reports them; bad input fails here
    for spec in specs:  # fail before hours of training, not after
        size = None if spec.backbone == "spcxr" else options.image_size or task.defaults.image_size
        get_model_factory(spec.backbone).check(task, size)
        if spec.backbone == "spcxr" and spec.init != SCRATCH:
            from ..models.spcxr.configuration_spcxr import SpcxrConfig

            SpcxrConfig.from_pretrained(spec.init)
        elif spec.init and spec.init != SCRATCH and not Path(spec.init).exists():
            raise InputNotFoundError(f"--models {spec.label}: {spec.init} is not a local file or folder")
    seeds = list(options.seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds: expected distinct integers, got {seeds}")
    recipe = options.recipe()
    drift_records = load_records(task, options.eval_data, "test") if options.eval_data else None

    runs = []
    with atomic_directory(options.output_dir, overwrite=options.overwrite) as staging:
        for spec in specs:
            for seed in seeds:
                relative = Path("runs") / f"{spec.slug}-seed{seed}"
                run_dir = staging / relative
                report = finetune(FinetuneOptions(
                    **recipe, task=task.name, data=options.data, output_dir=run_dir, init=spec.init,
                    backbone=spec.backbone, seed=seed,
                ), task)
                log = json.loads((run_dir / "training_log.json").read_text())
                run = {"model": spec.label, "backbone": spec.backbone, "init": log["options"]["init"], "seed": seed,
                       "dir": str(relative), "train_images": log["train_images"], "steps": log["steps"],
                       "final_loss": log["losses"][-1] if log["losses"] else None,
                       "test": evaluation_summary(report)}
                if drift_records is not None:
                    model, processor = load_model_directory(run_dir)
                    drift = evaluate_model(model, processor, task, drift_records, run_dir / "eval-drift", split="test",
                                           source=options.eval_data, strict=options.strict, progress=options.progress,
                                           ood_statistics=ood.load(run_dir), grouping=subgroups)
                    run["drift"] = evaluation_summary(drift)
                runs.append(run)

        dataset = dataset_label(options.data)
        results = {
            "task": task.name,
            "kind": task.kind,
            "data": str(options.data),
            "dataset": dataset,
            "synthetic": is_synthetic(options.data) or bool(options.eval_data and is_synthetic(options.eval_data)),
            "eval_data": options.eval_data,
            "eval_dataset": dataset_label(options.eval_data) if options.eval_data else None,
            "shots": options.shots,
            "seeds": seeds,
            "models": [{"label": s.label, "backbone": s.backbone, "init": s.init} for s in specs],
            "recipe": {k: v for k, v in recipe.items() if k not in ("shots", "strict", "progress", "group_by", "metadata")},
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
            "runs": runs,
            "table": summarise(runs, "test", task, dataset, specs),
            "drift_table": (summarise(runs, "drift", task, dataset_label(options.eval_data), specs)
                            if options.eval_data else []),
        }
        (staging / "results.json").write_text(json.dumps(results, indent=2))
        (staging / "results.md").write_text(render_markdown(results))
    return results


__all__ = ["ReproduceOptions", "ModelSpec", "UnknownModelError", "parse_models", "parse_seeds", "reproduce",
           "known_models", "SS_CXR"]
