"""Publishing a model: a complete Hugging Face Hub repository folder (`export_repository`, `spcxr export`) and its
upload (`push_to_hub`, `spcxr push`).

A repository folder holds what a user of the Hub needs and nothing that runs code on load but the model's own source
files: safetensors weights, `config.json` with an `auto_map` for every Auto class, `preprocessor_config.json`, the
remote-code files, the model card (`README.md`, with a widget whose outputs were computed on `examples/`), and the
evaluation report, training log and plots. Pickled weights (`.bin`, `.pt`, `.pth`, …) are refused, not converted
silently: loading them runs arbitrary code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UsageError
from .card_facts import METRICS, PRETRAINING_SUMMARY, TRAINING_LOG, training_summary_for
from .cards import PICKLE_SUFFIXES, UNSET, build_card, write_bundle
from .saving import atomic_directory

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
CONFIG_FILES = ("config.json", "preprocessor_config.json")
LOG_FILES = (METRICS, TRAINING_LOG, PRETRAINING_SUMMARY)
PLOT_SUFFIX = ".png"


class PublishError(UsageError):
    """A model directory or repository id that cannot be published; the message says why in one line."""


def check_model_directory(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise PublishError(f"{model_dir}: no such model directory")
    if not (model_dir / "config.json").is_file():
        raise PublishError(f"{model_dir}: not a model directory (no config.json)")
    pickles = sorted(p.name for p in model_dir.iterdir() if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise PublishError(
            f"{model_dir}: pickled weight file(s) {', '.join(pickles)} will not be published (loading a pickle runs "
            "arbitrary code); load the model and save it again with save_pretrained, which writes safetensors")
    if not any(model_dir.glob("*.safetensors")):
        raise PublishError(f"{model_dir}: no safetensors weights (model.safetensors) in the model directory")


def code_files(config: dict, model_dir: Path) -> list[str]:
    """The remote-code files `auto_map` points at (in config.json and preprocessor_config.json)."""
    maps = [config.get("auto_map") or {}]
    processor_config = model_dir / "preprocessor_config.json"
    if processor_config.is_file():
        maps.append(json.loads(processor_config.read_text()).get("auto_map") or {})
    names = set()
    for auto_map in maps:
        for reference in auto_map.values():
            for item in reference if isinstance(reference, (list, tuple)) else [reference]:
                if item and "--" not in item:  # "org/repo--module.Class" lives in another repository
                    names.add(item.rsplit(".", 1)[0] + ".py")
    return sorted(names)


def copy_model_files(model_dir: Path, staging: Path) -> None:
    """Weights, configs, code, evaluation report, logs and plots; the card and its examples are written after."""
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") == "spcxr" and not config.get("auto_map"):
        raise PublishError(f"{model_dir / 'config.json'}: no auto_map; save the model again with save_pretrained "
                           "(SS-CXR models write their code files and auto_map)")
    names = {p.name for p in model_dir.glob("*.safetensors")} | set(WEIGHT_FILES) | set(CONFIG_FILES)
    names |= set(LOG_FILES) | {p.name for p in model_dir.glob(f"*{PLOT_SUFFIX}")}
    names |= {p.name for p in model_dir.glob("*.py")}
    missing = [name for name in code_files(config, model_dir) if not (model_dir / name).is_file()]
    if missing:
        raise PublishError(f"{model_dir}: auto_map names code file(s) that are missing: {', '.join(missing)}")
    for name in sorted(names):
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, staging / name)
    if not (staging / "preprocessor_config.json").is_file():
        if config.get("model_type") != "spcxr":
            raise PublishError(f"{model_dir}: no preprocessor_config.json (save the image processor beside the model)")
        from ..models.spcxr.image_processing_spcxr import SpcxrImageProcessor

        size = config.get("image_size", 224)
        SpcxrImageProcessor(size={"height": size, "width": size}).save_pretrained(staging)
    # The pretraining summary beside a backbone folder (pretrain.py's layout) travels with it, as do its loss curve.
    beside = model_dir.parent / PRETRAINING_SUMMARY
    if not (staging / PRETRAINING_SUMMARY).is_file() and beside.is_file():
        summary = json.loads(beside.read_text())
        if isinstance(summary, dict) and Path(str(summary.get("backbone", ""))).name == model_dir.name:
            shutil.copyfile(beside, staging / PRETRAINING_SUMMARY)
            if (model_dir.parent / "loss_curve.png").is_file() and not (staging / "loss_curve.png").exists():
                shutil.copyfile(model_dir.parent / "loss_curve.png", staging / "loss_curve.png")


def check_export_paths(model_dir, repo_dir, repo_id: str | None) -> tuple[Path, Path]:
    """What every export checks before writing: the model directory, the repo id, and that the two folders differ."""
    model_dir, repo_dir = Path(model_dir), Path(repo_dir)
    check_model_directory(model_dir)
    if repo_id is not None:
        validate_hub_id(repo_id)
    if repo_dir.resolve() == model_dir.resolve():
        raise PublishError(f"{repo_dir}: the repository folder must differ from the model directory")
    return model_dir, repo_dir


def is_native_repository(folder: Path) -> bool:
    """A native export (`native_export.py`): transformers' own ViT without auto_map, its card rendered at export."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "vit" and not config.get("auto_map")


