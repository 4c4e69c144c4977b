"""Pretraining throughput: the full SS-CXR GMML step beside timm's bare ViT-S training step.

    python benchmarks/pretrain_step.py                     # ViT-S/16, batch 32, 224², 2 threads, fp32, CPU
    python benchmarks/pretrain_step.py --json out.json     # also write the numbers

* spcxr (GMML): `gmml.corrupt` (a seeded generator) → SpcxrForMaskedImageModeling forward (backbone + reconstruction
  head on blocks 6/8/10/12) → L1 on the corrupted pixels → backward → AdamW step; what `pretrain.py` runs per
  micro-batch, data loading excluded (the same parameters frozen as there).
* timm: `vit_small_patch16_224` with `in_chans=1`, forward on the clean images → cross-entropy on fixed labels →
  backward → AdamW step.

Both on the same pre-made batch, warmed up, then interleaved (spcxr, timm, spcxr, …) so that machine noise hits both;
the figure is the median over the repeats (the best step is printed too: on a shared machine it is the steadier
one). The corruption alone is timed too, to show its share of the step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each model first")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps of each model, interleaved")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import timm

    from spcxr_hub import SpcxrConfig, SpcxrForMaskedImageModeling
    from spcxr_hub.training.gmml import CorruptionConfig, corrupt
    from spcxr_hub.training.pretraining import freeze_unused_parameters

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    b, s = args.batch_size, args.image_size
    clean = torch.randn(b, 1, s, s, device=device)
    labels = torch.randint(0, 1000, (b,), device=device)

    ours = SpcxrForMaskedImageModeling(SpcxrConfig(image_size=s)).to(device).train()
    freeze_unused_parameters(ours)
    ours_opt = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.04)
    corruption = CorruptionConfig()
    generator = torch.Generator(device=device).manual_seed(0)

    peer = timm.create_model("vit_small_patch16_224", in_chans=1, img_size=s, pretrained=False).to(device).train()
    peer_opt = torch.optim.AdamW(peer.parameters(), lr=1e-4, weight_decay=0.04)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def ours_step():
        corrupted, mask = corrupt(clean, corruption, generator=generator)
        loss = ours(pixel_values=corrupted, labels=clean, pixel_mask=mask).loss
        loss.backward()
        ours_opt.step()
        ours_opt.zero_grad(set_to_none=True)

    def peer_step():
        loss = torch.nn.functional.cross_entropy(peer(clean), labels)
        loss.backward()
        peer_opt.step()
        peer_opt.zero_grad(set_to_none=True)

    def corrupt_only():
        corrupt(clean, corruption, generator=generator)

    def timed(fn) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        ours_step()
        peer_step()
        corrupt_only()
    times = {"spcxr_gmml_step": [], "timm_vit_s_step": [], "corruption_only": []}
    for _ in range(args.repeats):
        times["spcxr_gmml_step"].append(timed(ours_step))
        times["timm_vit_s_step"].append(timed(peer_step))
        times["corruption_only"].append(timed(corrupt_only))

    median = {name: statistics.median(values) for name, values in times.items()}
    fastest = {name: min(values) for name, values in times.items()}
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": b,
        "image_size": s,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "seconds_per_step": times,
        "median_seconds": median,
        "images_per_second": {name: b / value for name, value in median.items()},
        "images_per_second_best": {name: b / value for name, value in fastest.items()},
        "corruption_share_of_gmml_step": median["corruption_only"] / median["spcxr_gmml_step"],
    }
    rate, best = result["images_per_second"], result["images_per_second_best"]
    print(f"batch {b}, {s}x{s}, {result['threads']} threads, {device}, fp32; "
          f"median of {args.repeats} interleaved steps")
    for key, label in (("spcxr_gmml_step", "spcxr GMML step (corrupt+fwd+head+L1+bwd+AdamW)"),
                       ("timm_vit_s_step", "timm vit_small_patch16_224 fwd+bwd+AdamW")):
        print(f"  {label:48s} {rate[key]:6.2f} img/s ({median[key]:.2f} s/step; best step {best[key]:.2f} img/s)")
    print(f"  corruption alone: {median['corruption_only'] * 1000:.1f} ms/batch "
          f"({100 * result['corruption_share_of_gmml_step']:.1f}% of the GMML step)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
