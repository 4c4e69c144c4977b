"""The card's trust sections: every number is metrics.json's, read back from the card text of a real `spcxr finetune`
run; parts metrics.json lacks say "not evaluated" with the reason from its notes; pictures are linked only when
they are in the card's folder, and `spcxr export` publishes them."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import html
import json
import re
import shutil

import pytest
from conftest import spcxr
from huggingface_hub import ModelCard

from spcxr_hub.hub.cards import render_card
from spcxr_hub.plugins.registry import get_task

TINY = ["--init", "scratch", "--config", "tiny", "--image-size", "64", "--max-steps", "2", "--batch-size", "8"]
INTERVAL = re.compile(r"^(-?\d+\.\d{3})(?: \((-?\d+\.\d{3})–(-?\d+\.\d{3})\))?$")
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")

SUBGROUPS = {
    "sex": {"source": "/data/site/metadata.csv", "missing": 1,
            "groups": {"F": {"count": 9, "metrics": {"auroc": {"value": 0.91234, "low": 0.8, "high": 0.99},
                                                     "accuracy": {"value": 0.5, "low": None, "high": None}}},
                       "M": {"count": 8, "metrics": {"auroc": {"value": None, "low": None, "high": None},
                                                     "accuracy": {"value": 0.75, "low": 0.5, "high": 1.0}}}},
            "largest_gap": {"metric": "accuracy", "difference": 0.25, "between": ["M", "F"]}},
    "age": {"source": "org/cxr-metadata", "missing": 14, "largest_gap": None,
            "groups": {"<40": {"count": 4, "metrics": {"auroc": {"value": 0.5, "low": 0.1, "high": 0.9}}}}},
}
INPUT_GATE = {
    "images": 18, "flagged": 3, "codes": {"out-of-distribution": 2, "inverted-grey-scale": 1}, "ood_threshold": 12.3456,
    "examples": [{"file": "/scans/site/film-1.png", "codes": ["out-of-distribution"],
                  "reasons": ["OOD score 15.2 above the threshold 12.3"], "ood_score": 15.2},
                 {"file": "film-2.png", "codes": ["inverted-grey-scale"], "reasons": ["air is bright"],
                  "ood_score": None}],
    "picture": "flagged_examples.png"}
EXPLANATIONS = {"picture": "explanations.png", "method": "gradcam", "errors_shown": 4}


# ------------------------------------------------------------------------------------------------- reading a card


def part(text: str, heading: str) -> str:
    """The body of `### heading` (up to the next heading of level 2 or 3)."""
    assert f"\n### {heading}\n" in text, heading
    return re.split(r"\n#{2,3} ", text.split(f"\n### {heading}\n", 1)[1], maxsplit=1)[0]


def tables(text: str) -> list[list[dict]]:
    """Every Markdown table of `text`: a list of rows, each {header: cell}, cells unescaped."""
    found, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([html.unescape(c.strip().replace("\\|", "|"))
                          for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])])
        elif block:
            header, rule, *rows = block
            assert set("".join(rule)) <= {"-"}, block
            found.append([dict(zip(header, row)) for row in rows])
            block = []
    return found


def table(text: str) -> list[dict]:
    (only,) = tables(text)
    return only


def parsed(text: str):
    """'0.912 (0.871–0.948)' → (0.912, 0.871, 0.948); '0.5' → (0.5, None, None); 'n/a' → None."""
    if text == "n/a":
        return None
    match = INTERVAL.match(text)
    assert match, text
    return tuple(None if g is None else float(g) for g in match.groups())


def same(text: str, entry) -> bool:
    """A card cell against a metrics.json {value, low, high} (or plain number), to the card's three decimals."""
    if not isinstance(entry, dict):
        entry = {"value": entry, "low": None, "high": None}
    if entry["value"] is None:
        return text == "n/a"
    value, low, high = parsed(text)
    expected = [entry["value"]] + ([entry["low"], entry["high"]] if entry["low"] is not None else [None, None])
    return all((a is None and b is None) or (a is not None and b is not None and abs(a - b) <= 5e-4 + 1e-9)
               for a, b in zip((value, low, high), expected))


