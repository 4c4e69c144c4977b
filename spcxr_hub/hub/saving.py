"""Writing outputs so that a crash never leaves a half-written model directory or file behind."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputExistsError


def _public(path: Path, mode: int) -> None:
    """mkdtemp/mkstemp create private (0700/0600) paths; give the result the modes a plain mkdir/open would."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(mode & ~umask)


@contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary sibling folder; on success it replaces `path`, on any error it is removed.

    A non-empty existing `path` is an error unless `overwrite` is set, so a typo never clobbers a trained model."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise OutputExistsError(f"{path}: already exists and is not empty (choose another output directory or overwrite it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    _public(staging, 0o777)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.replace(staging, path)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary sibling path to write; renamed over `path` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.partial-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    _public(Path(staging), 0o666)
    try:
        yield Path(staging)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    os.replace(staging, path)


def save_model_directory(path: str | os.PathLike, model, image_processor=None, *, overwrite: bool = False) -> Path:
    """Model (+ processor) → a directory loadable with the Auto classes, pipelines and remote code; all or nothing."""
    with atomic_directory(path, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        if image_processor is not None:
            image_processor.save_pretrained(staging)
    return Path(path)
