import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import torch
from conftest import spcxr, tiny_config_kwargs

from spcxr_hub import SpcxrConfig, SpcxrForImageClassification, SpcxrImageProcessor, SpcxrModel
from spcxr_hub.inference.devices import DeviceError, model_device, resolve_device, to_device
from spcxr_hub.evaluation.evaluate import predict
from spcxr_hub.plugins.registry import get_task
from spcxr_hub.hub.saving import save_model_directory


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture(scope="module")
def pneumonia(tmp_path_factory):
    """A tiny pneumonia classifier directory, a backbone directory and the task's data in its native layout."""
    root = tmp_path_factory.mktemp("devices")
    task = get_task("pneumonia")
    torch.manual_seed(0)
    processor = SpcxrImageProcessor(size={"height": 64, "width": 64})
    config = SpcxrConfig(**tiny_config_kwargs(id2label=dict(enumerate(task.labels))))
    classifier = save_model_directory(root / "classifier", SpcxrForImageClassification(config).eval(), processor)
    backbone = save_model_directory(root / "backbone", SpcxrModel(SpcxrConfig(**tiny_config_kwargs())).eval(), processor)
    return SimpleNamespace(task=task, classifier=classifier, backbone=backbone, data=task.write_synthetic(root / "data", 2, 0))


# ------------------------------------------------------------------------------------------------- resolve_device


def test_auto_is_the_cpu_without_cuda_or_mps(no_gpu):
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")


def test_cpu_is_always_available():
    assert resolve_device("cpu") == resolve_device("CPU") == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "meta", ""])
def test_an_unknown_device_is_a_user_error_naming_the_option(name):
    with pytest.raises(DeviceError, match=r"--device .*expected auto, cpu, cuda, cuda:N or mps"):
        resolve_device(name)


def test_cuda_without_a_gpu_is_a_user_error_pointing_at_the_cpu(no_gpu):
    with pytest.raises(DeviceError, match="--device cuda: CUDA is not available.*use --device cpu"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="--device mps: Apple MPS is not available"):
        resolve_device("mps")


def test_a_cuda_index_beyond_the_gpus_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceError, match="--device cuda:2: this machine has 2 CUDA device"):
        resolve_device("cuda:2")


# ------------------------------------------------------------------------------------------------- to_device


def test_to_device_moves_every_tensor_of_a_nested_batch_and_nothing_else():
    batch = {"pixel_values": torch.zeros(2, 1, 4, 4), "index": torch.arange(2), "pair": (torch.ones(1), [torch.ones(1)]),
             "name": "films"}
    moved = to_device(batch, "meta")  # another device than the CPU, on every machine
    assert moved["pixel_values"].device.type == moved["index"].device.type == "meta"
    assert moved["pair"][0].device.type == moved["pair"][1][0].device.type == "meta"
    assert isinstance(moved["pair"], tuple) and moved["name"] == "films"
    assert batch["pixel_values"].device.type == "cpu"  # the input is left as it was


def test_model_device_is_where_the_parameters_are():
    assert model_device(torch.nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")


# ------------------------------------------------------------------------------------------------- inference loops


class DeviceCheckingClassifier(torch.nn.Module):
    """A stand-in classifier with its weights on the 'meta' device: it fails unless each batch is put on its device,
    and returns CPU logits (what a real model on another device gives after `.cpu()`)."""

    def __init__(self, num_labels: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(num_labels, device="meta"))
        self.seen = []

    def forward(self, pixel_values):
        assert pixel_values.device == self.weight.device, f"batch on {pixel_values.device}, model on {self.weight.device}"
        self.seen.append(pixel_values.shape[0])
        return SimpleNamespace(logits=torch.zeros(pixel_values.shape[0], self.weight.shape[0]))


def test_evaluation_predict_puts_each_batch_on_the_models_device(pneumonia):
    from spcxr_hub.data.records import load_records

    records = load_records(pneumonia.task, str(pneumonia.data), "test")
    model = DeviceCheckingClassifier(len(pneumonia.task.labels))
    processor = SpcxrImageProcessor(size={"height": 64, "width": 64})
    predictions = predict(model, processor, pneumonia.task, records, batch_size=3, progress=False)
    assert sum(model.seen) == len(records) == len(predictions["indices"])
    assert all(score.shape == (len(pneumonia.task.labels),) for score in predictions["scores"])


@pytest.mark.parametrize("command", ["predict", "evaluate", "embed"])
def test_an_unknown_device_on_the_command_line_is_one_line_and_exit_2(command, tmp_path):
    args = {"predict": ["predict", "--model", tmp_path, tmp_path],
            "evaluate": ["evaluate", "pneumonia", "--model", tmp_path, "--data", tmp_path],
            "embed": ["embed", "--model", tmp_path, tmp_path, "--output", tmp_path / "e.parquet"]}[command]
    result = spcxr(*args, "--device", "tpu", expect=2)
    assert result.stderr.strip().splitlines() == ["error: --device 'tpu': unknown device; expected auto, cpu, cuda, "
                                                  "cuda:N or mps"]


def test_predict_gives_the_same_scores_on_device_cpu_and_auto(pneumonia, no_gpu):
    films = pneumonia.data / "test"
    default, cpu, auto = (json.loads(spcxr("predict", "--model", pneumonia.classifier, films, "--json", *extra).stdout)
                          for extra in ([], ["--device", "cpu"], ["--device", "auto"]))
    assert default == cpu == auto and len(cpu) > 0


def test_evaluate_runs_on_device_cpu_and_auto(pneumonia, no_gpu, tmp_path):
    reports = []
    for device in ("cpu", "auto"):
        spcxr("evaluate", "pneumonia", "--model", pneumonia.classifier, "--data", pneumonia.data, "--device", device,
              "--output-dir", tmp_path / device)
        reports.append(json.loads((tmp_path / device / "metrics.json").read_text()))
    assert reports[0]["metrics"] == reports[1]["metrics"] and reports[0]["num_images"] > 0


def test_embed_gives_the_same_vectors_on_device_cpu_and_auto(pneumonia, no_gpu, tmp_path):
    tables = []
    for device in ("cpu", "auto"):
        spcxr("embed", "--model", pneumonia.backbone, pneumonia.data / "test", "--device", device,
              "--output", tmp_path / f"{device}.parquet")
        tables.append(pq.read_table(tmp_path / f"{device}.parquet").to_pydict())
    assert tables[0] == tables[1] and len(tables[0]["cls"][0]) == 32
