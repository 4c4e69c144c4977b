"""Runs the training tests (marker `training`) over many seeds and prints, per recorded figure, the worst and the
mean, so each test's threshold can be checked against the worst seed:

    .venv/bin/python tests/seed_sweep.py                  # seeds 0-9
    .venv/bin/python tests/seed_sweep.py --seeds 0-19 -k deploy

A test reads its seed from SPCXR_TEST_SEED (conftest's `seed` fixture) and records what it asserts with
`record_property`; the figures come back through pytest's JUnit XML. Failing seeds are listed, not hidden.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def seeds(text: str) -> list[int]:
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(seed) for seed in text.split(",")]


def run_seed(seed: int, keyword: str | None, workers: str) -> tuple[dict, list[str]]:
    """{(test, figure): value} of one seed, and the tests that failed with it."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.xml"
        command = [sys.executable, "-m", "pytest", str(TESTS), "-m", "training", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}", "-o", "junit_family=xunit1", "-n", workers]
        if keyword:
            command += ["-k", keyword]
        subprocess.run(command, env={**os.environ, "SPCXR_TEST_SEED": str(seed), "HF_HUB_OFFLINE": "1"},
                       capture_output=True, text=True)
        figures, failed = {}, []
        for case in ElementTree.parse(report).iter("testcase"):
            name = case.get("name")
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(name)
            for prop in case.iter("property"):
                figures[name, prop.get("name")] = float(prop.get("value"))
    return figures, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=seeds, default=list(range(10)), help="e.g. 0-9 or 0,3,7 (default 0-9)")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression to narrow the tests")
    parser.add_argument("-n", dest="workers", default="auto", help="pytest-xdist workers (default auto)")
    args = parser.parse_args()
    values, failures = defaultdict(dict), defaultdict(list)
    for seed in args.seeds:
        figures, failed = run_seed(seed, args.keyword, args.workers)
        for key, value in figures.items():
            values[key][seed] = value
        for name in failed:
            failures[name].append(seed)
        print(f"seed {seed}: {len(figures)} figures, {len(failed)} failed", file=sys.stderr, flush=True)
    print("| test | figure | worst | (seed) | mean | best | seeds |\n|---|---|---|---|---|---|---|")
    for (test, figure), by_seed in sorted(values.items()):
        lower_is_better = figure.endswith(("ratio", "difference"))
        worst_seed = (max if lower_is_better else min)(by_seed, key=by_seed.get)
        best = (min if lower_is_better else max)(by_seed.values())
        print(f"| {test} | {figure} | {by_seed[worst_seed]:.3f} | {worst_seed} | "
              f"{statistics.mean(by_seed.values()):.3f} | {best:.3f} | {len(by_seed)} |")
    for name, failed_seeds in sorted(failures.items()):
        print(f"FAILED {name} with seeds {failed_seeds}")


if __name__ == "__main__":
    main()
