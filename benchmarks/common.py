"""Timing and reporting shared by the measures: interleaved, warmed-up, median-of-repeats timings; result rows."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

# ViT-S/16 at 224²: 4.61 GMAC per image forward (patch embedding, 12 blocks with attention, head excluded).
VIT_S_GMAC = 4.61


@dataclass
class Settings:
    quick: bool = False
    threads: int = 2
    device: str = "cpu"
    batch_size: int = 32
    image_size: int = 224
    warmup: int = 2
    repeats: int = 5
    output_dir: str = "."  # where a measure writes files of its own (P5's table and plot)

    @classmethod
    def make(cls, quick: bool, threads: int, device: str, output_dir: str = ".") -> Settings:
        if quick:
            return cls(quick=True, threads=threads, device=device, batch_size=2, image_size=32, warmup=1, repeats=2,
                       output_dir=output_dir)
        return cls(quick=False, threads=threads, device=device, output_dir=output_dir)


@dataclass
class Row:
    """One line of the results table: `ours` against `peer`, their `ratio`, and whether it meets `goal`."""

    id: str
    measure: str
    ours_label: str
    ours: float
    peer_label: str
    peer: float
    unit: str
    goal: str  # ">= 1.0" or "<= 0.6" on the ratio; other goals come with `met`; "" for information only
    notes: str = ""
    details: dict = field(default_factory=dict)
    met: bool | None = None
    ratio: float = field(init=False)

    def __post_init__(self):
        self.ratio = self.ours / self.peer if self.peer else float("nan")
        if self.goal.startswith((">= ", "<= ")) and self.met is None:
            sign, value = self.goal.split()
            self.met = self.ratio >= float(value) if sign == ">=" else self.ratio <= float(value)

    def as_dict(self) -> dict:
        return asdict(self)


def interleaved(candidates: dict[str, Callable[[], object]], *, warmup: int, repeats: int,
                sync: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each candidate: `warmup` untimed rounds, then `repeats` rounds in which every candidate runs
    once, the order reversed every other round, so that drift in the machine's load hits all of them alike."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_ in range(repeats):
        order = list(candidates.items())
        for name, fn in order[::-1] if round_ % 2 else order:
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def cuda_sync(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def matmul_peak_gflops(threads: int, device: str = "cpu", quick: bool = False) -> dict:
    """The machine's fp32 matmul throughput (GFLOP/s): the best of the median rates of a few shapes, among them the
    MLP matmul of ViT-S at batch 32 (6304 × 384 @ 384 × 1536)."""
    import torch

    torch.set_num_threads(threads)
    shapes = [(512, 384, 1536)] if quick else [(6304, 384, 1536), (2048, 2048, 2048)]
    rates = {}
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device)
        b = torch.randn(k, n, device=device)
        times = interleaved({"mm": lambda: a @ b}, warmup=2, repeats=3 if quick else 7, sync=cuda_sync(device))["mm"]
        rates[f"{m}x{k}x{n}"] = 2 * m * k * n / median(times) / 1e9
    return {"gflops": max(rates.values()), "by_shape": rates}


def machine(threads: int, device: str) -> dict:
    import torch

    from spcxr_hub.inference.path_timing import cpu_model

    info = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "cpu_flags": _cpu_flags(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "load_average_before": os.getloadavg(),
    }
    for name in ("timm", "transformers"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        import torch.backends.mkldnn  # noqa: F401

        info["onednn_bf16_native"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        info["onednn_bf16_native"] = False
    from dataclasses import asdict

    from spcxr_hub.inference.deploy import choose_cpu_path

    info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    info["cpu_fast_path"] = asdict(choose_cpu_path())  # what `spcxr predict --fast` runs on this CPU, and why
    return info


def _cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []
