import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from spcxr_hub import SpcxrConfig, SpcxrForMaskedImageModeling, SpcxrForSemanticSegmentation


def test_vit_s_keeps_the_papers_layer_indices():
    config = SpcxrConfig()
    assert config.reconstruction_layers == [6, 8, 10, 12]
    assert config.segmentation_skip_layers == [3, 6, 9]


@pytest.mark.parametrize(
    "depth, reconstruction, skips",
    [(1, [1], [1, 1, 1]), (2, [1, 2], [1, 1, 2]), (4, [2, 3, 4], [1, 2, 3]), (8, [4, 5, 7, 8], [2, 4, 6]),
     (24, [12, 16, 20, 24], [6, 12, 18])],
)
def test_layer_indices_not_given_follow_the_depth(depth, reconstruction, skips):
    config = SpcxrConfig(num_hidden_layers=depth)
    assert config.reconstruction_layers == reconstruction and config.segmentation_skip_layers == skips


@pytest.mark.parametrize("model_class", [SpcxrForMaskedImageModeling, SpcxrForSemanticSegmentation])
def test_a_shallow_config_builds_and_runs_every_head(model_class):
    config = SpcxrConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         image_size=32, segmentation_feature_size=4)
    model = model_class(config).eval()
    with torch.no_grad():
        model(pixel_values=torch.zeros(1, 1, 32, 32))


@pytest.mark.parametrize("field, value", [("reconstruction_layers", [6]), ("segmentation_skip_layers", [1, 2, 3])])
def test_given_layer_indices_are_still_validated_against_the_depth(field, value):
    with pytest.raises(Exception, match=field):
        SpcxrConfig(num_hidden_layers=2, **{field: value})


def test_derived_indices_survive_a_save_and_load(tmp_path):
    SpcxrConfig(num_hidden_layers=4).save_pretrained(tmp_path)
    loaded = SpcxrConfig.from_pretrained(tmp_path)
    assert loaded.reconstruction_layers == [2, 3, 4] and loaded.segmentation_skip_layers == [1, 2, 3]
