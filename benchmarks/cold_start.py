"""P6: cold start — wall time and peak RSS of one prediction on one PNG from a fresh process, imports included.

Each command runs in a new Python process (HF_HUB_OFFLINE=1, the same environment otherwise), interleaved, after one
untimed round that warms the page cache; peak RSS is the child's own `ru_maxrss` (`os.wait4`).

* ours: `spcxr predict --model DIR film.png` (the console script; `python -m spcxr_hub.cli` where it is missing);
* ours `--fast`: the same with the CPU deployment path;
* transformers path: the same model loaded with the Auto classes after `import spcxr_hub` — what `spcxr predict` ran
  before the lean loader (the "before" figure);
* peer: `transformers.pipeline("image-classification", model=DIR)` on a ViT of the same size (ViTForImageClassification
  384 wide, 12 blocks, saved locally with its ViTImageProcessor), called on the same PNG.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .common import Row, Settings, median

HEAVY = ("transformers.modeling_utils", "timm", "torchvision", "datasets", "accelerate", "matplotlib", "evaluate")

PIPELINE = """
from transformers import pipeline
classify = pipeline("image-classification", model={model!r})
print(classify({image!r})[0])
"""
TRANSFORMERS_PATH = """
import torch
import spcxr_hub
from spcxr_hub.inference.predictions import classification_result, load_for_inference
model, processor, _ = load_for_inference({model!r})
with torch.inference_mode():
    logits = model(**processor({image!r}, return_tensors="pt")).logits
print(classification_result({image!r}, logits[0], model.config, 3))
"""
WHAT_WAS_IMPORTED = """
import atexit, runpy, sys
atexit.register(lambda: print("HEAVY", sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr))
sys.argv = ["spcxr", "predict", "--model", {model!r}, {image!r}]
runpy.run_module("spcxr_hub.cli", run_name="__main__")
"""


def spcxr_command() -> list[str]:
    script = Path(sys.executable).with_name("spcxr")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "spcxr_hub.cli"]


# Runs the command as its child and reports the child's wall time and peak RSS: started from this small process, the
# child's RSS high-water mark does not inherit the benchmark process's (fork/exec keeps the parent's).
LAUNCHER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.perf_counter() - start
print("LAUNCHER " + json.dumps({"code": code, "wall": wall,
      "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}), file=sys.stderr)
"""


def run(command: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stderr of one fresh process."""
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *command], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, errors="replace")
    lines = result.stderr.splitlines()
    report = next((json.loads(line[9:]) for line in reversed(lines) if line.startswith("LAUNCHER ")), None)
    if report is None or report["code"] != 0:
        raise RuntimeError(f"{' '.join(command)[:300]} failed: {result.stderr[-2000:]}")
    return report["wall"], report["maxrss_kb"] / 1024, result.stderr


def save_models(root: Path, settings: Settings) -> tuple[Path, Path, Path]:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from spcxr_hub.data import synthetic

    from .inference import vit_sizes
    from .pipeline import save_classifier

    ours = root / "spcxr"
    save_classifier(ours, settings)
    sizes = vit_sizes(settings)
    torch.manual_seed(0)
    peer = ViTForImageClassification(ViTConfig(
        hidden_size=sizes["hidden_size"], num_hidden_layers=sizes["num_hidden_layers"],
        num_attention_heads=sizes["num_attention_heads"], intermediate_size=sizes["intermediate_size"],
        image_size=sizes["image_size"], patch_size=16, layer_norm_eps=1e-6, qkv_bias=True,
        id2label={0: "normal", 1: "pneumonia"}, label2id={"normal": 0, "pneumonia": 1})).eval()
    peer.save_pretrained(root / "vit")
    size = sizes["image_size"]
    ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(root / "vit")
    film = synthetic.write_png8(root / "film.png", synthetic.generate(0, 96 if settings.quick else 1024).image)
    return ours, root / "vit", film


def measure(settings: Settings) -> list[Row]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="spcxr-bench-p6-") as folder:
        ours_dir, vit_dir, film = save_models(Path(folder), settings)
        commands = {
            "ours": spcxr_command() + ["predict", "--model", str(ours_dir), str(film)],
            "ours_fast": spcxr_command() + ["predict", "--fast", "--model", str(ours_dir), str(film)],
            "transformers_path": [sys.executable, "-c", TRANSFORMERS_PATH.format(model=str(ours_dir), image=str(film))],
            "pipeline": [sys.executable, "-c", PIPELINE.format(model=str(vit_dir), image=str(film))],
        }
        warmup, repeats = (0, 1) if settings.quick else (1, 5)
        for _ in range(warmup):
            for command in commands.values():
                run(command, env)
        seconds = {name: [] for name in commands}
        memory = {name: [] for name in commands}
        for round_ in range(repeats):
            order = list(commands.items())
            for name, command in order[::-1] if round_ % 2 else order:
                wall, rss, _ = run(command, env)
                seconds[name].append(wall)
                memory[name].append(rss)
        _, _, fast_stderr = run(commands["ours_fast"], env)
        fast_line = next((line for line in fast_stderr.splitlines() if line.startswith("fast path: ")), "?")
        _, _, stderr = run([sys.executable, "-c", WHAT_WAS_IMPORTED.format(
            heavy=HEAVY, model=str(ours_dir), image=str(film))], env)
    heavy = next((line[6:] for line in stderr.splitlines() if line.startswith("HEAVY ")), "?")
    wall = {name: median(values) for name, values in seconds.items()}
    rss = {name: median(values) for name, values in memory.items()}
    details = {"seconds": seconds, "peak_rss_mb": memory, "heavy_modules_imported_by_predict": heavy}
    size = "ViT-S" if not settings.quick else "tiny ViT"
    return [
        Row("P6", f"cold start: one prediction on one PNG from a fresh process, {size} (s)", "spcxr predict",
            wall["ours"], 'transformers.pipeline("image-classification")', wall["pipeline"], "s", "<= 0.6",
            notes=(f"before (Auto classes after an eager import): {wall['transformers_path']:.2f} s = "
                   f"{wall['transformers_path'] / wall['pipeline']:.2f}; heavy modules imported: {heavy}"),
            details=details),
        Row("P6", "cold start peak RSS (MB)", "spcxr predict", rss["ours"], "pipeline", rss["pipeline"], "MB", "",
            notes=f"before: {rss['transformers_path']:.0f} MB"),
        Row("P6", "cold start with --fast (s), the same film and models", "spcxr predict --fast", wall["ours_fast"],
            'transformers.pipeline("image-classification")', wall["pipeline"], "s", "<= 0.6",
            notes=f"path: {fast_line}", details={"fast_path_line": fast_line}),
    ]
