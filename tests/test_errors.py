"""How commands fail: bad input is one line and exit status 2, a bug is one line saying so and exit status 1 (its
traceback behind SPCXR_DEBUG=1), and the error is always the last line on stderr. Run as the user runs them: the
`spcxr` console script in a fresh process."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spcxr_hub import SpcxrConfig, SpcxrForImageClassification, SpcxrImageProcessor
from spcxr_hub.errors import SpcxrError, UsageError, one_line

SPCXR = str(Path(sys.executable).parent / "spcxr")
# A bug planted in a fresh process: turning logits into a result raises what no user input causes.
PLANTED_BUG = (
    "import sys\nimport spcxr_hub.cli as cli\nfrom spcxr_hub.inference import predictions\n"
    "def broken(*args, **kwargs):\n    raise ZeroDivisionError('planted bug')\n"
    "predictions.classification_result = broken\nsys.argv = ['spcxr', *sys.argv[1:]]\ncli.main()\n"
)


def run(*args, env=None, code=None):
    command = [sys.executable, "-c", code, *map(str, args)] if code else [SPCXR, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SPCXR_DEBUG": "", **(env or {})})


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    config = SpcxrConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         image_size=32, id2label={0: "normal", 1: "pneumonia"})
    torch.manual_seed(0)
    SpcxrForImageClassification(config).save_pretrained(directory)
    SpcxrImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    folder = tmp_path_factory.mktemp("films")
    Image.fromarray((np.random.default_rng(0).random((48, 40)) * 255).astype(np.uint8)).save(folder / "good.png")
    (folder / "empty.png").write_bytes(b"")
    return folder


def test_every_user_error_derives_from_one_base_class():
    from spcxr_hub.hub.card_facts import CardError
    from spcxr_hub.data.records import LayoutError, UnknownLabelError
    from spcxr_hub.plugins.registry import PluginError, UnknownTaskError
    from spcxr_hub.training.pretraining import UnreadableImageError
    from spcxr_hub.hub.publishing import PublishError
    from spcxr_hub.plugins.tasks import TaskError

    for error in (CardError, LayoutError, UnknownLabelError, PluginError, UnknownTaskError, UnreadableImageError,
                  PublishError, TaskError, UsageError):
        assert issubclass(error, SpcxrError), error


def test_one_line_keeps_the_informative_last_line():
    assert one_line(KeyError("unknown task 'x'")) == "unknown task 'x'"
    assert one_line(ValueError("Class validation error:\n    ValueError: field must be positive")) == "field must be positive"


def test_bad_input_is_one_line_and_exit_status_2(model, tmp_path):
    result = run("predict", "--model", model, tmp_path / "nope.png")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.png'}: no such file or folder"]


def test_a_bug_says_it_is_one_and_exits_1(model, films):
    result = run("predict", "--model", model, films / "good.png", code=PLANTED_BUG)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("internal error: ZeroDivisionError: planted bug") and "SPCXR_DEBUG=1" in line


def test_spcxr_debug_shows_the_traceback_of_a_bug(model, films):
    result = run("predict", "--model", model, films / "good.png", code=PLANTED_BUG, env={"SPCXR_DEBUG": "1"})
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "planted bug" in result.stderr


def test_predict_with_no_readable_input_fails(model, films):
    result = run("predict", "--json", "--model", model, films / "empty.png")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: none of the 1 input file(s) could be read"


def test_predict_skipping_some_inputs_succeeds_and_counts_them(model, films):
    result = run("predict", "--json", "--model", model, films / "good.png", films / "empty.png")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 unreadable file(s):" in result.stderr and "good.png" in result.stdout


def test_pretraining_error_is_the_last_line_on_stderr(tmp_path):
    data = tmp_path / "films"
    data.mkdir()
    for i in range(4):
        Image.fromarray(np.full((40, 40), 60 * i, np.uint8)).save(data / f"{i}.png")
    (data / "4.png").write_bytes(b"not a png")
    result = run("pretrain", "--data", data, "--strict", "--config", "tiny", "--image-size", "32", "--batch-size", "5",
                 "--max-steps", "2", "--num-workers", "0", "--report-to", "none", "--checkpoint-every", "0",
                 "--preview-every", "0", "--output-dir", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "4.png" in last and "error" in last, result.stderr