def native_folder_for(folder: Path, repo_id: str) -> Path:
    """A native export pushed as it is: its card's widget URLs and model-index name must be `repo_id`'s."""
    from huggingface_hub import ModelCard

    readme = folder / "README.md"
    name = ModelCard(readme.read_text()).data.model_name if readme.is_file() else None
    if name != repo_id:
        raise PublishError(f"{readme}: the native export's card was written for {name!r}, not {repo_id!r}; push the "
                           f"SS-CXR model directory with --native, or export it again with --repo-id {repo_id}")
    return folder


def export_repository(model_dir: str | os.PathLike, repo_dir: str | os.PathLike, *, repo_id: str | None = None,
                      overwrite: bool = False, example_images=None, synthetic: bool | None = None,
                      revision: str | None = None, base_model=UNSET,
                      training_summary: str | os.PathLike | None = None) -> Path:
    """Writes a complete Hub repository folder for the model in `model_dir` to `repo_dir`, all or nothing.

    The card is rendered for `repo_id` (its widget URLs and model-index name) from the files of `model_dir`;
    `example_images`, `synthetic` and `base_model` are passed to it (see `spcxr_hub.hub.cards.render_card`). A
    `training_summary` JSON kept elsewhere is published with the model (as `training_log.json` for fine-tuning,
    `trainer_state.json` for pretraining), so the card of the repository can always be written again from it."""
    model_dir, repo_dir = check_export_paths(model_dir, repo_dir, repo_id)
    if is_native_repository(model_dir):  # its card would be rendered again as a remote-code card
        raise PublishError(f"{model_dir}: already a native export (model_type vit, no remote code); `spcxr push` "
                           "uploads it as it is, `spcxr export --native` of the SS-CXR model writes it again")
    with atomic_directory(repo_dir, overwrite=overwrite) as staging:
        copy_model_files(model_dir, staging)
        if training_summary is not None:
            summary, flavour = training_summary_for(model_dir, training_summary)
            name = PRETRAINING_SUMMARY if flavour == "pretrain" else TRAINING_LOG
            shutil.copyfile(training_summary, staging / name)
        if (model_dir / "examples").is_dir() and example_images is None:
            shutil.copytree(model_dir / "examples", staging / "examples")  # the card keeps the examples it had
            if (model_dir / "README.md").is_file():
                shutil.copyfile(model_dir / "README.md", staging / "README.md")
        options = {"synthetic": synthetic, "revision": revision}
        if base_model is not UNSET:
            options["base_model"] = base_model
        # Rendered from the staged copy (so the card describes exactly the published files), with the summary of
        # the original place when it lies outside the model directory.
        bundle = build_card(staging, repo_id=repo_id, example_images=example_images, **options)
        write_bundle(bundle, staging)
    return repo_dir


def validate_hub_id(repo_id: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise PublishError(f"invalid repo id {repo_id!r}: expected 'org/name' (a namespace and a name)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        reason = str(error).split(":")[0].strip()
        raise PublishError(f"invalid repo id {repo_id!r}: {reason}") from None
    return repo_id


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, also when it was set after huggingface_hub was imported."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        return bool(constants.HF_HUB_OFFLINE)
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def get_token() -> str | None:
    from huggingface_hub import get_token as hub_token

    return hub_token()


def push_to_hub(model_dir_or_repo_dir: str | os.PathLike, repo_id: str, *, private: bool = False,
                revision: str | None = None, token: str | None = None, commit_message: str | None = None,
                example_images=None, synthetic: bool | None = None, native: bool = False,
                allow_disagreement: bool = False, warn=None) -> str:
    """Exports the model (a model directory or an exported repository folder) for `repo_id` into a temporary folder
    and uploads it with `huggingface_hub.HfApi` (`create_repo`, then `upload_folder`). Returns the commit URL.
    `native`: the native transformers export (`native_export.export_native`, which `allow_disagreement` and `warn`
    are passed to); a folder that already is a native export for `repo_id` is uploaded as it is.

    Checked before anything is written or sent, each failing with one line: the repo id, the model directory,
    `HF_HUB_OFFLINE` (offline: nothing is attempted) and the token (`token`, else `huggingface_hub.get_token()`)."""
    source = Path(model_dir_or_repo_dir)
    validate_hub_id(repo_id)
    check_model_directory(source)
    if hub_offline():
        raise PublishError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set, so the Hub cannot be reached "
                           f"(unset it to push; `spcxr export {source} --repo-dir DIR` writes the folder offline)")
    token = token or get_token()
    if not token:
        raise PublishError(f"cannot push to {repo_id}: no Hugging Face token (run `hf auth login` or set HF_TOKEN)")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="spcxr-push-") as scratch:
        if native:
            from .native_export import export_native

            folder, _ = export_native(source, Path(scratch) / "repo", repo_id=repo_id, example_images=example_images,
                                      synthetic=synthetic, revision=revision, allow_disagreement=allow_disagreement,
                                      warn=warn)
        elif is_native_repository(source):
            folder = native_folder_for(source, repo_id)
        else:
            folder = export_repository(source, Path(scratch) / "repo", repo_id=repo_id,
                                       example_images=example_images, synthetic=synthetic, revision=revision)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                                   commit_message=commit_message or "Upload SS-CXR model with SPCXR Hub")
    return str(getattr(commit, "commit_url", commit))
