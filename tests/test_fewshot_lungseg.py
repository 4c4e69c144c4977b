"""P5, the few-shot experiment: pretrained vs scratch UNETR on the Montgomery layout, paired over seeds."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import fewshot_lungseg  # noqa: E402
from test_benchmarks import python_m  # noqa: E402


def fewshot(*args, timeout=300):
    # One thread: the suite runs one pytest worker per core (the script's default is 2, for the benchmark).
    return python_m("benchmarks.fewshot_lungseg", "--threads", 1, *args, timeout=timeout)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    output, work = tmp_path_factory.mktemp("fewshot"), tmp_path_factory.mktemp("fewshot-work")
    result = fewshot("--quick", "--output-dir", output, "--work-dir", work)
    assert result.returncode == 0, result.stderr[-3000:]
    return output, work, json.loads((output / "fewshot_lungseg.json").read_text())


def test_quick_run_pretrains_then_fine_tunes_both_initialisations_for_every_seed(quick):
    output, work, summary = quick
    assert (work / "pretrain" / "backbone" / "model.safetensors").is_file()
    assert summary["backbone"] == str(work / "pretrain" / "backbone")
    runs = {(run["model"].split("=")[0], run["seed"]) for run in summary["runs"]}
    assert runs == {(model, seed) for model in ("ss-cxr", "scratch") for seed in (0, 1)}
    for run in summary["runs"]:
        assert run["train_images"] == 3 and run["test"]["num_images"] == summary["test_images"] > 0
        assert (work / "fewshot" / run["dir"] / "metrics.json").is_file()
    # The scratch run is the same ViT: same number of parameters as the pretrained one.
    sizes = {p.name: (p / "model.safetensors").stat().st_size for p in (work / "fewshot" / "runs").iterdir()}
    assert len(set(sizes.values())) == 1, sizes


def test_summary_pairs_seeds_and_reports_mean_std(quick):
    _, _, summary = quick
    ss, scratch = summary["dice"]["ss-cxr"], summary["dice"]["scratch"]
    by_run = {(run["model"].split("=")[0], run["seed"]): run["test"]["metrics"]["dice"] for run in summary["runs"]}
    assert ss == [by_run["ss-cxr", 0], by_run["ss-cxr", 1]] and scratch == [by_run["scratch", 0], by_run["scratch", 1]]
    assert summary["paired"]["differences"] == pytest.approx([a - b for a, b in zip(ss, scratch)])
    assert summary["summary"]["ss-cxr"]["mean"] == pytest.approx(sum(ss) / 2)
    assert summary["summary"]["scratch"]["std"] == pytest.approx(abs(scratch[0] - scratch[1]) / 2 ** 0.5)


def test_outputs_say_synthetic_and_show_the_table_and_plot(quick):
    output, _, summary = quick
    text = (output / "fewshot_lungseg.md").read_text()
    assert summary["synthetic"] and "synthetic phantom" in text and "--quick" in text
    assert "| ss-cxr |" in text and "| scratch |" in text and "paired t-test" in text
    assert (output / "fewshot_lungseg.png").read_bytes()[:4] == b"\x89PNG"


def test_given_backbone_and_montgomery_folder_skip_pretraining(quick, tmp_path):
    """The real-data path: a Montgomery-layout folder and an existing backbone (e.g. spcxr/vit-s)."""
    from spcxr_hub.plugins.registry import get_task

    _, work, _ = quick
    montgomery = get_task("lungseg").write_synthetic(tmp_path / "MontgomerySet", 5, 7)
    # In this process: the command line itself is the fixture's; a fresh interpreter costs ~5 s of imports.
    argv = ["--quick", "--threads", "1", "--data", montgomery, "--backbone", work / "pretrain" / "backbone",
            "--output-dir", tmp_path / "out", "--work-dir", tmp_path / "work"]
    assert fewshot_lungseg.main(list(map(str, argv))) == 0
    summary = json.loads((tmp_path / "out" / "fewshot_lungseg.json").read_text())
    assert summary["pretraining"] is None and summary["test_images"] == 2  # every fifth of 10 films
    assert not (tmp_path / "work" / "pretrain").exists()


def test_a_backbone_of_another_architecture_is_refused(quick, tmp_path):
    from spcxr_hub.training.presets import preset_config

    preset_config("tiny", hidden_size=32, image_size=64).save_pretrained(tmp_path / "other")
    with pytest.raises(SystemExit, match="hidden_size 32 vs 64"):
        fewshot_lungseg.check_same_architecture(str(tmp_path / "other"), "tiny", 64)
    fewshot_lungseg.check_same_architecture(str(quick[1] / "pretrain" / "backbone"), "tiny", 64)


def test_paired_statistics():
    result = fewshot_lungseg.paired([0.90, 0.80, 0.95], [0.85, 0.82, 0.90])
    assert result["differences"] == pytest.approx([0.05, -0.02, 0.05])
    assert result["wins"] == 2 and result["n"] == 3
    assert result["mean"] == pytest.approx(0.08 / 3)
    assert 0 < result["p_value"] < 1


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "at least two distinct seeds"),
    (["--seeds", "a,b"], "comma-separated integers"),
    (["--shots", "0"], "--shots must be positive"),
    (["--data", "/no/such/folder"], "not a folder"),
])
def test_bad_options_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        fewshot_lungseg.parse(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
