"""Which of two good fast paths is faster on this machine: measured once, then cached.

Where bf16 is native and an int8 runtime export of the same weights is registered, CPU features do not settle the
choice: on an AMX Xeon bf16 + fused oneDNN ran ViT-S at 5.1× timm fp32, while on an EPYC with AVX512_BF16 (no AMX)
one P4 run measured OpenVINO int8 at 2.4× against bf16's 2.1×. So `spcxr predict --fast` times both there, on one
batch of random images of the model's size (a warm-up each, then interleaved repeats, median), keeps the faster and
records the figures in `fast_paths.json` beside the export registry (`export_registry.registry_path()`), keyed by
everything the result depends on: CPU model and capability, threads, library versions, weights and export. Later
runs read the answer; deleting the file measures again. Reading never fails: a damaged cache is an empty one.
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from ..hub.saving import atomic_file

BATCH = 8
REPEATS = 3


def cache_path() -> Path:
    from .export_registry import registry_path

    return registry_path().with_name("fast_paths.json")


def cpu_model() -> str:
    """The CPU's model name (Linux `/proc/cpuinfo`, else `platform.processor()`)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _read() -> dict:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(data: dict) -> None:
    with atomic_file(cache_path()) as staging:
        staging.write_text(json.dumps(data, indent=2))


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def measured(key: dict, candidates: dict[str, Callable[[], Callable[[], object]]]) -> dict:
    """`{"chosen": name, "seconds_per_batch": {name: s}, "batch": n, "cached": bool}` for the fastest of
    `candidates` ({name: build}, `build()` → a zero-argument call that runs one batch). Built and timed only when
    the cache has no entry for `key` (a JSON-able description of machine, libraries and model)."""
    entries, digest = _read(), _digest(key)
    entry = entries.get(digest)
    if isinstance(entry, dict) and entry.get("chosen") in candidates and entry.get("key") == key:
        return {**entry, "cached": True}
    runs = {name: build() for name, build in candidates.items()}
    for run in runs.values():  # warm-up: first-call allocation, prepacking, graph compilation
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(REPEATS):
        for name, run in runs.items():  # interleaved, so drifting machine load hits every candidate alike
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    entry = {"key": key, "chosen": min(seconds, key=seconds.get), "seconds_per_batch": seconds, "batch": BATCH,
             "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    entries[digest] = entry
    try:
        _write(entries)
    except OSError:  # a read-only cache only costs the measurement next time
        pass
    return {**entry, "cached": False}
