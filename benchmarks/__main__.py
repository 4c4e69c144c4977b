"""`python -m benchmarks`: every measure of issue 6 against its peer, in one run; JSON + Markdown results.

    python -m benchmarks                          # full run (ViT-S, batch 32, 224², 2 threads): ~10 minutes on 2 cores
    python -m benchmarks --quick                  # tiny sizes, 1–2 repeats: a smoke test, numbers meaningless
    python -m benchmarks --only P1,P4 --threads 4 --output-dir benchmarks/results
    python -m benchmarks --only P1,P2 --device cuda   # GPU figures (bf16 rows added); P3/P4/P6 measure the CPU

Measures: P1 inference, P2 pretraining step, P3 input pipeline, P4 CPU deployment path (speed + metric change),
P5 few-shot lung segmentation, GMML-pretrained vs scratch (`benchmarks/fewshot_lungseg.py`, its own options there),
P6 cold start. Every timing is a ratio against a peer measured in the same run, interleaved, after warm-up, the
median of repeats; the machine (CPU, threads, torch, load average before and after) is written with the results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MEASURES = {
    "P1": "inference",  # P1 rows and P4's speed rows come from one interleaved run
    "P2": "pretraining",
    "P3": "pipeline",
    "P4": "deploy_metric",
    "P5": "fewshot",
    "P6": "cold_start",
}


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1–2 repeats (smoke test)")
    parser.add_argument("--only", default=",".join(MEASURES), help=f"comma-separated measures ({','.join(MEASURES)})")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (P1/P2 on the GPU, bf16 rows added)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.only = [name.strip().upper() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in MEASURES]
    if unknown:
        parser.error(f"unknown measure(s) {', '.join(unknown)}; choose from {', '.join(MEASURES)}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: no CUDA device is visible to torch")
    elif args.device != "cpu":
        parser.error(f"--device must be cpu or cuda[:N], got {args.device!r}")
    return args


def run(args: argparse.Namespace) -> dict:
    import importlib

    import torch

    from .common import Settings, machine

    settings = Settings.make(args.quick, args.threads, args.device, str(args.output_dir))
    torch.set_num_threads(settings.threads)
    info = machine(settings.threads, settings.device)
    rows, timings, errors = [], {}, {}
    # P4's speed rows come with P1 (same timm runs); asking for P4 alone still runs that interleaved group.
    modules = []
    for name in args.only:
        module = MEASURES[name]
        if name == "P4" and "P1" not in args.only:
            modules.append("inference")
        modules.append(module)
    for module_name in dict.fromkeys(modules):
        start = time.perf_counter()
        print(f"[benchmarks] {module_name} …", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f".{module_name}", __package__)
            produced = module.measure(settings)
        except Exception as error:  # one failing measure must not lose the others' numbers
            if os.environ.get("SPCXR_DEBUG"):
                raise
            errors[module_name] = f"{type(error).__name__}: {error}"
            print(f"[benchmarks] {module_name} failed: {errors[module_name]}", file=sys.stderr)
            continue
        if module_name == "inference" and "P1" not in args.only:
            produced = [row for row in produced if row.id != "P1"]
        if module_name == "inference" and "P4" not in args.only:
            produced = [row for row in produced if row.id != "P4"]
        rows += produced
        timings[module_name] = time.perf_counter() - start
    info["load_average_after"] = os.getloadavg()
    return {
        "command": " ".join(["python -m benchmarks", *args.argv]),
        "quick": settings.quick,
        "settings": vars(settings),
        "machine": info,
        "rows": [row.as_dict() for row in rows],
        "errors": errors,
        "seconds_per_measure": timings,
    }


def number(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "%":
        return f"{value:.2f}%"
    if unit == "Dice":
        return f"{value:.4f}"
    return f"{value:.1f} {unit}" if value >= 10 else f"{value:.2f} {unit}"


def markdown(results: dict) -> str:
    m = results["machine"]

    def load(values):
        return " / ".join(f"{v:.2f}" for v in values)

    lines = [
        f"Machine: {m['cpu']} ({m['cpus']} CPUs; {', '.join(m['cpu_flags']) or 'no AVX-512'}), "
        f"{m['threads']} torch threads, torch {m['torch']}, timm {m['timm']}, transformers {m['transformers']}, "
        f"device {m['device']}{' (' + m['gpu'] + ')' if m.get('gpu') else ''}; load average (1/5/15 min) "
        f"{load(m['load_average_before'])} before, {load(m['load_average_after'])} after."
        + (f" CPU fast path: {m['cpu_fast_path']['name']} ({m['cpu_fast_path']['reason']})."
           if m.get("cpu_fast_path") else "")
        + (" **--quick: tiny sizes, the numbers mean nothing.**" if results["quick"] else ""),
        "",
        "| measure | ours | peer | ratio | goal | met? |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        met = "–" if row["met"] is None else ("yes" if row["met"] else "**no**")
        measure = f"{row['id']} {row['measure']}" + (f" — {row['notes']}" if row["notes"] else "")
        lines.append(f"| {measure} | {row['ours_label']}: {number(row['ours'], row['unit'])} | {row['peer_label']}: "
                     f"{number(row['peer'], row['unit'])} | {row['ratio']:.2f}× | {row['goal'] or '–'} | {met} |")
    for name, error in results["errors"].items():
        lines.append(f"\n{name} failed: {error}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse(argv)
    results = run(args)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = markdown(results)
    (args.output_dir / "results.md").write_text(table)
    print(table)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
