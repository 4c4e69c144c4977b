"""`make demo`: the whole SPCXR Hub loop on generated radiographs, on a CPU, in a few minutes.

1. GMML-pretrain a small SS-CXR on synthetic phantoms (reconstruction previews, loss curve, backbone with card).
2. Write the Kermany pneumonia layout and the Montgomery lung layout from the phantom generator.
3. Fine-tune pneumonia from the pretrained backbone and from scratch; fine-tune the UNETR lung segmenter.
4. Evaluate, predict on a DICOM and a 16-bit PNG, and run both Hugging Face pipelines on the saved models.

Every number printed is about synthetic phantoms, not patients.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def spcxr(*args: str) -> str:
    """Runs the installed CLI exactly as a user would."""
    command = [sys.executable, "-m", "spcxr_hub.cli", *map(str, args)]
    print("$ spcxr " + " ".join(map(str, args)), flush=True)
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if result.returncode:
        sys.exit(f"demo: `spcxr {args[0]}` failed with status {result.returncode}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("demo-output"))
    parser.add_argument("--pretrain-steps", type=int, default=1000)
    args = parser.parse_args()
    out = args.output_dir
    if out.exists() and any(out.iterdir()):
        sys.exit(f"demo: {out} is not empty; remove it or pass --output-dir")

    from spcxr_hub.data import synthetic
    from spcxr_hub.plugins.registry import get_task

    print("== 1. GMML pretraining on synthetic phantoms", flush=True)
    spcxr("pretrain", "--data", "synthetic", "--synthetic-size", 512, "--config", "tiny", "--image-size", 64,
          "--batch-size", 32, "--max-steps", args.pretrain_steps, "--warmup-steps", 50, "--lr", "2e-3",
          "--preview-every", 250, "--checkpoint-every", 250, "--num-workers", 0, "--report-to", "none",
          "--output-dir", out / "pretrain")
    backbone = out / "pretrain" / "backbone"

    print("== 2. Native dataset layouts from the phantom generator", flush=True)
    kermany = get_task("pneumonia").write_synthetic(out / "data" / "chest_xray", 60, 0)
    montgomery = get_task("lungseg").write_synthetic(out / "data" / "MontgomerySet", 20, 0)

    print("== 3. Fine-tuning", flush=True)
    recipe = ["--epochs", 12, "--batch-size", 32, "--lr", "2e-3", "--warmup-epochs", 1]
    spcxr("finetune", "pneumonia", "--data", kermany, "--init", backbone, "--output-dir", out / "pneumonia-ss-cxr", *recipe)
    spcxr("finetune", "pneumonia", "--data", kermany, "--init", "scratch", "--config", "tiny", "--image-size", 64,
          "--output-dir", out / "pneumonia-scratch", *recipe)
    spcxr("finetune", "lungseg", "--data", montgomery, "--init", backbone, "--output-dir", out / "lungseg",
          "--epochs", 40, "--batch-size", 8, "--lr", "2e-3", "--warmup-epochs", 2)

    print("== 4. Evaluation, prediction, pipelines", flush=True)
    film = synthetic.generate(seed=2024, size=(300, 260), findings=("pneumonia",)).image
    dicom = synthetic.write_dicom(out / "films" / "pneumonia.dcm", film, photometric="MONOCHROME1")
    png16 = synthetic.write_png16(out / "films" / "pneumonia-16bit.png", film)
    print(spcxr("predict", "--model", out / "pneumonia-ss-cxr", dicom, png16))
    spcxr("predict", "--model", out / "lungseg", dicom, "--output-dir", out / "masks")

    import spcxr_hub  # noqa: F401  (registers the Auto classes)
    from transformers import pipeline

    from spcxr_hub.models.spcxr.imaging import load_image

    classify = pipeline("image-classification", model=str(out / "pneumonia-ss-cxr"))
    segment = pipeline("image-segmentation", model=str(out / "lungseg"))
    print("pipeline(image-classification):", classify(load_image(dicom)))
    print("pipeline(image-segmentation):", [(m["label"], m["mask"].size) for m in segment(str(png16))])

    print("\n== Results on held-out SYNTHETIC phantoms (not patients)")
    for name in ("pneumonia-ss-cxr", "pneumonia-scratch", "lungseg"):
        metrics = json.loads((out / name / "metrics.json").read_text())["metrics"]
        shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
        print(f"{name:<20} {shown}")
    print(f"\nPreviews: {out / 'pretrain' / 'previews'}; plots and model cards in each model folder under {out}.")
    print("One seed at 64² says little about pretraining vs scratch; for the paired multi-seed comparison (P5), run "
          "`python -m benchmarks.fewshot_lungseg`.")


if __name__ == "__main__":
    main()
