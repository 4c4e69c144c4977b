import os
import tempfile

# Before any Hugging Face import: a Hub lookup must fail at once instead of stalling on the network, and nothing
# (remote-code modules, caches) leaks into or out of the developer's ~/.cache/huggingface.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="spcxr-test-hf-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


def tiny_config_kwargs(**overrides):
    """A ViT small enough for a test to build, run and train in well under a second."""
    fields = dict(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=64,
        patch_size=16,
        segmentation_feature_size=4,
    )
    fields.update(overrides)
    return fields


@pytest.fixture
def tiny_config():
    from spcxr_hub import SpcxrConfig

    return SpcxrConfig(**tiny_config_kwargs())
