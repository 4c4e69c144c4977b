"""Regenerates the README's reliability diagram (docs/images/reliability_diagram.png) and its excerpt of a card's trust
sections, from a real run: a tiny SS-CXR ViT fine-tuned from scratch on synthetic pneumonia phantoms.

    HF_HUB_OFFLINE=1 .venv/bin/python docs/card_trust_excerpt.py

The excerpt replaces the text between the README's `card-excerpt` markers: the card's Calibration, Operating points
and Prediction sets sections, quoted, their headings in bold (a quote's headings would enter the README's outline).
"""

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PICTURE = ROOT / "docs" / "images" / "reliability_diagram.png"
START, END = "<!-- card-excerpt:start -->", "<!-- card-excerpt:end -->"
SECTIONS = ("Calibration", "Operating points", "Prediction sets")


def excerpt(card: str) -> str:
    lines = []
    for heading in SECTIONS:
        body = re.split(r"\n#{2,3} ", card.split(f"\n### {heading}\n", 1)[1], maxsplit=1)[0]
        body = re.sub(r"!\[[^\]]*\]\([^)]*\)\n?", "", body).strip()  # the picture is shown beside the excerpt
        lines += [f"**{heading}**", ""] + body.splitlines() + [""]
    return "\n".join(f"> {line}".rstrip() for line in lines[:-1])


def main() -> None:
    from spcxr_hub.plugins.registry import get_task

    with tempfile.TemporaryDirectory(prefix="spcxr-excerpt-") as scratch:
        data = get_task("pneumonia").write_synthetic(Path(scratch) / "pneumonia", 40, 0)
        model = Path(scratch) / "model"
        subprocess.run([sys.executable, "-m", "spcxr_hub.cli", "finetune", "pneumonia", "--data", str(data),
                        "--output-dir", str(model), "--init", "scratch", "--config", "tiny", "--image-size", "64",
                        "--max-steps", "60", "--batch-size", "16", "--seed", "0"], check=True)
        shutil.copyfile(model / "reliability_diagram.png", PICTURE)
        quoted = excerpt((model / "README.md").read_text())
    text = README.read_text()
    before, rest = text.split(START, 1)
    README.write_text(f"{before}{START}\n{quoted}\n{END}{rest.split(END, 1)[1]}")
    print(f"wrote {PICTURE.relative_to(ROOT)} and the excerpt in {README.name}")


if __name__ == "__main__":
    main()
