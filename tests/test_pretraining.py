import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from spcxr_hub.data import synthetic  # noqa: E402
from spcxr_hub.errors import UsageError  # noqa: E402
from spcxr_hub.training import pretraining  # noqa: E402
from spcxr_hub.training.augmentation import Augmentation  # noqa: E402
from spcxr_hub.training.pretraining_data import EpochBatchSampler  # noqa: E402
from spcxr_hub.training.pretraining_outputs import save_backbone  # noqa: E402
from spcxr_hub.training.schedules import learning_rate_at, scaled_learning_rate, weight_decay_at  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = str(ROOT / "pretrain.py")
SPCXR = str(Path(sys.executable).parent / "spcxr")
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]
# The four ways to run pretraining (README, docs/pretraining.md): one command, one set of options.
ENTRY_POINTS = {
    "python pretrain.py": [sys.executable, PRETRAIN],
    "accelerate launch pretrain.py": [*LAUNCH, PRETRAIN],
    "accelerate launch -m spcxr_hub.cli pretrain": [*LAUNCH, "-m", "spcxr_hub.cli", "pretrain"],
    "spcxr pretrain": [SPCXR, "pretrain"],
}
# A tiny ViT at 32×32 (2×2 patches): a step takes milliseconds on a CPU.
TINY = ["--config", "tiny", "--image-size", "32", "--num-workers", "0", "--log-every", "1", "--report-to", "none",
        "--warmup-steps", "1", "--preview-every", "0", "--checkpoint-every", "0"]
SYNTHETIC = ["--data", "synthetic", "--synthetic-size", "16", "--batch-size", "4"]


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def main(argv) -> int:
    """`pretraining.main` in this process, as a fresh process would run it (accelerate keeps process-wide state)."""
    _reset_accelerate()
    return pretraining.main(argv)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    # one thread: the tiny model gains nothing from more, and a busy machine makes OpenMP threads wait on each other
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    _reset_accelerate()


def _subprocess_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WORLD_SIZE", "LOCAL_", "RANK"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _trainer_state(output: Path) -> dict:
    return json.loads((output / "trainer_state.json").read_text())


def _write_folder(root: Path, count: int, size: int = 48) -> list[Path]:
    paths = []
    for i in range(count):
        path = root / f"site{i % 2}" / f"img{i:02d}.png"
        synthetic.write_png8(path, synthetic.generate(i, size).image)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------------- a whole run