def body(folder) -> str:
    return render_card(folder).text


def inject(folder, **sections):
    path = folder / "metrics.json"
    report = json.loads(path.read_text())
    for key, value in sections.items():
        if value is None:
            report.pop(key, None)
        else:
            report[key] = value
    path.write_text(json.dumps(report))
    return report


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real `spcxr finetune` (tiny, 2 steps) on synthetic pneumonia phantoms, calibrated on the validation split."""
    root = tmp_path_factory.mktemp("trust")
    data = get_task("pneumonia").write_synthetic(root / "pneumonia", 6, 0)
    spcxr("finetune", "pneumonia", "--data", data, "--output-dir", root / "model", *TINY,
          "--group-by", "sex,age,view,site", "--metadata", data / "metadata.csv")  # the synthetic writer's attributes
    return root / "model"


@pytest.fixture
def copy(run, tmp_path):
    return shutil.copytree(run, tmp_path / "model")


@pytest.fixture(scope="module")
def unvalidated(tmp_path_factory):
    """A real `spcxr finetune` of a task without a validation split (COVIDx: train and test): no temperature, no
    operating points, no prediction sets."""
    root = tmp_path_factory.mktemp("unvalidated")
    data = get_task("covid").write_synthetic(root / "covid", 6, 0)
    spcxr("finetune", "covid", "--data", data, "--output-dir", root / "model", *TINY)
    return root / "model"


def metrics(folder) -> dict:
    return json.loads((folder / "metrics.json").read_text())


# ------------------------------------------------------------------------------------------------- a real run


def test_calibration_section_is_metrics_json_before_and_after_temperature_scaling(run):
    text, calibration = ModelCard((run / "README.md").read_text()).text, metrics(run)["calibration"]
    section = part(text, "Calibration")
    assert float(re.search(r"T = (\d+\.\d{3})", section).group(1)) == pytest.approx(calibration["temperature"],
                                                                                     abs=5e-4)
    rows = {row["measure"]: row for row in table(section)}
    for key, measure in (("ece", "ECE (15 equal-width bins)"), ("adaptive_ece", "adaptive ECE (15 equal-mass bins)"),
                         ("brier", "Brier score"), ("nll", "negative log-likelihood")):
        assert same(rows[measure]["before temperature scaling"], calibration["uncalibrated"][key]), measure
        assert same(rows[measure]["after temperature scaling"], calibration["calibrated"][key]), measure
    assert IMAGE_LINK.findall(section) == [calibration["reliability_diagram"]]
    assert (run / calibration["reliability_diagram"]).is_file()


def test_headline_intervals_are_metrics_json_and_the_model_index_keeps_the_headline_metrics(run):
    card, report = ModelCard((run / "README.md").read_text()), metrics(run)
    section = part(card.text, "Uncertainty of the headline metrics")
    rows = {row["metric"]: row["value (95% interval)"] for row in table(section)}
    assert set(rows) == set(report["confidence_intervals"]["metrics"])
    for name, entry in report["confidence_intervals"]["metrics"].items():
        assert same(rows[name], entry), name
    assert {r.metric_type for r in card.data.eval_results} == set(report["metrics"])  # no trust number in it


def test_operating_points_table_is_metrics_json_with_the_split_that_chose_them(run):
    section, points = part((run / "README.md").read_text(), "Operating points"), metrics(run)["operating_points"]
    assert f"chosen on split `{points['chosen_on']}`" in section
    rows = table(section)
    assert len(rows) == len(points["rows"]) > 0
    for row, expected in zip(rows, points["rows"]):
        assert row["class"] == expected["label"]
        assert row["criterion"].startswith(f"target {expected['criterion']} {expected['target']:.3f}")
        assert ("(default)" in row["criterion"]) == expected["default"]
        assert same(row["threshold"], expected["threshold"])
        for key, header in (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("ppv", "PPV"),
                            ("npv", "NPV")):
            assert same(row[header], expected[key]), (row["criterion"], key)


def test_prediction_sets_are_metrics_json_with_their_calibration_split(run):
    section, sets = part((run / "README.md").read_text(), "Prediction sets"), metrics(run)["prediction_sets"]
    assert f"calibrated on split `{sets['calibration_split']}`" in section
    rows = {row["measure"]: row["value"] for row in table(section)}
    for key, measure in (("target_coverage", "target coverage"), ("empirical_coverage", "empirical coverage"),
                         ("mean_set_size", "mean set size")):
        assert same(rows[measure], sets[key]), measure
    assert int(rows["calibration images"]) == sets["num_calibration"]


def test_the_synthetic_notice_stands_next_to_the_trust_sections(run):
    trust = (run / "README.md").read_text().split("## Trusting its outputs", 1)[1].split("### ", 1)[0]
    assert "synthetic phantoms" in trust and "says nothing about patients" in trust


# ------------------------------------------------------------------------------------------------- injected parts


def test_subgroup_tables_are_the_subgroups_section(copy):
    notes = [note for note in metrics(copy)["notes"] if not note.startswith("subgroups")]  # the real run's own
    inject(copy, subgroups=SUBGROUPS, notes=notes)
    section = part(body(copy), "Subgroups")
    found = tables(section)
    assert len(found) == len(SUBGROUPS)
    for (attribute, report), rows, chunk in zip(SUBGROUPS.items(), found, section.split("#### ")[1:]):
        assert chunk.startswith(attribute)
        assert [row["group"] for row in rows] == list(report["groups"])
        for row, group in zip(rows, report["groups"].values()):
            assert int(row["count"]) == group["count"]
            for name, entry in group["metrics"].items():
                assert same(row[name], entry), (attribute, name)
        assert f"evaluated images without it: {report['missing']}." in chunk
    assert section.count("n/a") == 2 and not re.search(r"\b(nan|NaN|None|null)\b", section)
    sex, age = section.split("#### ")[1:]
    assert "Largest gap: accuracy 0.250, between M and F." in sex and "Largest gap: n/a." in age
    assert "metadata.csv" in sex and "/data/site" not in section  # a local path is not published
    assert "org/cxr-metadata" in age


def test_input_gate_and_explanations_are_their_sections_and_a_missing_picture_is_not_drawn(copy):
    shutil.copyfile(copy / "roc_curve.png", copy / "flagged_examples.png")
    (copy / "explanations.png").unlink(missing_ok=True)  # finetune drew it: the card must then say "not drawn"
    inject(copy, input_gate=INPUT_GATE, explanations=EXPLANATIONS)
    text = body(copy)
    gate = part(text, "Input gate")
    assert "flagged 3 of 18 evaluated images (16.7%)" in gate and "threshold: 12.346" in gate
    codes, examples = tables(gate)
    assert {row["finding"]: int(row["images"]) for row in codes} == INPUT_GATE["codes"]
    assert [row["file"] for row in examples] == ["film-1.png", "film-2.png"]  # names only, no local folders
    for row, example in zip(examples, INPUT_GATE["examples"]):
        assert row["findings"] == ", ".join(example["codes"]) and row["reasons"] == "; ".join(example["reasons"])
        assert same(row["OOD score"], example["ood_score"])
    assert IMAGE_LINK.findall(gate) == ["flagged_examples.png"]
    explanations = part(text, "Explanations")
    assert "4 errors shown, Grad-CAM maps" in explanations and "most confident errors" in explanations
    assert "not drawn" in explanations and not IMAGE_LINK.findall(explanations)


def test_a_deleted_reliability_diagram_is_not_drawn(copy):
    (copy / "reliability_diagram.png").unlink()
    section = part(body(copy), "Calibration")
    assert "Reliability diagram: not drawn" in section and not IMAGE_LINK.findall(section)


def test_absent_parts_are_not_evaluated_with_the_reason_from_the_notes(copy):
    report = inject(copy, operating_points=None, prediction_sets=None, subgroups=None, input_gate=None,
                    explanations=None)
    inject(copy, notes=[note for note in report["notes"] if not note.startswith("subgroups")] + [
        "operating points: the model has none stored (they are chosen on a validation split)",
        "prediction sets: the model has no conformal threshold",
        "subgroups: no metadata with patient attributes was given (--metadata)"])
    text = body(copy)
    for heading, reason in (("Operating points", "the model has none stored (they are chosen on a validation split)"),
                            ("Prediction sets", "the model has no conformal threshold"),
                            ("Subgroups", "no metadata with patient attributes was given (--metadata)"),
                            ("Input gate", "`metrics.json` has no `input_gate` section"),
                            ("Explanations", "`metrics.json` has no `explanations` section")):
        section = part(text, heading)
        assert f"**Not evaluated**: {reason}." in section, heading
        assert not tables(section) and not IMAGE_LINK.findall(section), heading


def test_a_model_without_a_validation_split_says_not_evaluated_and_no_nan(unvalidated):
    text, report = (unvalidated / "README.md").read_text(), metrics(unvalidated)
    assert report["calibration"]["temperature"] is None and "operating_points" not in report
    calibration = part(text, "Calibration")
    assert "**Not evaluated after temperature scaling**: the model has no fitted temperature" in calibration
    rows = {row["measure"]: row for row in table(calibration)}
    assert same(rows["ECE (15 equal-width bins)"]["value"], report["calibration"]["uncalibrated"]["ece"])
    assert "after temperature scaling" not in rows["Brier score"]  # no column of n/a
    assert "**Not evaluated**: the model has none stored" in part(text, "Operating points")
    assert "**Not evaluated**: the model has no conformal threshold" in part(text, "Prediction sets")
    assert "temperature-scaled" not in text and "not calibrated probabilities" in text
    assert not re.search(r"\b(nan|NaN|inf|None|null)\b", text)
    assert tables(text) and all(tables(text))  # no table without rows


def test_export_publishes_every_picture_the_card_links(copy, tmp_path):
    shutil.copyfile(copy / "roc_curve.png", copy / "flagged_examples.png")
    (copy / "explanations.png").unlink(missing_ok=True)
    inject(copy, input_gate=INPUT_GATE, explanations=EXPLANATIONS)
    spcxr("export", copy, "--repo-dir", tmp_path / "repo", "--repo-id", "org/pneumonia-demo")
    text = (tmp_path / "repo" / "README.md").read_text()
    linked = IMAGE_LINK.findall(text)
    assert {"reliability_diagram.png", "flagged_examples.png"} <= set(linked)
    assert all((tmp_path / "repo" / name).is_file() for name in linked)
    assert "explanations.png" not in linked and "not drawn" in part(text, "Explanations")


def test_the_real_run_card_shows_its_own_gate_and_explanations(run):
    """Not injected: the input gate and explanation grid `finetune` itself wrote into metrics.json."""
    text, report = (run / "README.md").read_text(), metrics(run)
    gate, drawn = report["input_gate"], report.get("explanations")
    section = part(text, "Input gate")
    assert f"flagged {gate['flagged']} of {gate['images']} evaluated images" in section
    assert IMAGE_LINK.findall(section) == ([gate["picture"]] if gate["picture"] else [])
    explanations = part(text, "Explanations")
    if drawn:
        assert f"{drawn['errors_shown']} errors shown" in explanations
        assert IMAGE_LINK.findall(explanations) == [drawn["picture"]] and (run / drawn["picture"]).is_file()
    else:
        assert "**Not evaluated**: the model made no error on this split" in explanations


def test_the_real_run_card_shows_its_own_subgroups(run):
    """All five parts from one real finetune: the subgroup tables equal the run's own metrics.json."""
    text, report = (run / "README.md").read_text(), metrics(run)
    section, groups = part(text, "Subgroups"), report["subgroups"]
    assert list(groups) == ["sex", "age", "view", "site"] and len(tables(section)) == len(groups)
    for (attribute, entry), rows in zip(groups.items(), tables(section)):
        assert [row["group"] for row in rows] == list(entry["groups"])
        for row, group in zip(rows, entry["groups"].values()):
            assert int(row["count"]) == group["count"]
            assert all(same(row[name], value) for name, value in group["metrics"].items()), attribute
    for heading in ("Calibration", "Operating points", "Prediction sets", "Subgroups", "Input gate"):
        assert "Not evaluated**:" not in part(text, heading), heading
