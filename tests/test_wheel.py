"""The package as `pip install spcxr-hub` leaves it: the wheel is built, installed outside the source tree, and the
real commands (finetune → card → export, pretrain) run from it. Every file those commands open is recorded (an audit
hook in the child process): none may come from the source tree, so a file left out of the wheel fails here."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--init", "scratch", "--config", "tiny", "--image-size", "64", "--batch-size", "8", "--max-steps", "2"]

# Runs `spcxr ARGS` from the installed package and appends every path it opened to $SPCXR_OPENED.
COMMAND = """
import atexit, os, runpy, sys
opened = set()
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        opened.add(os.path.abspath(os.fsdecode(args[0])))
sys.addaudithook(hook)
def report():
    with open(os.environ["SPCXR_OPENED"], "a") as file:
        file.write("".join(path + "\\n" for path in sorted(opened)))
atexit.register(report)
sys.argv = ["spcxr", *sys.argv[1:]]
runpy.run_module("spcxr_hub.cli", run_name="__main__")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "--disable-pip-version-check", "-w", str(out)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("spcxr_hub-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """The wheel unpacked by pip into its own folder, first on the path of the commands run from it."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q",
                    "--disable-pip-version-check", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return target


@pytest.fixture(scope="module")
def user(installed, tmp_path_factory):
    """A working folder outside the source tree and a function running `spcxr ...` there from the wheel."""
    work = tmp_path_factory.mktemp("user")
    opened = work / "opened.txt"
    env = {**os.environ, "PYTHONPATH": str(installed), "SPCXR_OPENED": str(opened),
           "SPCXR_LOAD_PLUGINS": "covid,pneumonia,screening,lungseg,backbones"}  # the built-ins: the wheel's own

    def spcxr(*args):
        result = subprocess.run([sys.executable, "-c", COMMAND, *map(str, args)], cwd=work, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"spcxr {' '.join(map(str, args))}\n{result.stderr[-3000:]}"
        return result.stdout

    spcxr.work, spcxr.opened, spcxr.env = work, opened, env
    return spcxr


@pytest.fixture(scope="module")
def exported(user):
    """`spcxr finetune` → `spcxr card` → `spcxr export` of a tiny pneumonia model, all from the installed wheel."""
    from spcxr_hub.plugins.registry import get_task

    data = get_task("pneumonia").write_synthetic(user.work / "kermany", 4, 0)
    user("finetune", "pneumonia", "--data", data, "--output-dir", user.work / "model", *TINY)
    user("card", user.work / "model")
    user("export", user.work / "model", "--repo-dir", user.work / "repo", "--repo-id", "acme/cxr-pneumonia")
    return user.work / "repo"


@pytest.fixture(scope="module")
def pretrained(user):
    user("pretrain", "--data", "synthetic", "--synthetic-size", "8", "--config", "tiny", "--image-size", "32",
         "--batch-size", "4", "--max-steps", "1", "--num-workers", "0", "--report-to", "none",
         "--checkpoint-every", "0", "--preview-every", "0", "--output-dir", user.work / "pretrain")
    return user.work / "pretrain" / "backbone"


def test_commands_run_from_the_installed_package(exported, pretrained, installed, user):
    opened = {Path(line) for line in user.opened.read_text().splitlines()}
    for module in ("spcxr_hub/cli/inference_commands.py", "spcxr_hub/hub/cards.py", "spcxr_pneumonia/__init__.py"):
        assert installed / module in opened, module


def test_the_wheel_ships_the_card_templates_and_the_remote_code(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    from spcxr_hub.hub.cards import TEMPLATES
    from spcxr_hub.models.spcxr.modeling_spcxr import code_files

    assert {f"spcxr_hub/hub/card_templates/{name}" for name in TEMPLATES.values()} <= names
    remote_code = {f"spcxr_hub/models/spcxr/{path.name}" for path in code_files(ROOT / "spcxr_hub/models/spcxr")}
    assert {"spcxr_hub/models/spcxr/modeling_spcxr.py", "spcxr_hub/models/spcxr/imaging.py"} <= remote_code <= names
    for plugin in ("covid", "pneumonia", "screening", "lungseg"):
        assert f"spcxr_{plugin}/metrics/{plugin}.py" in names


def test_finetune_card_export_and_pretrain_open_nothing_of_the_source_tree(exported, pretrained, user):
    opened = {Path(line) for line in user.opened.read_text().splitlines()}
    from_source = sorted(str(path) for path in opened if path.is_relative_to(ROOT) and ".venv" not in path.parts)
    assert not from_source, from_source
    assert any(path.name.endswith(".md.j2") for path in opened)  # the cards really were rendered from templates


@pytest.fixture(scope="module")
def loaded_without_the_project(exported, pretrained, user):
    """What a process without the project gets from the exported repository's pipeline and the pretrained backbone."""
    code = ("import sys; sys.modules['spcxr_hub'] = None\nimport json\nimport numpy as np\n"
            "from transformers import AutoImageProcessor, AutoModel, pipeline\n"
            f"classify = pipeline('image-classification', model={str(exported)!r}, trust_remote_code=True)\n"
            f"labels = sorted(p['label'] for p in classify({str(exported / 'examples' / 'chest-1.png')!r}))\n"
            f"model = AutoModel.from_pretrained({str(pretrained)!r}, trust_remote_code=True)\n"
            f"processor = AutoImageProcessor.from_pretrained({str(pretrained)!r}, trust_remote_code=True)\n"
            "shape = list(model(**processor(np.zeros((40, 30), np.float32))).pooler_output.shape)\n"
            "print(json.dumps({'labels': labels, 'pooled_shape': shape}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=user.work, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_exported_repository_from_the_wheel_loads_without_the_project(exported, loaded_without_the_project):
    assert (exported / "README.md").read_text().startswith("---")
    assert loaded_without_the_project["labels"] == ["normal", "pneumonia"]


def test_pretrained_backbone_from_the_wheel_loads_without_the_project(loaded_without_the_project):
    assert loaded_without_the_project["pooled_shape"] == [1, 64]
