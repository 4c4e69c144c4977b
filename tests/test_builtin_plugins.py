import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ast
import shutil
from pathlib import Path

import evaluate
import numpy as np
import pytest
from conftest import fresh_python
from PIL import Image

import spcxr_covid
import spcxr_lungseg
import spcxr_pneumonia
import spcxr_screening
from spcxr_hub import SEGMENTATION
from spcxr_hub.plugins import registry as plugins
from spcxr_hub.data import layouts, synthetic
from spcxr_hub.data.records import LayoutError, UnknownLabelError, load_mask, load_records
from spcxr_hub.evaluation.evaluate import metric_inputs
from spcxr_hub.plugins.registry import collect, get_registry, new_plugin_manager

PLUGINS = {"covid": spcxr_covid, "pneumonia": spcxr_pneumonia, "screening": spcxr_screening, "lungseg": spcxr_lungseg}
TASKS_OF = {"covid": {"covid"}, "pneumonia": {"pneumonia", "pneumonia-3class"},
            "screening": {"screening", "screening-14"}, "lungseg": {"lungseg"}}
ALL_TASKS = {task.name: task for module in PLUGINS.values() for name, task in vars(module).items()
             if name.startswith("TASK")}
N = 5  # images per class of every synthetic layout


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One synthetic dataset per plugin, in its native layout (read-only: tests that break a layout write their own)."""
    return {name: module.TASK.write_synthetic(tmp_path_factory.mktemp(name), N, 0) for name, module in PLUGINS.items()}


def write(plugin, tmp_path):
    return PLUGINS[plugin].TASK.write_synthetic(tmp_path / plugin, N, 0)


def load_metric(task):
    (path,) = task.metrics
    return evaluate.load(str(path))


@pytest.fixture
def fresh_registry(monkeypatch):
    """get_registry(reload=True) inside a test, without leaving its result to the other tests."""
    monkeypatch.setattr(plugins, "_registry", None)
    return lambda: get_registry(reload=True)


# --- covid: COVIDx CXR-3 -------------------------------------------------------------------------------------------


def test_covid_reader_returns_each_split_with_the_labels_of_its_list_file(written):
    root = written["covid"]
    for split in ("train", "test"):
        lines = [line.split() for line in (root / f"{split}.txt").read_text().splitlines()]
        records = spcxr_covid.read_folder(root, split)
        assert [r["image"] for r in records] == [root / split / fields[1] for fields in lines]
        assert [r["label"] for r in records] == [["negative", "positive"].index(fields[2]) for fields in lines]
        assert sorted(r["label"] for r in records) == [0] * N + [1] * N


def test_covid_missing_list_file_is_a_layout_error_naming_it(tmp_path):
    root = write("covid", tmp_path)
    (root / "test.txt").unlink()
    with pytest.raises(LayoutError, match=r"test\.txt: missing"):
        spcxr_covid.read_folder(root, "test")


def test_covid_missing_image_is_a_layout_error_naming_it(tmp_path):
    root = write("covid", tmp_path)
    filename = (root / "train.txt").read_text().splitlines()[3].split()[1]
    (root / "train" / filename).unlink()
    with pytest.raises(LayoutError, match=filename):
        spcxr_covid.read_folder(root, "train")


def test_covid_older_covidx_label_is_an_unknown_label_error_naming_file_and_line(tmp_path):
    root = write("covid", tmp_path)
    lines = (root / "train.txt").read_text().splitlines()
    patient, filename, _, source = lines[1].split()
    lines[1] = f"{patient} {filename} COVID-19 {source}"
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(UnknownLabelError, match=r"train\.txt, line 2: label 'COVID-19'"):
        spcxr_covid.read_folder(root, "train")


def test_covid_metric_gives_per_class_accuracy_sensitivity_specificity_ppv_of_a_known_confusion_matrix():
    # 3 positives (2 found), 5 negatives (1 false alarm): TP 2, FN 1, TN 4, FP 1.
    references = [1, 1, 1, 0, 0, 0, 0, 0]
    predictions = [1, 1, 0, 0, 0, 0, 1, 0]
    positive_scores = [0.9, 0.8, 0.4, 0.1, 0.2, 0.3, 0.6, 0.05]  # AUROC: 14 of 15 pairs ranked right
    result = load_metric(spcxr_covid.TASK).compute(
        predictions=predictions, references=references, prediction_scores=[[1 - p, p] for p in positive_scores])
    assert result["sensitivity"] == result["accuracy_positive"] == pytest.approx(2 / 3)
    assert result["specificity"] == result["accuracy_negative"] == pytest.approx(4 / 5)
    assert result["ppv"] == pytest.approx(2 / 3)
    assert result["accuracy"] == pytest.approx(6 / 8)
    assert result["auroc"] == pytest.approx(14 / 15)


# --- pneumonia: Kermany et al. --------------------------------------------------------------------------------------


def test_pneumonia_reader_reads_the_class_from_the_folder_in_all_three_splits(written):
    root = written["pneumonia"]
    for split in ("train", "val", "test"):
        records = spcxr_pneumonia.read_folder(root, split)
        assert {(r["image"].parent.name, r["label"]) for r in records} == {("NORMAL", 0), ("PNEUMONIA", 1)}
        assert sum(r["label"] == 0 for r in records) == N and sum(r["label"] == 1 for r in records) == 2 * N


def test_pneumonia_3class_reader_reads_bacterial_and_viral_from_the_file_names(written):
    records = spcxr_pneumonia.read_folder_3class(written["pneumonia"], "train")
    by_name = {r["image"].name: r["label"] for r in records}
    assert by_name["IM-0001-0001.jpeg"] == 0
    assert by_name["person1_bacteria_3.jpeg"] == 1
    assert by_name["person2_virus_4.jpeg"] == 2
    assert sorted(by_name.values()) == [0] * N + [1] * N + [2] * N


def test_pneumonia_synthetic_writer_writes_real_jpegs_in_the_kermany_tree(written):
    files = sorted((written["pneumonia"] / "test" / "PNEUMONIA").iterdir())
    assert files and all(f.suffix == ".jpeg" for f in files)
    with Image.open(files[0]) as image:
        assert image.format == "JPEG" and image.mode == "L"


def test_pneumonia_file_name_without_bacteria_or_virus_is_an_unknown_label_error_naming_it(tmp_path):
    root = write("pneumonia", tmp_path)
    folder = root / "train" / "PNEUMONIA"
    shutil.copy(folder / "person1_bacteria_3.jpeg", folder / "person9_3.jpeg")
    with pytest.raises(UnknownLabelError, match=r"person9_3\.jpeg"):
        spcxr_pneumonia.read_folder_3class(root, "train")
    assert len(spcxr_pneumonia.read_folder(root, "train")) == 3 * N + 1  # the two-class task does not need it


def test_pneumonia_unknown_class_folder_is_an_unknown_label_error_naming_it(tmp_path):
    root = write("pneumonia", tmp_path)
    (root / "test" / "COVID19").mkdir()
    with pytest.raises(UnknownLabelError, match=r"COVID19"):
        spcxr_pneumonia.read_folder(root, "test")


def test_pneumonia_missing_class_folder_is_a_layout_error_naming_it(tmp_path):
    root = write("pneumonia", tmp_path)
    shutil.rmtree(root / "val" / "NORMAL")
    with pytest.raises(LayoutError, match=r"val/NORMAL: missing"):
        spcxr_pneumonia.read_folder(root, "val")


def test_pneumonia_metric_gives_binary_f1_and_auroc_for_two_classes():
    result = load_metric(spcxr_pneumonia.TASK).compute(
        predictions=[1, 1, 0, 0], references=[1, 0, 1, 0],
        prediction_scores=[[0.1, 0.9], [0.4, 0.6], [0.7, 0.3], [0.8, 0.2]])
    assert result == pytest.approx({"accuracy": 0.5, "f1": 0.5, "auroc": 0.75})


def test_pneumonia_metric_gives_macro_f1_and_one_vs_rest_auroc_for_three_classes():
    perfect = load_metric(spcxr_pneumonia.TASK_3CLASS).compute(
        predictions=[0, 1, 2], references=[0, 1, 2],
        prediction_scores=[[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    assert perfect == {"accuracy": 1.0, "f1": 1.0, "auroc": 1.0}
    # Viral called bacterial once: F1 per class 1, 2/3, 2/3.
    result = load_metric(spcxr_pneumonia.TASK_3CLASS).compute(
        predictions=[0, 1, 1, 2], references=[0, 1, 2, 2],
        prediction_scores=[[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.5, 0.4], [0.1, 0.1, 0.8]])
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


# --- screening: NIH ChestX-ray14 ------------------------------------------------------------------------------------


def csv_labels(root):
    rows = [line.split(",") for line in (root / "Data_Entry_2017.csv").read_text().splitlines()[1:]]
    return {row[0]: row[1] for row in rows}


def test_screening_reader_follows_the_split_lists_and_maps_no_finding_to_normal(written):
    root = written["screening"]
    labels = csv_labels(root)
    for split, listing in (("train", "train_val_list.txt"), ("test", "test_list.txt")):
        names = (root / listing).read_text().split()
        records = spcxr_screening.read_folder(root, split)
        assert [r["image"].name for r in records] == names
        assert [r["label"] for r in records] == [int(labels[name] != "No Finding") for name in names]
        assert sorted(r["label"] for r in records) == [0] * N + [1] * N


def test_screening_14_reader_gives_multi_hot_labels_from_the_finding_labels_column(written):
    root = written["screening"]
    labels = csv_labels(root)
    findings = spcxr_screening.TASK_14.labels
    for record in spcxr_screening.read_folder_14(root, "test"):
        text = labels[record["image"].name]
        expected = set() if text == "No Finding" else set(text.split("|"))
        assert {findings[i] for i, value in enumerate(record["label"]) if value} == expected
        assert len(record["label"]) == 14


def test_screening_reader_finds_images_in_a_flat_images_folder_too(tmp_path):
    root = write("screening", tmp_path)
    (root / "images").mkdir()
    for path in root.glob("images_*/images/*.png"):
        path.rename(root / "images" / path.name)
    assert {r["image"].parent for r in spcxr_screening.read_folder(root, "train")} == {root / "images"}


def test_screening_unknown_label_in_the_csv_is_an_unknown_label_error_naming_the_csv_and_line(tmp_path):
    root = write("screening", tmp_path)
    lines = (root / "Data_Entry_2017.csv").read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[1], "Nodule|Tuberculosis", 1)
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(UnknownLabelError, match=r"Data_Entry_2017\.csv, line 4: label 'Tuberculosis'"):
        spcxr_screening.read_folder_14(root, "train")


def test_screening_listed_image_that_is_missing_is_a_layout_error_naming_it(tmp_path):
    root = write("screening", tmp_path)
    name = (root / "test_list.txt").read_text().split()[2]
    next(root.glob(f"images_*/images/{name}")).unlink()
    with pytest.raises(LayoutError, match=rf"{name}: missing \(listed in .*test_list\.txt, line 3\)"):
        spcxr_screening.read_folder(root, "test")


def test_screening_missing_data_entry_csv_is_a_layout_error_naming_it(tmp_path):
    root = write("screening", tmp_path)
    (root / "Data_Entry_2017.csv").unlink()
    with pytest.raises(LayoutError, match=r"Data_Entry_2017\.csv: missing"):
        spcxr_screening.read_folder(root, "train")


def test_screening_metric_gives_per_label_auroc_and_skips_labels_with_one_class_saying_so():
    references = [[1, 0, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0]]
    predictions = [[1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 0]]
    scores = [[0.9, 0.1, 0.2], [0.2, 0.1, 0.8], [0.4, 0.3, 0.7], [0.3, 0.2, 0.1]]
    with pytest.warns(UserWarning, match="label_1"):
        result = load_metric(spcxr_screening.TASK_14).compute(
            predictions=predictions, references=references, prediction_scores=scores)
    assert result["auroc_per_label"]["label_0"] == pytest.approx(1.0)
    assert np.isnan(result["auroc_per_label"]["label_1"])
    assert result["auroc"] == pytest.approx(1.0) and result["auroc_labels"] == 2
    assert result["accuracy"] == pytest.approx(11 / 12)
    assert result["exact_match"] == pytest.approx(3 / 4)
    assert result["f1"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 1))  # micro: TP 3, FP 0, FN 1


def test_screening_metric_gives_accuracy_f1_and_auroc_for_normal_vs_abnormal():
    result = load_metric(spcxr_screening.TASK).compute(
        predictions=[1, 1, 0, 0], references=[1, 0, 1, 0],
        prediction_scores=[[0.1, 0.9], [0.4, 0.6], [0.7, 0.3], [0.8, 0.2]])
    assert result == pytest.approx({"accuracy": 0.5, "f1": 0.5, "auroc": 0.75})


# --- lungseg: Montgomery County -------------------------------------------------------------------------------------


def test_lungseg_split_is_every_fifth_image_by_file_name_for_test(written):
    root = written["lungseg"]
    names = sorted(path.name for path in (root / "CXR_png").iterdir())
    test = [r["image"].name for r in spcxr_lungseg.read_folder(root, "test")]
    train = [r["image"].name for r in spcxr_lungseg.read_folder(root, "train")]
    assert test == names[4::5]
    assert sorted(train + test) == names and not set(train) & set(test)


def test_lungseg_label_is_the_left_and_right_mask_whose_union_is_the_phantom_lung_mask(written):
    root = written["lungseg"]
    record = spcxr_lungseg.read_folder(root, "train")[0]
    assert record["label"] == [root / "ManualMask" / side / record["image"].name for side in ("leftMask", "rightMask")]
    phantom = synthetic.generate(layouts.image_seed(0, 0), spcxr_lungseg.layout.IMAGE_SIZE)  # the first image
    assert np.array_equal(load_mask(record["label"]), phantom.lung_mask)
    left = load_mask(record["label"][0])
    assert left[:, : left.shape[1] // 2].sum() < left[:, left.shape[1] // 2 :].sum()  # patient's left = image right


def test_lungseg_images_are_12_bit_pngs(written):
    with Image.open(next((written["lungseg"] / "CXR_png").iterdir())) as image:
        assert image.mode.startswith("I") and 255 < np.asarray(image).max() <= 4095


def test_lungseg_missing_mask_is_a_layout_error_naming_it(tmp_path):
    root = write("lungseg", tmp_path)
    name = sorted((root / "CXR_png").iterdir())[0].name
    (root / "ManualMask" / "rightMask" / name).unlink()
    with pytest.raises(LayoutError, match=rf"rightMask/{name}: missing"):
        spcxr_lungseg.read_folder(root, "train")


def test_lungseg_missing_image_folder_is_a_layout_error_naming_it(tmp_path):
    with pytest.raises(LayoutError, match=r"CXR_png: missing"):
        spcxr_lungseg.read_folder(tmp_path, "train")


def test_lungseg_metric_gives_set_dice_iou_and_per_image_dice():
    predictions = [np.array([1, 1, 1, 0], np.int8), np.array([0, 0, 0, 0, 1, 1], np.int8)]
    references = [np.array([1, 1, 0, 0], np.int8), np.array([0, 0, 0, 0, 1, 1], np.int8)]
    result = load_metric(spcxr_lungseg.TASK).compute(predictions=predictions, references=references)
    # Over all pixels: TP 4, FP 1, FN 0.
    assert result["dice"] == pytest.approx(8 / 9)
    assert result["iou"] == pytest.approx(4 / 5)
    assert result["per_image_dice"] == pytest.approx([0.8, 1.0])
    assert result["mean_dice"] == pytest.approx(0.9)


# --- every task: registration, discovery, the core's loading, the metric contract -----------------------------------


@pytest.mark.parametrize("plugin", sorted(PLUGINS))
def test_registering_the_plugin_module_on_a_fresh_manager_yields_its_tasks(plugin):
    manager = new_plugin_manager()
    manager.register(PLUGINS[plugin], name=plugin)
    registry = collect(manager)
    assert set(registry.tasks) == TASKS_OF[plugin] and not registry.errors


def test_entry_points_load_every_builtin_task_when_spcxr_load_plugins_is_unset(monkeypatch, fresh_registry):
    monkeypatch.delenv("SPCXR_LOAD_PLUGINS", raising=False)
    registry = fresh_registry()
    assert set().union(*TASKS_OF.values()) <= set(registry.tasks)
    assert {registry.plugins[name].distribution for name in PLUGINS} == {"spcxr-hub"}
    assert not registry.errors


def test_spcxr_load_plugins_limits_autoload_to_the_named_plugins(monkeypatch, fresh_registry):
    monkeypatch.setenv("SPCXR_LOAD_PLUGINS", "lungseg, pneumonia")
    registry = fresh_registry()
    assert set(registry.tasks) == {"lungseg", "pneumonia", "pneumonia-3class"}
    assert set(registry.plugins) == {"lungseg", "pneumonia"}


@pytest.mark.parametrize("name", sorted(ALL_TASKS))
def test_load_records_reads_every_split_of_the_synthetic_native_layout(name, written):
    task = ALL_TASKS[name]
    root = written[name.split("-")[0]]
    for split in task.splits:
        records = load_records(task, root, split)
        assert records and all(Path(r["image"]).is_file() for r in records)
    with pytest.raises(ValueError, match="no split 'nope'"):
        load_records(task, root, "nope")


@pytest.mark.filterwarnings("ignore:AUROC undefined")  # most of the 14 findings never occur in phantoms
@pytest.mark.parametrize("name", sorted(ALL_TASKS))
def test_metric_module_loads_offline_and_scores_perfect_predictions_as_one(name, written):
    """The inputs come from the evaluation code's own `metric_inputs`: the metric modules honour its contract."""
    task = ALL_TASKS[name]
    records = load_records(task, written[name.split("-")[0]], "test")
    if task.kind == SEGMENTATION:
        masks = [load_mask(r["label"]).astype(np.float32) for r in records]
        scores = [np.stack([1 - m, m]) for m in masks]
    else:
        scores = [np.asarray(r["label"], np.float32) if task.kind != "single-label"
                  else np.eye(len(task.labels), dtype=np.float32)[r["label"]] for r in records]
    inputs = metric_inputs(task, records, {"indices": list(range(len(records))), "scores": scores})
    result = load_metric(task).compute(**inputs)
    headline = {"covid": "sensitivity", "lungseg": "dice"}.get(name, "accuracy")
    assert result[headline] == 1.0
    if task.kind != SEGMENTATION:
        assert result["auroc"] == 1.0


