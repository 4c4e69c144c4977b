"""P4's runtime candidates: ONNX Runtime and OpenVINO graphs of an SS-CXR classifier, fp32 and static int8, built
with the same export, quantisation and session code as `spcxr export --format onnx|openvino [--int8]`
(`spcxr_hub.hub.runtime_export`, `spcxr_hub.inference.runtimes`). Runtimes that are not installed are left out
(and named in `missing`), so P4 reports every path this machine has."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

NEEDS = {"onnx": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino", "nncf")}
LABELS = {("onnx", "fp32"): "onnxruntime fp32", ("onnx", "int8"): "onnxruntime static int8",
          ("openvino", "fp32"): "OpenVINO fp32", ("openvino", "int8"): "OpenVINO int8 (NNCF)"}


def missing() -> list[str]:
    """The runtimes (onnx, openvino) whose packages are not installed here."""
    return [name for name, modules in NEEDS.items() if not all(importlib.util.find_spec(m) for m in modules)]


def build(classifier, calibration, workdir: Path, threads: int) -> dict:
    """{label: run(pixels np.float32 (B, C, H, W)) → {"logits", "features"}} for each installed runtime × precision.
    `calibration`: batches (np.float32) for the static int8 ranges."""
    from spcxr_hub.hub.runtime_export import export_onnx, quantize_onnx, to_openvino
    from spcxr_hub.inference.runtimes import onnx_session, openvino_session

    config = classifier.config
    fp32 = workdir / "fp32.onnx"
    export_onnx(copy.deepcopy(classifier), fp32, config.image_size, config.num_channels)  # its hooks stay on the copy
    unavailable, runs = missing(), {}
    if "onnx" not in unavailable:
        runs[LABELS["onnx", "fp32"]] = onnx_session(fp32, threads)
        quantize_onnx(fp32, workdir / "int8.onnx", calibration)
        runs[LABELS["onnx", "int8"]] = onnx_session(workdir / "int8.onnx", threads)
    if "openvino" not in unavailable:
        to_openvino(fp32, workdir / "fp32.xml", None)
        runs[LABELS["openvino", "fp32"]] = openvino_session(workdir / "fp32.xml", threads, "fp32")
        to_openvino(fp32, workdir / "int8.xml", calibration)
        runs[LABELS["openvino", "int8"]] = openvino_session(workdir / "int8.xml", threads, "int8")
    return runs
