"""Subgroup results through the real commands: `evaluate --group-by` reads sex, age, view and site from a --metadata
CSV, from DICOM tags or from NIH ChestX-ray14's CSV, and writes per-group metrics with bootstrap intervals, the
largest gap and the count of files without the attribute; `finetune --group-by` does the same for its evaluation;
bad options fail in one line before anything is written; what cannot be computed is null with a note."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import csv
import json
from collections import Counter

import pytest
import torch
from conftest import spcxr

from spcxr_hub import SpcxrConfig, SpcxrForImageClassification, SpcxrImageProcessor
from spcxr_hub.data.attributes import normalise
from spcxr_hub.data.layouts import phantom_attributes, write_phantoms
from spcxr_hub.evaluation.subgroups import largest_gap
from spcxr_hub.plugins.registry import get_task

TINY = ["--init", "scratch", "--config", "tiny", "--image-size", "64", "--batch-size", "8"]
ATTRIBUTES = "sex,age,view,site"


def random_model(directory, labels):
    """A tiny untrained classifier: its numbers mean nothing, the report's shape is what is tested."""
    config = SpcxrConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         image_size=32, id2label=dict(enumerate(labels)))
    torch.manual_seed(0)
    SpcxrForImageClassification(config).save_pretrained(directory)
    SpcxrImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def evaluate(task, model, data, out, *options, expect=0):
    result = spcxr("evaluate", task, "--model", model, "--data", data, "--output-dir", out, *options, expect=expect)
    return result if expect else json.loads((out / "metrics.json").read_text())


def assert_schema(report):
    """The `subgroups` schema the model card renders: counts add up, intervals hold their values, no NaN."""
    assert "NaN" not in json.dumps(report)
    for attribute, section in report["subgroups"].items():
        assert set(section) == {"source", "groups", "largest_gap", "missing"}, attribute
        assert sum(group["count"] for group in section["groups"].values()) + section["missing"] == report["num_images"]
        for group in section["groups"].values():
            assert set(group) == {"count", "metrics"}
            for name, row in group["metrics"].items():
                assert set(row) == {"value", "low", "high"}
                if row["value"] is not None and name != "ece":  # the bootstrap ECE is biased upwards
                    assert row["low"] <= row["value"] <= row["high"], (attribute, name, row)
        gap = section["largest_gap"]
        if gap is not None:
            assert set(gap) == {"metric", "difference", "between"} and gap["difference"] >= 0
            high, low = (section["groups"][value]["metrics"][gap["metric"]]["value"] for value in gap["between"])
            assert gap["difference"] == pytest.approx(high - low)


@pytest.fixture(scope="module")
def kermany(tmp_path_factory):
    """Kermany layout, 6 normal + 12 pneumonia test images, with the metadata.csv the synthetic writer drops."""
    return get_task("pneumonia").write_synthetic(tmp_path_factory.mktemp("data") / "kermany", 6, 0)


@pytest.fixture(scope="module")
def pneumonia_model(tmp_path_factory):
    return random_model(tmp_path_factory.mktemp("models") / "pneumonia", ("normal", "pneumonia"))


def rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def write_rows(path, table):
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    return path


def test_metadata_csv_gives_every_attribute_with_intervals_and_counts_the_files_it_lacks(kermany, pneumonia_model,
                                                                                          tmp_path):
    table = rows(kermany / "metadata.csv")
    test_rows = [row for row in table if row["file"].startswith("test/")]
    for row in test_rows[:3]:
        row["sex"] = ""  # three test files without a sex
    test_rows[3]["age"] = "sixty"  # and one whose age cannot be read
    meta = write_rows(tmp_path / "meta.csv", table)
    report = evaluate("pneumonia", pneumonia_model, kermany, tmp_path / "eval", "--group-by", ATTRIBUTES,
                      "--metadata", meta)
    assert_schema(report)
    groups = report["subgroups"]
    assert list(groups) == ["sex", "age", "view", "site"]
    assert all(section["source"] == "metadata CSV meta.csv" for section in groups.values())
    assert report["num_images"] == len(test_rows) == 18
    assert groups["sex"]["missing"] == 3 and groups["age"]["missing"] == 1 and groups["site"]["missing"] == 0
    expected = Counter(row["sex"] for row in test_rows[3:])
    assert {value: group["count"] for value, group in groups["sex"]["groups"].items()} == expected
    assert set(groups["age"]["groups"]) <= {"<18", "18–39", "40–59", "60–79", "≥80"}
    for group in groups["sex"]["groups"].values():
        assert set(group["metrics"]) == set(report["confidence_intervals"]["metrics"])
    assert any("subgroups sex: 3 of 18" in note for note in report["notes"])
    assert any("subgroups age: unreadable values (e.g. 'sixty')" in note for note in report["notes"])


