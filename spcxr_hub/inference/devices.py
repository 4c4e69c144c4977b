"""Where inference tensors go: one rule for every inference loop (`spcxr predict`, `evaluate`, `embed`, the
evaluation at the end of fine-tuning). Training leaves placement to Accelerate's `prepare`.

`resolve_device("auto" | "cpu" | "cuda" | "cuda:N" | "mps")` turns the `--device` option into a `torch.device`
(auto: CUDA, else MPS, else CPU) or raises `DeviceError`, one line naming `--device`; a loop moves each batch to the
model's own device with `to_device(batch, model_device(model))` and brings results back with `.float().cpu()`.
Kept free of accelerate (whose `send_to_device` does the same) so that `spcxr predict` starts fast.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import UsageError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


class DeviceError(UsageError):
    """A `--device` that is unknown or not available on this machine (a user error)."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The device `--device NAME` stands for; DeviceError when it is unknown or absent here."""
    if isinstance(name, torch.device):
        return name
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise DeviceError(f"--device {name!r}: unknown device; expected {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
            raise DeviceError(f"--device {name}: CUDA is not available on this machine (PyTorch {torch.__version__}, "
                              f"{built}); use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return device
    if device.type == "mps" and device.index is None:
        if not _mps_available():
            raise DeviceError(f"--device {name}: Apple MPS is not available on this machine; use --device cpu or auto")
        return device
    raise DeviceError(f"--device {name!r}: unsupported device; expected {DEVICE_CHOICES}")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a module that holds none."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def to_device(batch, device: torch.device | str):
    """Every tensor of `batch` (a tensor, or dicts / lists / tuples of them, nested) on `device`; other values as
    they are. Copies from pinned memory overlap with compute (`non_blocking`)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=batch.is_pinned())
    if isinstance(batch, Mapping):
        return type(batch)({key: to_device(value, device) for key, value in batch.items()})
    if isinstance(batch, (list, tuple)):
        moved = [to_device(value, device) for value in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch
