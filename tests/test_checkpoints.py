import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import pytest
from conftest import spcxr

import spcxr_hub.evaluation.evaluate
from spcxr_hub.training import checkpoints
from spcxr_hub.training.checkpoints import CheckpointError, check_checkpoint, latest_checkpoint, list_checkpoints, save_checkpoint
from spcxr_hub.plugins.registry import get_task

FINGERPRINT = {"model": {"hidden_size": 32}, "training": {"seed": 0}}


class RecordingAccelerator:
    """The part of `accelerate.Accelerator` checkpoints use, recording what the checkpoint folder holds at each
    barrier (what the other processes could see there)."""

    def __init__(self, folder: Path, *, main: bool = True):
        self.folder, self.is_main_process, self.num_processes = folder, main, 2
        self.events = []

    def wait_for_everyone(self):
        names = sorted(p.name for p in self.folder.iterdir()) if self.folder.is_dir() else []
        self.events.append(("barrier", names))

    def save_state(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.safetensors").write_text("weights")
        self.events.append(("save_state", Path(path).name))


def test_the_main_process_renames_the_checkpoint_only_after_every_process_has_written(tmp_path):
    accelerator = RecordingAccelerator(tmp_path / "ckpt")
    final = save_checkpoint(accelerator, tmp_path / "ckpt", 3, FINGERPRINT, keep=2)
    assert accelerator.events == [
        ("barrier", []),  # the staging folder is clean before anyone writes into it
        ("save_state", ".step-00000003.partial"),
        ("barrier", [".step-00000003.partial"]),  # every process has written; nothing renamed yet
        ("barrier", ["step-00000003"]),  # renamed before anyone goes on
    ]
    assert final == tmp_path / "ckpt" / "step-00000003" and (final / "model.safetensors").is_file()
    assert json.loads((final / checkpoints.META).read_text())["fingerprint"] == FINGERPRINT


def test_other_processes_write_their_state_but_never_rename(tmp_path):
    (tmp_path / "ckpt").mkdir()
    accelerator = RecordingAccelerator(tmp_path / "ckpt", main=False)
    save_checkpoint(accelerator, tmp_path / "ckpt", 3, FINGERPRINT, keep=2)
    assert [event for event, _ in accelerator.events] == ["barrier", "save_state", "barrier", "barrier"]
    assert list_checkpoints(tmp_path / "ckpt") == []  # the main process's rename is not theirs to do


def test_only_the_newest_checkpoints_are_kept_and_extra_files_are_written(tmp_path):
    folder = tmp_path / "ckpt"
    for step in (2, 4, 6):
        save_checkpoint(RecordingAccelerator(folder), folder, step, FINGERPRINT, keep=2, digits=1,
                        files={"progress.json": {"step": step}})
    assert sorted(p.name for p in folder.iterdir()) == ["step-4", "step-6"]
    assert latest_checkpoint(folder) == folder / "step-6"
    assert json.loads((folder / "step-6" / "progress.json").read_text()) == {"step": 6}


def test_half_written_checkpoints_are_never_listed(tmp_path):
    folder = tmp_path / "ckpt"
    save_checkpoint(RecordingAccelerator(folder), folder, 1, FINGERPRINT, keep=2)
    (folder / ".step-00000002.partial").mkdir()  # killed during save_state
    (folder / "step-00000003").mkdir()  # no metadata: not ours, or not complete
    assert [step for step, _ in list_checkpoints(folder)] == [1]
    assert latest_checkpoint(tmp_path / "missing") is None


def test_a_checkpoint_of_another_configuration_is_refused_naming_what_differs(tmp_path):
    final = save_checkpoint(RecordingAccelerator(tmp_path), tmp_path, 1, FINGERPRINT, keep=1)
    assert check_checkpoint(final, FINGERPRINT)["step"] == 1
    other = {"model": {"hidden_size": 64}, "training": {"seed": 0, "lr": 1e-3}}
    with pytest.raises(CheckpointError, match=r"another configuration \(model.hidden_size: 32 → 64; "
                                              r"training.lr: None → 0.001\)"):
        check_checkpoint(final, other)


def test_a_folder_without_metadata_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=f"--resume {tmp_path}: not a checkpoint .*no {checkpoints.META}"):
        check_checkpoint(tmp_path, FINGERPRINT)


# ------------------------------------------------------------------------------------------------- fine-tuning

TINY = ["--init", "scratch", "--config", "tiny", "--image-size", "64", "--batch-size", "8"]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A fine-tuning run that crashed after its checkpoints were written (at the evaluation)."""
    root = tmp_path_factory.mktemp("finetune")
    data = get_task("pneumonia").write_synthetic(root / "data", 4, 0)
    args = ["finetune", "pneumonia", "--data", data, "--output-dir", root / "run", "--max-steps", 2,
            "--checkpoint-every", 2, *TINY]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(spcxr_hub.evaluation.evaluate, "evaluate_model", lambda *_, **__: 1 / 0)
        spcxr(*args, expect=1)  # a crash is not the user's error
    assert (root / "run-checkpoints" / "step-2" / checkpoints.META).is_file()
    return args


@pytest.mark.parametrize(("change", "difference"), [
    (["--lr", "0.01"], "training.learning_rate: None → 0.01"),
    (["--config", "vit-s"], "model.hidden_size: 64 → 384"),
])
def test_fine_tuning_refuses_to_resume_a_checkpoint_of_another_configuration(interrupted, change, difference):
    result = spcxr(*interrupted, *change, "--resume", "latest", expect=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "another configuration" in lines[0] and difference in lines[0], lines


def test_fine_tuning_refuses_to_resume_another_tasks_checkpoint(interrupted):
    other = ["pneumonia-3class" if a == "pneumonia" else a for a in interrupted]
    result = spcxr(*other, "--resume", "latest", expect=2)
    assert "task.name: 'pneumonia' → 'pneumonia-3class'" in result.stderr