def test_dicom_tags_are_read_from_the_header(pneumonia_model, tmp_path):
    plan = [(f"test/{folder}/film{index}.dcm", findings) for index in range(8)
            for folder, findings in (("NORMAL", ()), ("PNEUMONIA", ("pneumonia",)))]
    write_phantoms(tmp_path / "dicoms", plan, 3, size=64)
    report = evaluate("pneumonia", pneumonia_model, tmp_path / "dicoms", tmp_path / "eval", "--group-by", ATTRIBUTES)
    assert_schema(report)
    assert report["num_images"] == 16
    for attribute, section in report["subgroups"].items():
        assert section["source"] == "DICOM tags" and section["missing"] == 0, attribute
    written = [phantom_attributes(3, index) for index in range(len(plan))]  # PatientAge "063Y" etc.
    decades = Counter("40–59" if 40 <= a["age"] < 60 else "60–79" if 60 <= a["age"] < 80 else "other" for a in written)
    for attribute, expected in (("site", Counter(a["site"] for a in written)), ("sex", Counter(a["sex"] for a in written))):
        assert {v: g["count"] for v, g in report["subgroups"][attribute]["groups"].items()} == expected
    ages = report["subgroups"]["age"]["groups"]
    assert (ages.get("40–59", {}).get("count", 0), ages.get("60–79", {}).get("count", 0)) == (decades["40–59"], decades["60–79"])


@pytest.fixture(scope="module")
def nih(tmp_path_factory):
    """NIH layout: 8 normal + 8 abnormal test images, sex, age and view in Data_Entry_2017.csv."""
    return get_task("screening").write_synthetic(tmp_path_factory.mktemp("data") / "nih", 8, 0)


@pytest.fixture(scope="module")
def screening_model(tmp_path_factory):
    return random_model(tmp_path_factory.mktemp("models") / "screening", ("normal", "abnormal"))


def test_nih_csv_columns_are_carried_into_the_records(nih, screening_model, tmp_path):
    report = evaluate("screening", screening_model, nih, tmp_path / "eval", "--group-by", ATTRIBUTES)
    assert_schema(report)
    entries = {row["Image Index"]: row for row in rows(nih / "Data_Entry_2017.csv")}
    tested = (nih / "test_list.txt").read_text().split()
    for attribute, column in (("sex", "Patient Gender"), ("view", "View Position")):
        section = report["subgroups"][attribute]
        assert section["source"] == "NIH CSV Data_Entry_2017.csv" and section["missing"] == 0
        assert {v: g["count"] for v, g in section["groups"].items()} == Counter(entries[n][column] for n in tested)
    site = report["subgroups"]["site"]  # the NIH CSV has no site: all missing, said in a note
    assert site == {"source": "none", "groups": {}, "largest_gap": None, "missing": 16}
    assert any(note.startswith("subgroups site: none of the 16") for note in report["notes"])


def test_metadata_csv_overrides_the_nih_columns(nih, screening_model, tmp_path):
    names = (nih / "test_list.txt").read_text().split()
    meta = write_rows(tmp_path / "meta.csv", [{"file": name, "sex": "female"} for name in names])
    report = evaluate("screening", screening_model, nih, tmp_path / "eval", "--group-by", "sex,view", "--metadata", meta)
    assert report["subgroups"]["sex"]["source"] == "metadata CSV meta.csv"
    assert list(report["subgroups"]["sex"]["groups"]) == ["F"] and report["subgroups"]["sex"]["groups"]["F"]["count"] == 16
    assert report["subgroups"]["view"]["source"] == "NIH CSV Data_Entry_2017.csv"  # a column the CSV lacks


def test_a_single_class_group_gets_a_null_auroc_and_a_note_and_a_tiny_group_no_metrics(kermany, pneumonia_model,
                                                                                        tmp_path):
    test_files = sorted(p.relative_to(kermany).as_posix() for p in (kermany / "test").rglob("*.jpeg"))
    normals = [name for name in test_files if "/NORMAL/" in name]
    site = {name: "Only normals" for name in normals}
    site.update({name: "Tiny" for name in [n for n in test_files if n not in site][:2]})
    meta = write_rows(tmp_path / "meta.csv", [{"file": name, "site": site.get(name, "Mixed")} for name in test_files])
    report = evaluate("pneumonia", pneumonia_model, kermany, tmp_path / "eval", "--group-by", "site", "--metadata", meta)
    assert_schema(report)
    groups = report["subgroups"]["site"]["groups"]
    assert groups["Only normals"]["count"] == 6
    assert groups["Only normals"]["metrics"]["auroc/pneumonia"] == {"value": None, "low": None, "high": None}
    assert groups["Only normals"]["metrics"]["accuracy"]["value"] is not None
    assert all(row["value"] is None for row in groups["Tiny"]["metrics"].values()) and groups["Tiny"]["count"] == 2
    assert groups["Mixed"]["metrics"]["auroc/pneumonia"]["value"] is None  # all pneumonia: a single class too
    notes = "\n".join(report["notes"])
    assert "Only normals: auroc/pneumonia" in notes and "Tiny (2)" in notes


@pytest.mark.parametrize("options, expected", [
    (["--group-by", "sex,ethnicity"], "error: --group-by: unknown attribute 'ethnicity'; known: sex, age, view, site"),
    (["--group-by", "sex", "--metadata", "{tmp}/nope.csv"], "error: --metadata {tmp}/nope.csv: no such file"),
    (["--group-by", "sex", "--metadata", "{tmp}/nofile.csv"], "error: --metadata {tmp}/nofile.csv: no 'file' column "
                                                              "(columns: name, sex)"),
    (["--group-by", "sex", "--metadata", "{tmp}/binary.csv"], "error: --metadata {tmp}/binary.csv: unreadable"),
    (["--metadata", "{tmp}/nofile.csv"], "error: --metadata {tmp}/nofile.csv: needs --group-by"),
])
def test_bad_options_fail_in_one_line_and_write_nothing(kermany, pneumonia_model, tmp_path, options, expected):
    (tmp_path / "nofile.csv").write_text("name,sex\na.png,M\n")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x81binary\x00")
    options = [option.format(tmp=tmp_path) for option in options]
    result = evaluate("pneumonia", pneumonia_model, kermany, tmp_path / "eval", *options, expect=2)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(expected.format(tmp=tmp_path)), result.output
    assert not (tmp_path / "eval").exists()


def test_finetune_reports_segmentation_subgroups_and_refuses_a_bad_attribute_before_training(tmp_path):
    data = get_task("lungseg").write_synthetic(tmp_path / "montgomery", 10, 0)
    out = tmp_path / "model"
    result = spcxr("finetune", "lungseg", "--data", data, "--output-dir", out, "--max-steps", 1, *TINY,
                   "--group-by", "ages", expect=2)
    assert "unknown attribute 'ages'" in result.output and not out.exists()
    spcxr("finetune", "lungseg", "--data", data, "--output-dir", out, "--max-steps", 1, *TINY, "--eval-split", "train",
          "--group-by", "sex,view", "--metadata", data / "metadata.csv")
    report = json.loads((out / "metrics.json").read_text())
    assert_schema(report)
    assert report["num_images"] == 16
    for section in report["subgroups"].values():
        assert section["source"] == "metadata CSV metadata.csv"
        for group in section["groups"].values():
            assert list(group["metrics"]) == ["dice"]
    log = json.loads((out / "training_log.json").read_text())
    assert log["options"]["group_by"] == "sex,view"


def test_reproduce_reports_subgroups_in_every_run(kermany, tmp_path):
    out = tmp_path / "reproduced"
    spcxr("reproduce", "pneumonia", "--data", kermany, "--models", "scratch", "--output-dir", out, "--max-steps", 1,
          "--config", "tiny", "--image-size", 64, "--batch-size", 8, "--group-by", "sex", "--metadata",
          kermany / "metadata.csv")
    (run,) = json.loads((out / "results.json").read_text())["runs"]
    report = json.loads((out / run["dir"] / "metrics.json").read_text())
    assert_schema(report)
    assert report["subgroups"]["sex"]["source"] == "metadata CSV metadata.csv"


def test_largest_gap_is_the_largest_difference_of_one_metric_between_two_groups():
    def group(**values):
        return {"count": 10, "metrics": {name: {"value": value, "low": None, "high": None} for name, value in values.items()}}

    groups = {"M": group(accuracy=0.80, ece=0.10), "F": group(accuracy=0.65, ece=0.05),
              "O": group(accuracy=None, ece=0.30)}
    assert largest_gap(groups) == {"metric": "ece", "difference": pytest.approx(0.25), "between": ["O", "F"]}
    groups["O"]["metrics"]["ece"]["value"] = None
    assert largest_gap(groups) == {"metric": "accuracy", "difference": pytest.approx(0.15), "between": ["M", "F"]}
    assert largest_gap({"M": group(accuracy=0.8), "F": group(accuracy=None)}) is None


def test_ages_are_binned_from_years_or_dicom_age_strings_and_sexes_normalised():
    assert [normalise("age", raw) for raw in ("063Y", "240M", "045", 80, "17", "130Y", "sixty", "")] == [
        "60–79", "18–39", "40–59", "≥80", "<18", None, None, None]
    assert [normalise("sex", raw) for raw in ("M", "female", " F ", "Male", "x", None)] == ["M", "F", "F", "M", None, None]
    assert normalise("view", " ap ") == "AP"