def test_tiny_synthetic_run_writes_backbone_preview_loss_curve_and_logs(tmp_path):
    from transformers import AutoImageProcessor, AutoModel

    from spcxr_hub import SpcxrModel

    out = tmp_path / "run"
    argv = [*TINY, *SYNTHETIC, "--max-steps", "4", "--output-dir", str(out), "--report-to", "tensorboard",
            "--preview-every", "2", "--checkpoint-every", "2"]
    assert main(argv) == 0

    backbone = AutoModel.from_pretrained(out / "backbone")
    assert isinstance(backbone, SpcxrModel) and backbone.config.image_size == 32
    remote = AutoModel.from_pretrained(out / "backbone", trust_remote_code=True)
    assert type(remote).__name__ == "SpcxrModel"
    processor = AutoImageProcessor.from_pretrained(out / "backbone")
    assert processor.size == {"height": 32, "width": 32}
    assert backbone(**processor(np.random.rand(50, 40).astype(np.float32))).last_hidden_state.shape == (1, 5, 64)
    assert set(json.loads((out / "backbone" / "config.json").read_text())["auto_map"]) >= {"AutoModel", "AutoConfig"}

    card = card_body(out / "backbone")
    assert "synthetic data" in card[0] and "synthetic phantom" in card[2].lower()
    state = _trainer_state(out)
    assert state["global_step"] == 4 and [e["step"] for e in state["log_history"]] == [1, 2, 3, 4]
    assert f"{state['final_loss']:.4f}" in "\n".join(card)
    for key in ("loss", "lr", "weight_decay", "images_per_second"):
        assert all(math.isfinite(e[key]) for e in state["log_history"]), key

    for png in (out / "previews" / "step-00000002.png", out / "previews" / "final.png", out / "loss_curve.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert list((out / "logs").rglob("events.out.tfevents.*")), "no TensorBoard event file"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert not list(out.rglob("*.partial*")), "a temporary file or folder was left behind"


@pytest.mark.training
def test_loss_decreases_over_a_short_run_on_synthetic_data(tmp_path, seed, record_property):
    out = tmp_path / "run"
    argv = [*TINY, "--data", "synthetic", "--synthetic-size", "32", "--batch-size", "8", "--max-steps", "80",
            "--lr", "5e-3", "--warmup-steps", "5", "--seed", str(seed), "--output-dir", str(out)]
    assert main(argv) == 0
    losses = [entry["loss"] for entry in _trainer_state(out)["log_history"]]
    assert len(losses) == 80
    ratio = float(np.mean(losses[-10:]) / np.mean(losses[:4]))
    record_property("late_to_early_loss_ratio", ratio)
    assert ratio < 0.8, losses  # measured: 0.90 → 0.60


# ----------------------------------------------------------------------------------------------------- data


def test_folder_data_skips_unreadable_files_and_lists_them(tmp_path, capsys):
    data = tmp_path / "images"
    _write_folder(data, 8)
    broken = data / "site0" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    out = tmp_path / "run"
    # 9 files, global batch 3: one epoch visits every file
    assert main([*TINY, "--data", str(data), "--batch-size", "3", "--epochs", "1", "--output-dir", str(out)]) == 0
    log = (out / "unreadable_images.log").read_text().splitlines()
    assert len(log) == 1 and str(broken) in log[0]
    assert _trainer_state(out)["unreadable_images"] == 1
    assert "skipped 1 unreadable image" in capsys.readouterr().err
    assert (out / "backbone" / "model.safetensors").is_file()
    assert "synthetic" not in (out / "backbone" / "README.md").read_text().splitlines()[0]


def test_a_folder_marked_synthetic_is_declared_in_the_model_card(tmp_path):
    from spcxr_hub.data.records import SYNTHETIC_MARKER

    data = tmp_path / "phantoms"
    _write_folder(data, 4)
    (data / SYNTHETIC_MARKER).write_text("synthetic")
    out = tmp_path / "run"
    assert main([*TINY, "--data", str(data / "site0"), "--batch-size", "2", "--max-steps", "1",
                 "--output-dir", str(out)]) == 0
    card = card_body(out / "backbone")
    assert "synthetic data" in card[0] and "synthetic phantom" in card[2].lower()
    assert _trainer_state(out)["synthetic_data"] is True


def test_strict_makes_the_first_unreadable_file_an_error(tmp_path, capsys):
    data = tmp_path / "images"
    _write_folder(data, 5)
    broken = data / "site1" / "broken.dcm"
    broken.write_bytes(b"garbage")
    out = tmp_path / "run"
    argv = [*TINY, "--data", str(data), "--batch-size", "3", "--epochs", "1", "--strict", "--output-dir", str(out)]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "--strict" in err[0] and str(broken) in err[0], err
    assert not (out / "backbone").exists()


def _fake_hub(monkeypatch, dataset):
    import datasets

    calls = []

    def load_dataset(path, split=None, streaming=False, **kwargs):
        calls.append((path, split, streaming))
        return dataset.to_iterable_dataset(num_shards=2) if streaming else dataset

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def _hub_images(count: int):
    import datasets
    from PIL import Image

    images = [Image.fromarray((synthetic.generate(i, 40).image * 255).astype(np.uint8)) for i in range(count)]
    features = datasets.Features({"scan": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"scan": images, "label": [i % 2 for i in range(count)]}, features=features)


def test_hub_dataset_image_column_is_detected_by_its_feature(tmp_path, monkeypatch):
    calls = _fake_hub(monkeypatch, _hub_images(8))
    out = tmp_path / "run"
    argv = [*TINY, "--data", "someone/cxr", "--batch-size", "4", "--max-steps", "2", "--output-dir", str(out)]
    assert main(argv) == 0
    assert calls == [("someone/cxr", "train", False)]
    state = _trainer_state(out)
    assert state["global_step"] == 2 and "column scan" in state["data"]


def test_streaming_hub_dataset_trains_with_max_steps(tmp_path, monkeypatch):
    calls = _fake_hub(monkeypatch, _hub_images(8))
    out = tmp_path / "run"
    argv = [*TINY, "--data", "someone/cxr", "--streaming", "--batch-size", "2", "--max-steps", "6",
            "--shuffle-buffer", "4", "--output-dir", str(out)]
    assert main(argv) == 0  # 6 steps of 2 from 8 images: the stream is read again for a second epoch
    assert calls == [("someone/cxr", "train", True)]
    assert _trainer_state(out)["global_step"] == 6


def test_streaming_resume_continues_the_same_stream(tmp_path, monkeypatch):
    _fake_hub(monkeypatch, _hub_images(8))
    argv = [*TINY, "--data", "someone/cxr", "--streaming", "--batch-size", "2", "--max-steps", "7",
            "--shuffle-buffer", "4", "--checkpoint-every", "5"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert main([*argv, "--output-dir", str(whole)]) == 0
    # as if the run had died after step 5 (mid second epoch): its checkpoint alone, resumed elsewhere
    shutil.copytree(whole / "checkpoints" / "step-00000005", part / "checkpoints" / "step-00000005")
    assert main([*argv, "--output-dir", str(part), "--resume"]) == 0
    assert _trainer_state(part)["global_step"] == 7
    weights = [(out / "backbone" / "model.safetensors").read_bytes() for out in (whole, part)]
    assert weights[0] == weights[1]


def test_augmentation_depends_only_on_seed_epoch_and_index():
    augment = Augmentation(size=32)
    image = synthetic.generate(3, 64).image
    first = augment(image, np.random.default_rng([0, 1, 2]))
    again = augment(image, np.random.default_rng([0, 1, 2]))
    other = augment(image, np.random.default_rng([0, 2, 2]))
    assert first.shape == (1, 32, 32) and first.dtype == torch.float32
    assert torch.equal(first, again) and not torch.equal(first, other)
    plain = augment.plain(np.full((10, 20), 0.5, np.float32))
    assert torch.allclose(plain, torch.zeros(1, 32, 32))  # (0.5 - 0.5) / 0.25: SpcxrImageProcessor's normalisation


def test_horizontal_flip_is_off_by_default_and_optional():
    image = np.zeros((64, 64), np.float32)
    image[:, 40:] = 1.0  # bright on the image's right, like the heart of a PA film
    full = dict(size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter_p=0.0, blur_p=0.0)
    never = [Augmentation(**full)(image, np.random.default_rng(i))[0, :, -1].mean() for i in range(20)]
    sometimes = [Augmentation(**full, hflip=True)(image, np.random.default_rng(i))[0, :, -1].mean() for i in range(20)]
    assert all(v > 1.0 for v in never)
    assert any(v < 0.0 for v in sometimes) and any(v > 1.0 for v in sometimes)


def test_batches_give_each_process_different_images_and_resume_mid_epoch():
    kwargs = dict(seed=3, batch_size=2, num_processes=2, grad_accum=2)
    ranks = [list(EpochBatchSampler(20, 1, process_index=r, **kwargs)) for r in range(2)]
    seen = [{i for batch in r for _, i in batch} for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 8 and not seen[0] & seen[1]  # 20 // 8 = 2 steps of 8 images
    assert all(epoch == 1 for r in ranks for batch in r for epoch, _ in batch)
    tail = list(EpochBatchSampler(20, 1, process_index=0, start=2, **kwargs))
    assert tail == ranks[0][2:]
    assert list(EpochBatchSampler(20, 2, process_index=0, **kwargs)) != ranks[0]  # a new order each epoch


# ----------------------------------------------------------------------------------------------------- schedules


def test_learning_rate_scales_with_the_global_batch():
    assert scaled_learning_rate(256) == pytest.approx(5e-4)
    assert scaled_learning_rate(64 * 4) == pytest.approx(5e-4)
    assert scaled_learning_rate(32) == pytest.approx(5e-4 / 8)
    assert scaled_learning_rate(512, base_lr=1e-3) == pytest.approx(2e-3)


def test_default_learning_rate_uses_batch_processes_and_accumulation(tmp_path):
    out = tmp_path / "run"
    assert main([*TINY, *SYNTHETIC[:-2], "--batch-size", "2", "--grad-accum", "3", "--max-steps", "1",
                 "--output-dir", str(out)]) == 0
    assert _trainer_state(out)["peak_learning_rate"] == pytest.approx(5e-4 * 6 / 256)


def test_learning_rate_warms_up_linearly_then_follows_a_cosine_to_the_minimum():
    kw = dict(total_steps=110, warmup_steps=10, peak=1e-3, minimum=1e-6)
    warm = [learning_rate_at(s, **kw) for s in range(10)]
    assert warm == pytest.approx([1e-3 * (s + 1) / 10 for s in range(10)])
    assert learning_rate_at(10, **kw) == pytest.approx(1e-3)
    assert learning_rate_at(60, **kw) == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6))
    assert learning_rate_at(110, **kw) == pytest.approx(1e-6)
    decay = [learning_rate_at(s, **kw) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert learning_rate_at(0, total_steps=5, warmup_steps=0, peak=1.0, minimum=0.0) == pytest.approx(1.0)


def test_weight_decay_follows_a_cosine_from_start_to_end():
    kw = dict(total_steps=100, start=0.04, end=0.4)
    assert weight_decay_at(0, **kw) == pytest.approx(0.04)
    assert weight_decay_at(50, **kw) == pytest.approx(0.22)
    assert weight_decay_at(100, **kw) == pytest.approx(0.4)
    values = [weight_decay_at(s, **kw) for s in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))


# ----------------------------------------------------------------------------------------------------- bad input


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_empty_folder_is_an_error(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    out = tmp_path / "run"
    assert main([*TINY, "--data", str(tmp_path / "empty"), "--max-steps", "1", "--output-dir", str(out)]) == 2
    assert "no images found" in _error_line(capsys)
    assert not out.exists()


def test_hub_dataset_without_an_image_column_is_an_error(tmp_path, monkeypatch, capsys):
    import datasets

    _fake_hub(monkeypatch, datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}))
    out = tmp_path / "run"
    assert main([*TINY, "--data", "someone/reports", "--max-steps", "1", "--output-dir", str(out)]) == 2
    line = _error_line(capsys)
    assert "no image column" in line and "text, label" in line and "--image-column" in line
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "-4"])
def test_non_positive_batch_size_is_an_error(tmp_path, capsys, value):
    out = tmp_path / "run"
    assert main([*TINY, *SYNTHETIC[:-2], "--batch-size", value, "--output-dir", str(out)]) == 2
    assert "--batch-size" in _error_line(capsys)
    assert not out.exists()


