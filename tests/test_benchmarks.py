import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
MEASURES = {"P1", "P2", "P3", "P4", "P5", "P6"}


def python_m(module, *args, timeout=600):
    """`python -m module args…` from the repository root, offline, as a user runs the benchmarks."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def benchmarks(*args, timeout=600):
    return python_m("benchmarks", *args, timeout=timeout)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("bench")
    # One thread: the suite runs one pytest worker per core. The record must say so (the default is 2).
    result = benchmarks("--quick", "--threads", 1, "--output-dir", output)
    assert result.returncode == 0, result.stderr[-3000:]
    return output


def test_quick_run_writes_json_with_the_machine_and_a_row_per_comparison(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    machine = results["machine"]
    assert machine["threads"] == 1 and machine["torch"] and machine["cpu"]
    assert len(machine["load_average_before"]) == 3 and len(machine["load_average_after"]) == 3
    assert machine["cpu_fast_path"]["mode"] in {"bf16", "int8"} and machine["cpu_fast_path"]["reason"]
    assert results["quick"] is True and results["errors"] == {}
    assert {row["id"] for row in results["rows"]} == MEASURES
    for row in results["rows"]:
        assert set(row) >= {"measure", "ours_label", "ours", "peer_label", "peer", "unit", "ratio", "goal", "met"}
        assert row["ours"] > 0 and row["peer"] > 0
        assert row["ratio"] == pytest.approx(row["ours"] / row["peer"])
        assert row["met"] in (True, False) if row["goal"] else row["met"] is None


def test_quick_run_writes_a_markdown_table_with_the_machine_line(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    lines = (quick_run / "results.md").read_text().splitlines()
    assert lines[0].startswith("Machine: ") and "torch threads" in lines[0] and "load average" in lines[0]
    assert "CPU fast path: " in lines[0]
    header = lines.index("| measure | ours | peer | ratio | goal | met? |")
    table = [line for line in lines[header + 2:] if line.startswith("| P")]
    assert len(table) == len(results["rows"])


def test_every_measure_states_a_goal(quick_run):
    rows = json.loads((quick_run / "results.json").read_text())["rows"]
    with_goal = {row["id"] for row in rows if row["goal"]}
    assert with_goal == MEASURES


def test_only_runs_the_named_measures(tmp_path):
    # P3, the quickest measure: this checks the selection, the quick run above checks every measure.
    result = benchmarks("--quick", "--threads", 1, "--only", "P3", "--output-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {row["id"] for row in json.loads((tmp_path / "results.json").read_text())["rows"]} == {"P3"}


def test_an_unknown_measure_is_a_usage_error(tmp_path):
    result = benchmarks("--only", "P9", "--output-dir", tmp_path, timeout=60)
    assert result.returncode == 2 and "P9" in result.stderr


def test_a_runtime_that_cannot_run_here_loses_its_row_not_the_measure(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import numpy as np
    from conftest import tiny_config_kwargs

    import spcxr_hub.hub.runtime_export as runtime_export
    import spcxr_hub.inference.runtimes as runtime_sessions
    from benchmarks import runtimes
    from spcxr_hub import SpcxrConfig, SpcxrForImageClassification

    def unsupported(*args, **kwargs):
        raise RuntimeError("Supported primitive descriptors list is empty for node: Softmax")

    monkeypatch.setattr(runtime_export, "to_openvino", lambda *args: None)  # whether or not OpenVINO is installed
    monkeypatch.setattr(runtime_sessions, "openvino_session", unsupported)
    monkeypatch.setattr(runtimes, "missing", lambda: [])
    classifier = SpcxrForImageClassification(SpcxrConfig(**tiny_config_kwargs(id2label={0: "a", 1: "b"}))).eval()
    size = classifier.config.image_size
    calibration = [np.zeros((2, 1, size, size), np.float32)]
    runs, failed = runtimes.build(classifier, calibration, tmp_path, threads=1)
    assert set(runs) == {"onnxruntime fp32", "onnxruntime static int8"}
    assert set(failed) == {"OpenVINO fp32", "OpenVINO int8 (NNCF)"} and all("Softmax" in why for why in failed.values())
