"""P2: the full GMML pretraining step against timm's bare ViT-S training step, by `benchmarks/pretrain_step.py`
(interleaved steps, warmed up, median; see that file for what each step contains)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .common import Row, Settings


def measure(settings: Settings) -> list[Row]:
    from . import pretrain_step

    with tempfile.TemporaryDirectory(prefix="spcxr-bench-p2-") as folder:
        output = Path(folder) / "p2.json"
        argv = ["--batch-size", str(settings.batch_size), "--image-size", str(settings.image_size),
                "--threads", str(settings.threads), "--warmup", str(settings.warmup),
                "--repeats", str(settings.repeats), "--device", settings.device, "--json", str(output)]
        pretrain_step.main(argv)
        result = json.loads(output.read_text())
    rate = result["images_per_second"]
    where = "GPU" if settings.device.startswith("cuda") else f"{settings.threads} threads"
    return [Row(
        "P2", f"pretraining step img/s, ViT-S fp32 (batch {settings.batch_size}, {settings.image_size}², {where})",
        "GMML step (corrupt + fwd + head + L1 + bwd + AdamW)", rate["spcxr_gmml_step"],
        "timm ViT-S fwd + bwd + AdamW", rate["timm_vit_s_step"], "img/s", ">= 0.9",
        notes=f"corruption is {100 * result['corruption_share_of_gmml_step']:.1f}% of the GMML step",
        details=result,
    )]
