"""What `spcxr predict` adds to each result: the gate's findings (`gate.py`) and the OOD score (`ood.py`), and the
`--gate` policy: `warn` (default) reports them, `refuse` withholds the prediction of a flagged image, `off` skips both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UsageError

__all__ = ["GATE_MODES", "InputChecks", "flag_mark", "image_findings"]

GATE_MODES = ("warn", "refuse", "off")


def image_findings(path: str | Path | None, image: np.ndarray, statistics, features: np.ndarray | None
                   ) -> tuple[list[dict], float | None]:
    """(findings, ood_score) of one decoded image: tag findings (when `path` is a file), pixel findings and, given
    the model's OOD `statistics` and the image's pooled `features` (D,), the out-of-distribution score."""
    from .gate import gate_file, pixel_findings

    findings = gate_file(path, image) if path is not None else pixel_findings(image)
    score = None
    if statistics is not None and features is not None and features.size:
        score = float(statistics.score(features[None])[0])
        findings += statistics.findings(score)
    return findings, score


class InputChecks:
    def __init__(self, model: str, mode: str, max_pixels: int):
        if mode not in GATE_MODES:
            raise UsageError(f"--gate {mode}: expected one of {', '.join(GATE_MODES)}")
        from . import ood

        self.mode, self.max_pixels = mode, max_pixels
        self.statistics = ood.load(model) if mode != "off" and Path(model).is_dir() else None
        self.notice = ood.missing_line(model) if mode != "off" and self.statistics is None else None

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def annotate(self, result: dict, path: Path | None, features: np.ndarray | None,
                 image: np.ndarray | None = None) -> dict:
        """Adds `findings` and `ood_score` to one result (of the file at `path`, or of the decoded `image`, or
        both); under `refuse`, a flagged result loses its prediction."""
        if not self.enabled:
            return result
        if image is None:
            from ..models.spcxr.imaging import load_image

            image = load_image(str(path), max_pixels=self.max_pixels)
        findings, score = image_findings(path, image, self.statistics, features)
        result["findings"], result["ood_score"] = findings, None if score is None else round(score, 3)
        if self.notice:
            result["ood_note"] = self.notice
        if findings and self.mode == "refuse":
            for key in ("predictions", "mask", "overlay", "fractions"):
                result.pop(key, None)
            result["refused"] = True
        return result


def flag_mark(result: dict) -> str:
    """The table output's marker of a flagged image: `FLAGGED(code, code)`, empty for a clean one."""
    codes = [f["code"] for f in result.get("findings") or []]
    if not codes:
        return ""
    return ("REFUSED" if result.get("refused") else "FLAGGED") + f"({', '.join(codes)})"