def test_config_can_be_a_json_file(tmp_path):
    from conftest import tiny_config_kwargs

    from spcxr_hub import SpcxrConfig

    path = tmp_path / "my-vit.json"
    SpcxrConfig(**tiny_config_kwargs(hidden_size=48, num_attention_heads=3)).to_json_file(path)
    out = tmp_path / "run"
    argv = [*TINY, *SYNTHETIC, "--config", str(path), "--max-steps", "1", "--mask-fill", "zeros",
            "--output-dir", str(out)]
    assert main(argv) == 0
    saved = json.loads((out / "backbone" / "config.json").read_text())
    assert (saved["hidden_size"], saved["image_size"], saved["mask_fill"]) == (48, 32, "zeros")


@pytest.mark.parametrize("option, value, expected", [
    ("--image-size", "40", "must be a multiple of patch_size"),
    ("--mask-ratio", "1.0", "mask_ratio must be"),
    ("--config", "vit-xxl", "neither a preset"),
])
def test_invalid_model_or_corruption_settings_are_errors(tmp_path, capsys, option, value, expected):
    out = tmp_path / "run"
    assert main([*TINY, *SYNTHETIC, "--max-steps", "1", option, value, "--output-dir", str(out)]) == 2
    assert expected in _error_line(capsys)
    assert not out.exists()


