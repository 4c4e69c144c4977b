"""The user paths on a CUDA GPU, each in a fresh process as a user runs them: GMML pretraining in bf16, fine-tuning
and its evaluation, `predict --fast`, `embed`, and a two-process DDP step. Skipped without CUDA (`-m gpu` selects
them; `-m "not gpu"` leaves them out)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from spcxr_hub.plugins.registry import get_task

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available())")]

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = str(ROOT / "pretrain.py")
TINY_PRETRAIN = ["--config", "tiny", "--image-size", "32", "--num-workers", "0", "--log-every", "1",
                 "--report-to", "none", "--warmup-steps", "1", "--preview-every", "0", "--data", "synthetic",
                 "--synthetic-size", "16", "--batch-size", "4"]
TINY_FINETUNE = ["--init", "scratch", "--config", "tiny", "--image-size", "64", "--batch-size", "8"]


def env(**extra) -> dict:
    """The test's environment without a launcher's leftovers (a stray ACCELERATE_USE_CPU would move it off the GPU)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WORLD_SIZE", "LOCAL_", "RANK"))}
    clean.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **extra)
    return clean


def run(*args, timeout=300, **extra) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *map(str, args)], env=env(**extra), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def spcxr(*args, **kwargs) -> subprocess.CompletedProcess:
    return run("-m", "spcxr_hub.cli", *args, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def pneumonia(tmp_path_factory):
    return get_task("pneumonia").write_synthetic(tmp_path_factory.mktemp("gpu-data") / "pneumonia", 4, 0)


@pytest.fixture(scope="module")
def finetuned(pneumonia, tmp_path_factory):
    """`spcxr finetune` on the GPU (accelerate places the model there) in bf16 mixed precision; its evaluation of
    the test split runs on the GPU model at the end."""
    output = tmp_path_factory.mktemp("gpu-models") / "pneumonia"
    spcxr("finetune", "pneumonia", "--data", pneumonia, "--output-dir", output, "--max-steps", 2, *TINY_FINETUNE,
          ACCELERATE_MIXED_PRECISION="bf16")
    return output


def test_pretraining_runs_two_steps_in_bf16(tmp_path):
    out = tmp_path / "run"
    run(PRETRAIN, *TINY_PRETRAIN, "--max-steps", "2", "--mixed-precision", "bf16", "--checkpoint-every", "2",
        "--output-dir", out)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["mixed_precision"] == "bf16"
    assert all(math.isfinite(entry["loss"]) for entry in state["log_history"])
    assert (out / "backbone" / "model.safetensors").is_file() and (out / "checkpoints" / "step-00000002").is_dir()


def test_fine_tuning_on_the_gpu_evaluates_its_test_split(finetuned):
    report = json.loads((finetuned / "metrics.json").read_text())
    assert report["num_images"] > 0 and "accuracy" in report["metrics"]


def test_evaluate_on_cuda_gives_the_cpus_metrics(finetuned, pneumonia, tmp_path):
    reports = {}
    for device in ("cuda", "cpu"):
        spcxr("evaluate", "pneumonia", "--model", finetuned, "--data", pneumonia, "--device", device,
              "--output-dir", tmp_path / device)
        reports[device] = json.loads((tmp_path / device / "metrics.json").read_text())
    count = reports["cpu"]["num_images"]
    assert reports["cuda"]["num_images"] == count > 0 and reports["cuda"]["metrics"].keys() == reports["cpu"]["metrics"].keys()
    # TF32 convolutions (PyTorch's GPU default) may flip at most a near-tie of the barely trained model
    assert abs(reports["cuda"]["metrics"]["accuracy"] - reports["cpu"]["metrics"]["accuracy"]) <= 1 / count + 1e-9


def test_predict_fast_on_cuda_runs_bf16_and_says_so(finetuned, pneumonia):
    films = pneumonia / "test"
    fast = spcxr("predict", "--model", finetuned, films, "--fast", "--device", "cuda", "--json")
    assert [line for line in fast.stderr.splitlines() if line.startswith("fast path: ")] == [
        f"fast path: bf16 on CUDA ({torch.cuda.get_device_name(0)}, SDPA attention)"]
    results = json.loads(fast.stdout)
    reference = json.loads(spcxr("predict", "--model", finetuned, films, "--device", "cpu", "--json").stdout)
    assert [r["file"] for r in results] == [r["file"] for r in reference] and results
    assert all(r["fast_path"]["mode"] == "cuda" for r in results)
    for got, expected in zip(results, reference):
        scores = {p["label"]: p["score"] for p in expected["predictions"]}
        assert all(abs(p["score"] - scores[p["label"]]) < 0.05 for p in got["predictions"])  # bf16 vs fp32


def test_embed_on_cuda_gives_the_cpus_vectors(finetuned, pneumonia, tmp_path):
    tables = {}
    for device in ("cuda", "cpu"):
        spcxr("embed", "--model", finetuned, pneumonia / "test", "--device", device,
              "--output", tmp_path / f"{device}.parquet")
        tables[device] = pq.read_table(tmp_path / f"{device}.parquet").to_pydict()
    assert tables["cuda"]["file"] == tables["cpu"]["file"]
    # TF32 convolutions on the GPU (PyTorch's default) round more than the CPU's fp32
    torch.testing.assert_close(torch.tensor(tables["cuda"]["cls"]), torch.tensor(tables["cpu"]["cls"]),
                               rtol=1e-2, atol=1e-2)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="a two-process DDP step needs two GPUs")
def test_two_process_ddp_step_on_two_gpus_keeps_parameters_identical(tmp_path):
    debug, out = tmp_path / "debug", tmp_path / "run"
    run("-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "bf16", "--dynamo_backend", "no", "--main_process_port", free_port(),
        PRETRAIN, *TINY_PRETRAIN, "--max-steps", "2", "--checkpoint-every", "2", "--output-dir", out,
        timeout=600, SPCXR_PRETRAIN_DEBUG_DIR=str(debug))
    ranks = [json.loads((debug / f"debug-rank{rank}.json").read_text()) for rank in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert not set(ranks[0]["samples"]) & set(ranks[1]["samples"])  # each process sees its own images
    assert ranks[0]["param_hashes"] == ranks[1]["param_hashes"] and len(set(ranks[0]["param_hashes"])) == 2
    assert json.loads((out / "trainer_state.json").read_text())["num_processes"] == 2
    assert (out / "checkpoints" / "step-00000002" / "spcxr_checkpoint.json").is_file()
