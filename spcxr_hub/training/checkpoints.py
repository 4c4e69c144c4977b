"""Resumable training checkpoints, one implementation for GMML pretraining (`pretrain.py`) and fine-tuning
(`spcxr finetune`).

A checkpoint is a folder `step-<N>` holding `accelerator.save_state`'s files and `spcxr_checkpoint.json` (the step,
the run's fingerprint, the number of processes). It is written as `.step-<N>.partial` and renamed into place by the
main process once every process has written its part, so a kill at any moment leaves either a complete checkpoint
or a `.partial` folder that nothing reads. Resuming checks the fingerprint first: a checkpoint of another model
configuration, task or recipe is refused with one line naming what differs, instead of loading weights into a run
they do not belong to (or failing deep inside `load_state`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from ..errors import UsageError

META = "spcxr_checkpoint.json"
PATTERN = re.compile(r"^step-(\d+)$")
# Config entries that say how or when a config was saved, not what the model is.
VOLATILE_CONFIG_KEYS = frozenset({"transformers_version", "architectures", "auto_map", "_name_or_path", "dtype",
                                  "torch_dtype"})


class CheckpointError(UsageError):
    """A checkpoint that cannot be resumed: missing, unreadable, or of another configuration (a user error)."""


def model_config_fingerprint(config) -> dict:
    """A model config (any transformers `PretrainedConfig`) as plain, comparable JSON."""
    fields = {k: v for k, v in config.to_dict().items() if k not in VOLATILE_CONFIG_KEYS}
    return json.loads(json.dumps(fields, sort_keys=True, default=str))


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (step, path) under `folder`, oldest first; half-written ones (.partial) are ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = PATTERN.match(path.name)
        if match and (path / META).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def save_checkpoint(accelerator, folder: Path, step: int, fingerprint: dict, *, keep: int, digits: int = 8,
                    files: Mapping[str, object] | None = None) -> Path:
    """`accelerator.save_state` into `folder/.step-N.partial`, renamed to `folder/step-N` (N zero-padded to `digits`)
    by the main process once every process has written; the newest `keep` checkpoints stay. `files`: more JSON files
    (name → content) written into the checkpoint. Every process must call this (it synchronises them)."""
    folder = Path(folder)
    final = folder / f"step-{step:0{digits}d}"
    staging = folder / f".{final.name}.partial"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed run
    accelerator.wait_for_everyone()  # nobody writes into the staging folder before it is clean
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()  # every process's shard is written before the folder is renamed
    if accelerator.is_main_process:
        for name, content in (files or {}).items():
            (staging / name).write_text(json.dumps(content))
        meta = {"step": step, "fingerprint": fingerprint, "num_processes": accelerator.num_processes,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (staging / META).write_text(json.dumps(meta, indent=2))  # last: its presence marks a complete checkpoint
        if final.exists():  # a resumed run passes the step of a checkpoint it did not start from
            shutil.rmtree(final)
        os.replace(staging, final)
        for _, old in list_checkpoints(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()  # nobody reads or resumes before the rename
    return final


def differences(saved: dict, now: dict) -> list[str]:
    """`section.key: before → now` for every entry of two fingerprints ({section: {key: value}}) that differs."""
    found = []
    for section in sorted(set(saved) | set(now)):
        before, after = saved.get(section, {}), now.get(section, {})
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                found.append(f"{section}.{key}: {before.get(key)!r} → {after.get(key)!r}")
    return found


def check_checkpoint(path: Path, fingerprint: dict, *, option: str = "--resume") -> dict:
    """The checkpoint's metadata, or a CheckpointError naming what differs from this run's fingerprint."""
    path = Path(path)
    if not (path / META).is_file():
        raise CheckpointError(f"{option} {path}: not a checkpoint of this program (no {META})")
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{option} {path}: unreadable {META} ({' '.join(str(error).split())})") from None
    found = differences(meta.get("fingerprint", {}), fingerprint)
    if found:
        shown = "; ".join(found[:4]) + (f"; and {len(found) - 4} more" if len(found) > 4 else "")
        raise CheckpointError(
            f"{option} {path}: the checkpoint belongs to another configuration ({shown}); resume with its settings "
            "or start a new --output-dir"
        )
    return meta
