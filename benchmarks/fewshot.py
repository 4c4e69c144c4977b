"""P5 in the one-command run: the few-shot experiment of `benchmarks/fewshot_lungseg.py` with its defaults, as a
row (SS-CXR's mean held-out Dice against scratch's) plus that script's JSON, Markdown and plot in the output folder."""

from __future__ import annotations

from .common import Row, Settings


def measure(settings: Settings) -> list[Row]:
    from . import fewshot_lungseg

    argv = ["--threads", str(settings.threads), "--output-dir", str(settings.output_dir)]
    args = fewshot_lungseg.parse(argv + (["--quick"] if settings.quick else []))
    summary = fewshot_lungseg.run(args)
    summary["command"] = "python -m benchmarks.fewshot_lungseg" + (" --quick" if settings.quick else "") + (
        f" --threads {settings.threads}" if settings.threads != 2 else "")  # the same run on its own
    fewshot_lungseg.write(summary, args.output_dir)
    means, diff = summary["summary"], summary["paired"]
    return [Row(
        "P5", f"{summary['shots']}-shot lung segmentation, held-out Dice ({len(summary['seeds'])} seeds"
        f"{', synthetic' if summary['synthetic'] else ''})",
        "SS-CXR (GMML-pretrained)", means["ss-cxr"]["mean"], "same ViT from scratch", means["scratch"]["mean"],
        "Dice", "pretrained > scratch, paired p < 0.05",
        notes=f"paired Δ {diff['mean']:+.4f} ± {diff['std']:.4f}, better in {diff['wins']}/{diff['n']} seeds, "
        f"p = {diff['p_value']:.2g}; details in fewshot_lungseg.md",
        met=diff["mean"] > 0 and diff["p_value"] < 0.05, details=summary,
    )]
