"""P4's runtime candidates: ONNX Runtime and OpenVINO graphs of an SS-CXR classifier, fp32 and static int8, built
with the same export, quantisation and session code as `spcxr export --format onnx|openvino [--int8]`
(`spcxr_hub.hub.runtime_export`, `spcxr_hub.inference.runtimes`). Runtimes that are not installed are left out
(and named in `missing`), so P4 reports every path this machine has."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

NEEDS = {"onnx": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino", "nncf")}
LABELS = {("onnx", "fp32"): "onnxruntime fp32", ("onnx", "int8"): "onnxruntime static int8",
          ("openvino", "fp32"): "OpenVINO fp32", ("openvino", "int8"): "OpenVINO int8 (NNCF)"}


def missing() -> list[str]:
    """The runtimes (onnx, openvino) whose packages are not installed here."""
    return [name for name, modules in NEEDS.items() if not all(importlib.util.find_spec(m) for m in modules)]


def build(classifier, calibration, workdir: Path, threads: int) -> tuple[dict, dict]:
    """({label: run(pixels np.float32 (B, C, H, W)) → {"logits", "features"}}, {label: why it failed}) for each
    installed runtime × precision. `calibration`: batches (np.float32) for the static int8 ranges. A runtime that
    cannot compile or run the graph on this CPU loses its row, not the whole measure."""
    from spcxr_hub.hub.runtime_export import export_onnx, quantize_onnx, to_openvino
    from spcxr_hub.inference.runtimes import onnx_session, openvino_session

    config = classifier.config
    fp32 = workdir / "fp32.onnx"
    export_onnx(copy.deepcopy(classifier), fp32, config.image_size, config.num_channels)  # its hooks stay on the copy
    probe = calibration[0][:1]

    def onnx(precision):
        if precision == "int8":
            quantize_onnx(fp32, workdir / "int8.onnx", calibration)
        return onnx_session(workdir / f"{precision}.onnx", threads)

    def openvino(precision):
        to_openvino(fp32, workdir / f"{precision}.xml", calibration if precision == "int8" else None)
        return openvino_session(workdir / f"{precision}.xml", threads, precision)

    unavailable, runs, failed = missing(), {}, {}
    for runtime, make in (("onnx", onnx), ("openvino", openvino)):
        if runtime in unavailable:
            continue
        for precision in ("fp32", "int8"):
            label = LABELS[runtime, precision]
            try:
                run = make(precision)
                run(probe)
            except Exception as error:  # noqa: BLE001 — any failure to compile or run; its message goes into the results
                failed[label] = f"{type(error).__name__}: " + " ".join(str(error).split())[:300]
                print(f"[benchmarks] {label} left out: {failed[label]}", file=sys.stderr)
            else:
                runs[label] = run
    return runs, failed
