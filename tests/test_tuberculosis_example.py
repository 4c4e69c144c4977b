import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import evaluate
import pytest
from test_builtin_plugins import spcxr_hub_imports

from spcxr_hub.plugins import registry as plugins
from spcxr_hub.data.records import LayoutError, UnknownLabelError, load_records
from spcxr_hub.plugins.registry import collect, get_registry, new_plugin_manager

import spcxr_tuberculosis  # installed by `make test` (pip install --no-deps -e examples/tuberculosis-plugin)

EXAMPLE = Path(__file__).parents[1] / "examples" / "tuberculosis-plugin"
N = 5


@pytest.fixture
def shenzhen(tmp_path):
    return spcxr_tuberculosis.TASK.write_synthetic(tmp_path / "ChinaSet_AllFiles", N, 0)


@pytest.fixture
def fresh_registry(monkeypatch):
    monkeypatch.setattr(plugins, "_registry", None)
    return lambda: get_registry(reload=True)


def test_installed_example_is_discovered_through_its_entry_point(monkeypatch, fresh_registry):
    monkeypatch.delenv("SPCXR_LOAD_PLUGINS", raising=False)
    registry = fresh_registry()
    info = registry.plugins["tuberculosis"]
    assert (info.distribution, info.version, info.tasks) == ("spcxr-tuberculosis", "0.1.0", ["tuberculosis"])
    assert registry.task("tuberculosis") is spcxr_tuberculosis.TASK
    assert not registry.errors


def test_spcxr_load_plugins_can_load_the_example_alone(monkeypatch, fresh_registry):
    monkeypatch.setenv("SPCXR_LOAD_PLUGINS", "tuberculosis")
    assert set(fresh_registry().tasks) == {"tuberculosis"}


def test_example_registers_its_task_on_a_fresh_manager_without_autoload():
    manager = new_plugin_manager()
    manager.register(spcxr_tuberculosis, name="tuberculosis")
    assert set(collect(manager).tasks) == {"tuberculosis"}


def test_example_installs_from_its_own_pyproject_in_the_entry_point_group():
    text = (EXAMPLE / "pyproject.toml").read_text()
    assert 'name = "spcxr-tuberculosis"' in text and '"spcxr-hub' in text
    assert '[project.entry-points.spcxr_hub]\ntuberculosis = "spcxr_tuberculosis"' in text


def test_reader_labels_from_the_last_digit_and_splits_every_fifth_file_for_test(shenzhen):
    names = sorted(path.name for path in (shenzhen / "CXR_png").iterdir())
    test = load_records(spcxr_tuberculosis.TASK, shenzhen, "test")
    train = load_records(spcxr_tuberculosis.TASK, shenzhen, "train")
    assert [r["image"].name for r in test] == names[4::5] == ["CHNCXR_0005_0.png", "CHNCXR_0010_1.png"]
    assert [r["label"] for r in test] == [0, 1]
    assert sorted(r["label"] for r in train + test) == [0] * N + [1] * N
    assert all(r["label"] == int(r["image"].stem[-1]) for r in train)


def test_file_name_without_a_0_or_1_label_digit_is_an_unknown_label_error_naming_it(shenzhen):
    (shenzhen / "CXR_png" / "CHNCXR_0003_0.png").rename(shenzhen / "CXR_png" / "CHNCXR_0003_x.png")
    with pytest.raises(UnknownLabelError, match=r"CHNCXR_0003_x\.png"):
        spcxr_tuberculosis.read_folder(shenzhen, "train")


def test_missing_image_folder_is_a_layout_error_naming_it(tmp_path):
    with pytest.raises(LayoutError, match=r"CXR_png: missing"):
        load_records(spcxr_tuberculosis.TASK, tmp_path, "train")


def test_metric_gives_sensitivity_and_specificity_of_a_known_confusion_matrix():
    # TP 3, FN 1, TN 2, FP 2.
    references = [1, 1, 1, 1, 0, 0, 0, 0]
    predictions = [1, 1, 1, 0, 1, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.2, 0.6, 0.55, 0.3, 0.1]  # AUROC: 13 of 16 pairs ranked right
    metric = evaluate.load(str(spcxr_tuberculosis.TASK.metrics[0]))
    result = metric.compute(predictions=predictions, references=references,
                            prediction_scores=[[1 - s, s] for s in scores])
    assert result == pytest.approx({"accuracy": 5 / 8, "sensitivity": 3 / 4, "specificity": 2 / 4, "auroc": 13 / 16})


def test_example_imports_nothing_of_spcxr_hub_but_the_plugin_api():
    imports = spcxr_hub_imports(Path(spcxr_tuberculosis.__file__).parent)
    assert {module for _, module in imports} == {"spcxr_hub.plugin_api"}, imports
