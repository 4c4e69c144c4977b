"""Lays a model directory into a Hugging Face cache exactly as a download leaves it (blobs, snapshot symlinks, refs),
so `from_pretrained("org/name")` can be tested offline through the real cache resolution."""

import hashlib
import os
import shutil
from pathlib import Path


def publish_to_cache(model_dir: Path, repo_id: str, cache_dir: Path) -> Path:
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    files = sorted(p for p in Path(model_dir).rglob("*") if p.is_file())
    commit = hashlib.sha1(b"".join(p.read_bytes() for p in files)).hexdigest()
    snapshot = repo / "snapshots" / commit
    for file in files:
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, blob)
        link = snapshot / file.relative_to(model_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