def test_resume_from_a_missing_checkpoint_is_an_error(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*TINY, *SYNTHETIC, "--max-steps", "1", "--output-dir", str(out)]
    assert main([*argv, "--resume", str(tmp_path / "nope")]) == 2
    assert "no such checkpoint" in _error_line(capsys)
    assert main([*TINY, *SYNTHETIC, "--max-steps", "1", "--output-dir", str(out), "--resume"]) == 2
    assert "no checkpoint under" in _error_line(capsys)
    assert not out.exists()


def test_resume_with_another_configuration_is_an_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*TINY, *SYNTHETIC, "--max-steps", "2", "--checkpoint-every", "2", "--output-dir", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main([*argv, "--resume", "--image-size", "48"]) == 2
    line = _error_line(capsys)
    assert "another configuration" in line and "image_size: 32 → 48" in line
    assert main([*argv, "--resume", "--seed", "7"]) == 2
    assert "seed: 0 → 7" in _error_line(capsys)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_existing_output_dir_is_not_overwritten_without_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main([*TINY, *SYNTHETIC, "--max-steps", "1", "--output-dir", str(out)]) == 2
    assert "already exists" in _error_line(capsys)
    assert main([*TINY, *SYNTHETIC, "--max-steps", "1", "--output-dir", str(out), "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "backbone").is_dir()


def test_a_launch_that_accelerate_does_not_connect_is_detected():
    from types import SimpleNamespace

    alone = SimpleNamespace(num_processes=1, device=torch.device("cpu"))
    with pytest.raises(UsageError, match="ACCELERATE_USE_CPU=1"):
        pretraining.check_launch(alone, {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "1"})
    pretraining.check_launch(alone, {})  # plain `python pretrain.py`
    pretraining.check_launch(SimpleNamespace(num_processes=2, device=torch.device("cpu")), {"WORLD_SIZE": "2"})


def test_unused_parameters_are_frozen_so_ddp_needs_no_unused_parameter_search():
    from spcxr_hub import SpcxrConfig, SpcxrForMaskedImageModeling

    from conftest import tiny_config_kwargs

    for layers in ([2, 3, 4], [2, 3]):
        config = SpcxrConfig(**tiny_config_kwargs(image_size=32, reconstruction_layers=layers))
        model = SpcxrForMaskedImageModeling(config)
        frozen = pretraining.freeze_unused_parameters(model)
        x = torch.randn(2, 1, 32, 32)
        model(pixel_values=x, labels=x, pixel_mask=torch.ones(2, 1, 32, 32, dtype=torch.bool)).loss.backward()
        assert sorted(frozen) == sorted(n for n, p in model.named_parameters() if p.grad is None)
        assert ("spcxr.layers.3.mlp.fc1.weight" in frozen) == (layers == [2, 3])
        assert not any(name.startswith("spcxr.layernorm.") for name, _ in model.named_parameters())


def test_saved_backbone_has_the_trained_blocks_and_the_final_layernorm_at_its_init(tmp_path):
    from spcxr_hub import SpcxrConfig, SpcxrForMaskedImageModeling, SpcxrModel

    from conftest import tiny_config_kwargs

    config = SpcxrConfig(**tiny_config_kwargs(image_size=32))
    model = SpcxrForMaskedImageModeling(config)
    save_backbone(tmp_path / "backbone", model.state_dict(), config)
    backbone = SpcxrModel.from_pretrained(tmp_path / "backbone")
    torch.testing.assert_close(backbone.layers[3].mlp.fc1.weight, model.spcxr.layers[3].mlp.fc1.weight)
    torch.testing.assert_close(backbone.layernorm.weight, torch.ones(config.hidden_size))
    torch.testing.assert_close(backbone.layernorm.bias, torch.zeros(config.hidden_size))


# ----------------------------------------------------------------------------------------------------- entry points


def _flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", text))


def test_every_entry_point_offers_the_options_of_pretrain_options():
    from dataclasses import fields

    from spcxr_hub.training.pretraining_options import PretrainOptions

    expected = {f"--{f.name.replace('_', '-')}" for f in fields(PretrainOptions)} | {"--help"}
    for name, command in ENTRY_POINTS.items():
        done = subprocess.run([*command, "--help"], env=_subprocess_env(COLUMNS="250"), capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, (name, done.stderr[-2000:])
        assert _flags(done.stdout) == expected, (name, _flags(done.stdout) ^ expected)


@pytest.mark.parametrize("name", ["python pretrain.py", "spcxr pretrain"])
def test_a_bad_value_is_one_line_naming_the_option_and_exit_status_2(tmp_path, name):
    done = subprocess.run([*ENTRY_POINTS[name], *SYNTHETIC, "--batch-size", "0", "--output-dir", str(tmp_path / "o")],
                          env=_subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "'--batch-size': must be a positive integer, got 0" in line, line


def test_python_pretrain_py_and_spcxr_pretrain_are_the_same_program(tmp_path):
    argv = [*TINY, *SYNTHETIC, "--max-steps", "2"]
    for name in ("python pretrain.py", "spcxr pretrain"):
        out = tmp_path / name.split()[-1]
        done = subprocess.run([*ENTRY_POINTS[name], *argv, "--output-dir", str(out)], env=_subprocess_env(),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (name, done.stderr[-2000:])
    weights = [(tmp_path / run / "backbone" / "model.safetensors").read_bytes() for run in ("pretrain.py", "pretrain")]
    assert weights[0] == weights[1]
    options = [_trainer_state(tmp_path / run)["args"] for run in ("pretrain.py", "pretrain")]
    assert {k: v for k, v in options[0].items() if k != "output_dir"} == {
        k: v for k, v in options[1].items() if k != "output_dir"}


def test_the_command_line_builds_the_pretrain_command_without_torch():
    code = ("import sys, spcxr_hub.cli\n"
            "print(sorted(m for m in ('numpy', 'torch', 'transformers', 'accelerate') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env=_subprocess_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


# ----------------------------------------------------------------------------------------------------- processes


def test_resume_after_sigkill_ends_with_bitwise_identical_weights(tmp_path):
    argv = [PRETRAIN, *TINY, "--data", "synthetic", "--synthetic-size", "24", "--batch-size", "4",
            "--max-steps", "40", "--checkpoint-every", "5", "--keep-checkpoints", "2"]
    env = _subprocess_env()
    whole, killed = tmp_path / "whole", tmp_path / "killed"

    victim = subprocess.Popen([sys.executable, *argv, "--output-dir", str(killed)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list((killed / "checkpoints").glob("step-*/spcxr_checkpoint.json")):
        assert victim.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not (killed / "backbone").exists()
    # The uninterrupted run in this process (one thread, as the subprocesses): it saves a third fresh interpreter.
    assert main([*argv[1:], "--output-dir", str(whole)]) == 0

    resumed = subprocess.run([sys.executable, *argv, "--output-dir", str(killed), "--resume", "latest"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    step = int(resumed.stdout.split("at step ")[1].split()[0])
    assert 0 < step < 40, resumed.stdout
    a = (whole / "backbone" / "model.safetensors").read_bytes()
    b = (killed / "backbone" / "model.safetensors").read_bytes()
    assert a == b, "the resumed run's weights differ from the uninterrupted run's"
    losses = [[e["loss"] for e in _trainer_state(out)["log_history"]] for out in (whole, killed)]
    assert losses[0] == losses[1] and len(losses[0]) == 40


def test_two_process_ddp_on_cpu_shards_data_and_keeps_parameters_identical(tmp_path):
    debug = tmp_path / "debug"
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           PRETRAIN, *TINY, "--data", "synthetic", "--synthetic-size", "16", "--batch-size", "2",
           "--max-steps", "3", "--output-dir", str(out)]
    env = _subprocess_env(ACCELERATE_USE_CPU="1", **{pretraining.DEBUG_ENV: str(debug)})
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((debug / f"debug-rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["process_index"] for r in ranks] == [0, 1]
    samples = [r["samples"] for r in ranks]
    assert len(samples[0]) == len(samples[1]) == 6 and not set(samples[0]) & set(samples[1])
    assert len(ranks[0]["param_hashes"]) == 3 and ranks[0]["param_hashes"] == ranks[1]["param_hashes"]
    assert len(set(ranks[0]["param_hashes"])) == 3  # the parameters did change at every step
    state = _trainer_state(out)
    assert state["num_processes"] == 2 and state["global_batch_size"] == 4


def test_two_processes_without_accelerate_use_cpu_fail_with_a_clear_message(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           PRETRAIN, *TINY, *SYNTHETIC, "--max-steps", "1", "--output-dir", str(out)]
    done = subprocess.run(cmd, env=_subprocess_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    # Each of the two processes reports, in one line each (counted by occurrence: the launcher may interleave them).
    messages = done.stderr.split("error: started as one of 2 processes")[1:]
    assert len(messages) == 2 and all("ACCELERATE_USE_CPU=1" in m for m in messages), done.stderr[-3000:]
    assert not out.exists()


def card_body(model_dir):
    """The model card's lines after its YAML front matter, blank lines dropped."""
    return [line for line in (model_dir / "README.md").read_text().split("---", 2)[2].splitlines() if line.strip()]
