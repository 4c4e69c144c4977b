"""Named model configurations, shared by pretraining, fine-tuning and reproduce (`--config NAME`), and
`preset_config`, the one reading of `--config`. Light on purpose: the command line lists the presets at start-up."""

import json
from pathlib import Path

from ..errors import UsageError, one_line

CONFIG_PRESETS: dict[str, dict] = {
    "vit-s": {},  # SpcxrConfig's defaults: ViT-S/16, 224², one channel — the published backbone
    # A ViT small enough to pretrain and fine-tune in seconds on a CPU: tests, the demo, few-shot experiments.
    "tiny": dict(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, image_size=64,
        patch_size=16, classifier_pooling="mean", segmentation_feature_size=8,
    ),
}
# Entries of a saved config.json that say how it was saved, not what the model is.
SAVED_ONLY_KEYS = ("model_type", "transformers_version", "architectures", "auto_map", "_name_or_path")


def preset_config(config: str, **fields):
    """The `SpcxrConfig` that `--config` names — a preset, a JSON file of SpcxrConfig fields or a model folder with
    config.json — with `fields` on top. Anything wrong is a UsageError naming --config."""
    from ..models.spcxr.configuration_spcxr import SpcxrConfig  # transformers: not at start-up

    if config in CONFIG_PRESETS:
        base = dict(CONFIG_PRESETS[config])
    else:
        path = Path(config) / "config.json" if Path(config).is_dir() else Path(config)
        if not path.is_file():
            raise UsageError(f"--config {config}: neither a preset ({', '.join(CONFIG_PRESETS)}) nor a JSON file")
        try:
            base = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise UsageError(f"--config {path}: not a readable JSON file ({one_line(error)})") from None
        if not isinstance(base, dict):
            raise UsageError(f"--config {path}: expected a JSON object of SpcxrConfig fields")
        base = {key: value for key, value in base.items() if key not in SAVED_ONLY_KEYS}
    try:
        return SpcxrConfig(**{**base, **fields})
    except Exception as error:  # strict dataclass validation, unknown fields
        raise UsageError(f"invalid model settings (--config {config} and options): {one_line(error)}") from None