@pytest.mark.parametrize("name", sorted(ALL_TASKS))
def test_task_declares_its_card_model_id_and_hub_dataset(name):
    task = ALL_TASKS[name]
    assert task.model_id == f"spcxr/vit-s-{name}"
    assert "not for diagnosis" in task.card.intended_use.lower()
    assert task.card.dataset_citation.startswith("@") and task.card.limitations and task.description
    assert "train" in task.splits and "test" in task.splits
    assert task.write_synthetic is not None


def spcxr_hub_imports(package: Path) -> set[tuple[str, str]]:
    """`(file, module)` for every module of spcxr_hub that a file of `package` imports, in any import form."""
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module] if node.level == 0 else []
            else:
                modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            found |= {(path.name, module) for module in modules if module.split(".")[0] == "spcxr_hub"}
    return found


@pytest.mark.parametrize("plugin", sorted(PLUGINS))
def test_plugin_imports_nothing_of_spcxr_hub_but_the_plugin_api(plugin):
    imports = spcxr_hub_imports(Path(PLUGINS[plugin].__file__).parent)
    assert {module for _, module in imports} == {"spcxr_hub.plugin_api"}, imports


def test_loading_every_plugin_imports_no_torch():
    """`spcxr plugins` (and any plugin's layout reading) needs no deep-learning stack: plugins describe data."""
    out = fresh_python("import sys\nfrom spcxr_hub.plugins import get_registry\n"
                       "registry = get_registry()\n"
                       "assert not registry.errors and 'pneumonia' in registry.tasks, registry.errors\n"
                       "print('torch' in sys.modules)\n")
    assert out.strip() == "False"
