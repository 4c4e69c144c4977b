"""The per-user registry of runtime exports, so that `spcxr predict --fast --model MODEL_DIR` can find an int8 export
of the same weights (`spcxr export --format onnx|openvino --int8` registers each export it writes).

A JSON file, `<HF_HOME>/spcxr_hub/exports.json` (`SPCXR_EXPORT_REGISTRY` overrides the path): exports keyed by the
SHA-256 of the source's `model.safetensors`, so a copied or moved model directory still finds its exports and a
retrained one in the same place does not. Each export's own `export.json` repeats the digest (`source_sha256`): a
registered folder later overwritten by another model's export is not taken for this one. Digests of source files are
cached by (path, size, mtime) so that predict does not re-hash ~90 MB on every start. Reading never fails: a missing or
damaged registry is an empty one (it is a cache, rebuilt by exporting again).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..hub.saving import atomic_file

WEIGHTS_FILE = "model.safetensors"
# The order `--fast` prefers registered exports in, fastest first: measured on the benchmark machine (P4 in
# benchmarks/): OpenVINO int8 and onnxruntime int8 well ahead of torch's dynamic int8; fp32 exports are not faster
# than torch's own paths, so they are never chosen.
PREFERENCE = (("openvino", "int8"), ("onnx", "int8"))


def registry_path() -> Path:
    if os.environ.get("SPCXR_EXPORT_REGISTRY"):
        return Path(os.environ["SPCXR_EXPORT_REGISTRY"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home) / "spcxr_hub" / "exports.json"


def _read() -> dict:
    try:
        data = json.loads(registry_path().read_text())
    except (OSError, ValueError):
        return {"exports": {}, "digests": {}}
    if not isinstance(data, dict):
        return {"exports": {}, "digests": {}}
    data.setdefault("exports", {})
    data.setdefault("digests", {})
    return data


def _write(data: dict) -> None:
    """Atomic (a reader sees the old or the new file); two exporters racing lose one entry at worst."""
    with atomic_file(registry_path()) as staging:
        staging.write_text(json.dumps(data, indent=2))


def weights_digest(model_dir: str | Path, *, remember: bool = True) -> str | None:
    """SHA-256 of `model_dir/model.safetensors`, or None where there is none (a Hub id, sharded weights)."""
    weights = Path(model_dir) / WEIGHTS_FILE
    try:
        stat = weights.stat()
    except OSError:
        return None
    key, stamp = str(weights.resolve()), [stat.st_size, stat.st_mtime_ns]
    data = _read()
    cached = data["digests"].get(key)
    if isinstance(cached, dict) and cached.get("stamp") == stamp and cached.get("sha256"):
        return cached["sha256"]
    sha = hashlib.sha256()
    with open(weights, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    digest = sha.hexdigest()
    if remember:
        data["digests"][key] = {"stamp": stamp, "sha256": digest}
        try:
            _write(data)
        except OSError:  # a read-only cache only costs the hash next time
            pass
    return digest


def register(digest: str, folder: str | Path, manifest: dict) -> Path:
    """Records an export of the weights with `digest`; returns the registry's path. Raises OSError if unwritable."""
    folder = str(Path(folder).resolve())
    data = _read()
    entries = [e for e in data["exports"].get(digest, []) if e.get("folder") != folder]
    entries.append({"folder": folder, "format": manifest["format"], "precision": manifest["precision"],
                    "path": manifest.get("path"), "registered": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    data["exports"][digest] = entries
    _write(data)
    return registry_path()


@dataclass(frozen=True)
class Found:
    """The lookup's answer: `folder` of the usable export (None if none), and why others were passed over."""

    folder: Path | None
    manifest: dict | None
    skipped: tuple[str, ...] = ()


def find_int8_export(digest: str | None) -> Found:
    """The preferred registered int8 export of the weights with `digest` whose folder still holds that export and
    whose runtime is installed. Folders that vanished are dropped from the registry (and reported)."""
    from .runtimes import ExportedFolderError, read_manifest, require_runtime

    if digest is None:
        return Found(None, None)
    data = _read()
    entries = data["exports"].get(digest, [])
    rank = {key: i for i, key in enumerate(PREFERENCE)}
    usable, skipped, gone = [], [], []
    for entry in entries:
        key = (entry.get("format"), entry.get("precision"))
        if key not in rank:
            continue
        folder = Path(entry.get("folder", ""))
        if not folder.is_dir():
            gone.append(entry)
            skipped.append(f"registered export {folder} is gone (moved or deleted)")
            continue
        try:
            manifest = read_manifest(folder)
            require_runtime(manifest["format"])
        except ExportedFolderError as error:
            skipped.append(f"registered export {folder} not usable: {error}")
            continue
        if manifest.get("source_sha256") != digest or manifest.get("precision") != "int8":
            skipped.append(f"registered export {folder} now holds another model's export")
            continue
        usable.append((rank[key], -len(usable), folder, manifest))  # ties: the latest registration first
    if gone:
        data["exports"][digest] = [e for e in entries if e not in gone]
        try:
            _write(data)
        except OSError:
            pass
    if not usable:
        return Found(None, None, tuple(skipped))
    _, _, folder, manifest = min(usable)
    return Found(folder, manifest, tuple(skipped))
