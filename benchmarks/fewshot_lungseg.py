"""P5: does GMML pretraining help few-shot lung segmentation? The SPCXR paper's claim (Montgomery F1 0.9561 with
the pretrained ViT-S vs 0.9227 from scratch), as one command.

    python -m benchmarks.fewshot_lungseg                  # phantoms: pretrain a tiny SS-CXR, 10-shot UNETR, 5 seeds
                                                          # (~9 minutes on 2 CPU cores)
    python -m benchmarks.fewshot_lungseg --quick          # smoke test (seconds; numbers mean nothing)
    python -m benchmarks.fewshot_lungseg --data ~/MontgomerySet --pretrain-data ~/unlabelled-cxr \\
        --config vit-s --image-size 224 --pretrain-steps 100000      # the real experiment (a GPU helps)
    python -m benchmarks.fewshot_lungseg --data ~/MontgomerySet --backbone spcxr/vit-s --config vit-s \\
        --image-size 224                                 # the published backbone, no pretraining

1. GMML-pretrains `--config` on unlabelled radiographs (`--pretrain-data`: phantoms by default, a folder or a Hub
   dataset id), or takes `--backbone`;
2. fine-tunes the UNETR lung segmenter (`spcxr reproduce lungseg`) with `--shots` labelled images from the Montgomery
   layout at `--data` (phantoms written in that layout by default), once from the backbone and once from the same
   ViT with random weights, with the same recipe, for each seed — a seed draws the same labelled images for both;
3. evaluates both on the held-out split and reports Dice as mean ± sample std over the seeds, and the paired
   difference (pretrained − scratch, seed by seed) with a paired t-test.

Writes `fewshot_lungseg.json`, `fewshot_lungseg.md` and `fewshot_lungseg.png` to `--output-dir`. The pretraining
run and every fine-tuned model stay in `--work-dir` (a temporary folder unless given).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASK = "lungseg"
SS_CXR, SCRATCH = "ss-cxr", "scratch"
# Architecture fields that make two ViTs "the same model" (scratch must differ from the backbone only in weights).
ARCHITECTURE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                "image_size", "patch_size", "num_channels", "qkv_bias", "segmentation_feature_size",
                "segmentation_skip_layers")


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fewshot_lungseg",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path,
                      help="a Montgomery County folder (CXR_png/, ManualMask/); default: phantoms in that layout")
    data.add_argument("--synthetic-per-class", type=int, default=100,
                      help="phantoms per class (normal, abnormal) when --data is not given (default 100: 160 train, "
                      "40 held out)")
    pre = parser.add_argument_group("pretraining (skipped with --backbone)")
    pre.add_argument("--backbone", help="a pretrained SS-CXR backbone (folder or Hub id) instead of pretraining one")
    pre.add_argument("--pretrain-data", default="synthetic",
                     help="unlabelled radiographs: 'synthetic' (default), a folder or a Hub dataset id")
    pre.add_argument("--pretrain-images", type=int, default=2048, help="phantoms of --pretrain-data synthetic (2048)")
    pre.add_argument("--pretrain-steps", type=int, default=2000, help="GMML optimizer steps (2000)")
    pre.add_argument("--pretrain-batch-size", type=int, default=32, help="GMML batch size (32)")
    pre.add_argument("--pretrain-lr", default="2e-3", help="GMML peak learning rate (2e-3)")
    pre.add_argument("--mask-ratio", help="GMML corrupted-area fraction (default: the config's)")
    model = parser.add_argument_group("model and fine-tuning recipe (identical for both initialisations)")
    model.add_argument("--config", default="tiny", help="the ViT: a preset (tiny, vit-s) or a JSON file (tiny)")
    model.add_argument("--image-size", type=int, default=128,
                       help="pretraining and fine-tuning resolution (128: the phantoms' own; at 64 the ViT sees a "
                       "4×4 grid and the UNETR's pixel path does the work, see benchmarks/README.md)")
    model.add_argument("--shots", type=int, default=10, help="labelled training images (10)")
    model.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated fine-tuning seeds (0,1,2,3,4)")
    model.add_argument("--epochs", type=int, default=40, help="fine-tuning epochs (40)")
    model.add_argument("--batch-size", type=int, default=5, help="fine-tuning batch size (5)")
    model.add_argument("--lr", type=float, default=2e-3, help="fine-tuning peak learning rate (2e-3)")
    model.add_argument("--warmup-epochs", type=int, default=2, help="fine-tuning warm-up epochs (2)")
    model.add_argument("--layer-decay", type=float,
                       help="layer-wise lr decay for both (default: the task's 0.75 for the pretrained backbone, "
                       "1.0 from scratch, as `spcxr finetune` does)")
    run = parser.add_argument_group("run")
    run.add_argument("--quick", action="store_true", help="tiny everything: a smoke test, the numbers mean nothing")
    run.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results",
                     help="where fewshot_lungseg.{json,md,png} go (default: benchmarks/results)")
    run.add_argument("--work-dir", type=Path,
                     help="keep the pretraining run, the data and the fine-tuned models here (default: a temp folder)")
    run.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.synthetic_per_class, args.pretrain_images, args.pretrain_steps, args.image_size = 6, 16, 4, 64
        args.pretrain_batch_size, args.shots, args.seeds, args.epochs, args.batch_size = 4, 3, "0,1", 2, 3
    try:
        args.seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2")
    if len(args.seeds) < 2 or len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds: give at least two distinct seeds (a spread needs several)")
    for name in ("synthetic_per_class", "pretrain_images", "pretrain_steps", "pretrain_batch_size", "image_size",
                 "shots", "epochs", "batch_size", "threads"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.data is not None and not args.data.is_dir():
        parser.error(f"--data {args.data}: not a folder (expected the Montgomery layout: CXR_png/, ManualMask/)")
    return args


def pretrain(args: argparse.Namespace, work: Path) -> Path:
    """GMML pretraining through the same entry point as `spcxr pretrain`; returns the backbone folder."""
    from spcxr_hub.training import pretraining

    output = work / "pretrain"
    argv = ["--data", args.pretrain_data, "--synthetic-size", str(args.pretrain_images), "--config", args.config,
            "--image-size", str(args.image_size), "--batch-size", str(args.pretrain_batch_size),
            "--max-steps", str(args.pretrain_steps), "--warmup-steps", str(max(1, args.pretrain_steps // 20)),
            "--lr", args.pretrain_lr, "--preview-every", "0", "--checkpoint-every", "0", "--num-workers", "0",
            "--report-to", "none", "--seed", "0", "--output-dir", str(output), "--overwrite"]
    if args.mask_ratio:
        argv += ["--mask-ratio", args.mask_ratio]
    code = pretraining.main(argv)
    if code:
        raise SystemExit(f"fewshot_lungseg: pretraining failed (exit {code}); see the message above")
    return output / pretraining.BACKBONE_DIR


def check_disjoint(args: argparse.Namespace, images: int, seed: int) -> None:
    """Pretraining phantom i is drawn from seed i; the labelled phantoms from hashed seeds: none may be shared, or
    the held-out films would have been seen (unlabelled) in pretraining."""
    from spcxr_hub.data.layouts import image_seed

    if args.backbone is None and args.pretrain_data == "synthetic":
        shared = [i for i in range(images) if image_seed(seed, i) < args.pretrain_images]
        if shared:
            raise SystemExit(f"fewshot_lungseg: labelled phantoms {shared} were also pretraining phantoms")


def check_same_architecture(backbone: str, config: str, image_size: int) -> None:
    """Scratch must be the backbone's ViT with random weights, or the comparison says nothing."""
    from spcxr_hub.models.spcxr.configuration_spcxr import SpcxrConfig
    from spcxr_hub.training.presets import preset_config

    theirs = SpcxrConfig.from_pretrained(backbone).to_dict()
    ours = preset_config(config, image_size=image_size).to_dict()
    differ = [f"{key} {theirs.get(key)} vs {ours.get(key)}" for key in ARCHITECTURE
              if _plain(theirs.get(key)) != _plain(ours.get(key))]
    if differ:
        raise SystemExit(f"fewshot_lungseg: --backbone {backbone} is not the --config {config} ViT "
                         f"({'; '.join(differ)}); pass the --config it was pretrained with")


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def paired(pretrained: list[float], scratch: list[float]) -> dict:
    """Seed-by-seed difference pretrained − scratch: mean, sample std, wins, and a two-sided paired t-test."""
    from scipy import stats

    diffs = [a - b for a, b in zip(pretrained, scratch)]
    mean = sum(diffs) / len(diffs)
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    p = float(stats.ttest_rel(pretrained, scratch).pvalue) if std > 0 else (0.0 if mean else 1.0)
    return {"differences": diffs, "mean": mean, "std": std, "wins": sum(d > 0 for d in diffs), "n": len(diffs),
            "p_value": p}


def summarise(results: dict, args: argparse.Namespace, backbone: str, seconds: dict) -> dict:
    from spcxr_hub.plugins.registry import get_task

    # reproduce's table has one row per (metric, model), values in seed order: its mean ± std are ours too.
    rows = {row["model"].split("=")[0]: row for row in results["table"] if row["metric"] == "dice"}
    if any(None in rows[name]["values"] for name in (SS_CXR, SCRATCH)):
        raise SystemExit("fewshot_lungseg: a run has no Dice (an empty held-out split?)")
    scores = {name: rows[name]["values"] for name in (SS_CXR, SCRATCH)}
    stats = {name: {"mean": rows[name]["mean"], "std": rows[name]["std"]} for name in (SS_CXR, SCRATCH)}
    return {
        "command": " ".join(["python -m benchmarks.fewshot_lungseg", *args.argv]),
        "quick": args.quick,
        "synthetic": results["synthetic"],
        "dataset": results["dataset"],
        "test_images": results["runs"][0]["test"]["num_images"],
        "shots": args.shots,
        "seeds": args.seeds,
        "backbone": backbone,
        "pretraining": None if args.backbone else {
            "data": args.pretrain_data, "images": args.pretrain_images if args.pretrain_data == "synthetic" else None,
            "steps": args.pretrain_steps, "batch_size": args.pretrain_batch_size, "lr": args.pretrain_lr,
            "mask_ratio": args.mask_ratio},
        "recipe": {"config": args.config, "image_size": args.image_size, "epochs": args.epochs,
                   "batch_size": args.batch_size, "lr": args.lr, "warmup_epochs": args.warmup_epochs,
                   "layer_decay": args.layer_decay if args.layer_decay is not None else
                   f"{get_task(TASK).defaults.layer_decay} pretrained, 1.0 scratch"},
        "dice": scores,
        "summary": stats,
        "paired": paired(scores[SS_CXR], scores[SCRATCH]),
        "seconds": seconds,
        "runs": results["runs"],
    }


def markdown(summary: dict) -> str:
    s, d = summary["summary"], summary["paired"]
    seeds = ", ".join(map(str, summary["seeds"]))
    verdict = ("pretraining helps" if d["mean"] > 0 and d["p_value"] < 0.05 else
               "pretraining hurts" if d["mean"] < 0 and d["p_value"] < 0.05 else "no significant difference")
    lines = [f"# P5: few-shot lung segmentation, GMML-pretrained vs scratch ({summary['shots']} labelled images)", ""]
    if summary["synthetic"]:
        lines += ["**Pretrained, fine-tuned and evaluated on synthetic phantom radiographs: these numbers say nothing "
                  "about patients.**", ""]
    if summary["quick"]:
        lines += ["**--quick: tiny sizes, the numbers mean nothing.**", ""]
    pre = summary["pretraining"]
    lines += [
        f"Held-out split of {summary['dataset']} ({summary['test_images']} images); seeds {seeds} (a seed draws the "
        "same labelled images for both models). Dice: mean ± sample std over the seeds.", "",
        "| model | Dice | per seed |", "|---|---|---|",
        *(f"| {name} | {s[name]['mean']:.4f} ± {s[name]['std']:.4f} | "
          f"{', '.join(f'{v:.4f}' for v in summary['dice'][name])} |" for name in (SS_CXR, SCRATCH)),
        "",
        f"Paired difference (SS-CXR − scratch): {d['mean']:+.4f} ± {d['std']:.4f}; SS-CXR better in {d['wins']} of "
        f"{d['n']} seeds; paired t-test p = {d['p_value']:.3g} → **{verdict}**.", "",
        "Backbone: " + (f"`{summary['backbone']}` (given)" if pre is None else
                        f"GMML on {pre['images'] or ''} {pre['data']} images, {pre['steps']} steps of batch "
                        f"{pre['batch_size']}, lr {pre['lr']}" + (f", mask ratio {pre['mask_ratio']}"
                                                                 if pre["mask_ratio"] else "")) + ". "
        f"Recipe for both: " + ", ".join(f"{k} {v}" for k, v in summary["recipe"].items()) + ".", "",
        f"Command: `{summary['command']}`", "",
    ]
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spcxr_hub.evaluation.plots import save

    figure, axis = plt.subplots(figsize=(4.5, 3.5))
    a, b = summary["dice"][SCRATCH], summary["dice"][SS_CXR]
    for seed, low, high in zip(summary["seeds"], a, b):
        axis.plot([0, 1], [low, high], "-o", color="tab:green" if high > low else "tab:red", alpha=0.7)
        axis.annotate(f"seed {seed}", (1.03, high), fontsize=7, va="center")
    axis.set(xticks=[0, 1], xticklabels=["scratch", "SS-CXR (GMML)"], xlim=(-0.3, 1.45), ylabel="Dice (held out)",
             title=f"{summary['shots']}-shot lung segmentation" + (" (synthetic)" if summary["synthetic"] else ""))
    axis.grid(alpha=0.3)
    save(figure, path)


def run(args: argparse.Namespace) -> dict:
    """Pretrains (unless --backbone), fine-tunes both initialisations for every seed; returns the summary."""
    import torch
    import transformers

    from spcxr_hub.plugins.registry import get_task
    from spcxr_hub.training.reproduce import ReproduceOptions, reproduce

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # the UNETR's "newly initialised decoder" table, ten times over
    task = get_task(TASK)
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="spcxr-fewshot-") as temporary:
        work = args.work_dir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        data = args.data
        if data is None:
            data = work / "MontgomerySet"
            if not data.is_dir():
                task.write_synthetic(data, args.synthetic_per_class, 1)
            check_disjoint(args, 2 * args.synthetic_per_class, 1)
        start = time.perf_counter()
        backbone = args.backbone or str(pretrain(args, work))
        seconds["pretraining"] = time.perf_counter() - start
        check_same_architecture(backbone, args.config, args.image_size)
        start = time.perf_counter()
        results = reproduce(ReproduceOptions(
            task=TASK, data=str(data), output_dir=work / "fewshot", models=[f"{SS_CXR}={backbone}", SCRATCH],
            seeds=args.seeds, shots=args.shots, config=args.config, image_size=args.image_size, epochs=args.epochs,
            batch_size=args.batch_size, learning_rate=args.lr, warmup_epochs=args.warmup_epochs,
            layer_decay=args.layer_decay, overwrite=True,
        ), task)
        seconds["fine-tuning and evaluation"] = time.perf_counter() - start
        return summarise(results, args, backbone, seconds)


def write(summary: dict, output_dir: Path) -> str:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "fewshot_lungseg.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary)
    (output_dir / "fewshot_lungseg.md").write_text(text)
    plot(summary, output_dir / "fewshot_lungseg.png")
    return text


def main(argv=None) -> int:
    args = parse(argv)
    print(write(run(args), args.output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
