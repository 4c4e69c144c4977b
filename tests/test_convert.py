import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import timm
import torch
from safetensors.torch import save_file

from spcxr_hub.hub.convert import CheckpointError, convert_vit_checkpoint, read_checkpoint


@pytest.fixture(scope="module")
def timm_vit():
    torch.manual_seed(0)
    return timm.create_model("vit_small_patch16_224", pretrained=False).eval()


def test_converted_timm_vit_small_gives_the_same_features_on_grayscale(timm_vit):
    model = convert_vit_checkpoint(timm_vit.state_dict())
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.num_channels) == (384, 12, 1)
    gray = torch.randn(2, 1, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = timm_vit.forward_features(gray.expand(-1, 3, -1, -1))
        actual = model(gray).last_hidden_state
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_gmml_style_checkpoint_wrappers_are_unwrapped(timm_vit, tmp_path):
    wrapped = {"student": {f"module.backbone.{k}": v for k, v in timm_vit.state_dict().items()}, "epoch": 3}
    path = tmp_path / "checkpoint.pth"
    torch.save(wrapped, path)
    model = convert_vit_checkpoint(path)
    torch.testing.assert_close(model.layernorm.weight, timm_vit.norm.weight)


def test_safetensors_checkpoint_and_resized_position_embeddings(timm_vit, tmp_path):
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in timm_vit.state_dict().items()}, path)
    model = convert_vit_checkpoint(path, image_size=128)
    assert model.embeddings.position_embeddings.shape == (1, 1 + 8 * 8, 384)
    assert model(torch.randn(1, 1, 128, 128)).last_hidden_state.shape == (1, 65, 384)


def test_a_checkpoint_that_is_not_a_vit_is_one_clear_error(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"conv1.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(CheckpointError, match="other.safetensors.*patch_embed"):
        convert_vit_checkpoint(path)


def test_pickled_code_is_never_executed(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(1)}, "args": object()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        convert_vit_checkpoint(path)


def test_a_folder_is_read_through_its_model_safetensors(timm_vit, tmp_path):
    save_file({k: v.contiguous() for k, v in timm_vit.state_dict().items()}, tmp_path / "model.safetensors")
    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "z.pth")  # model.safetensors comes first
    model = convert_vit_checkpoint(tmp_path)
    torch.testing.assert_close(model.layernorm.weight, timm_vit.norm.weight)


@pytest.mark.parametrize("make, message", [
    (lambda path: path.mkdir(), "no model.safetensors"),
    (lambda path: None, "no such checkpoint file or folder"),
    (lambda path: torch.save(torch.zeros(1), path), "holds a Tensor, not a dict"),
])
def test_a_path_without_a_state_dict_is_one_clear_error_naming_it(tmp_path, make, message):
    path = tmp_path / "weights.pth"
    make(path)
    with pytest.raises(CheckpointError, match=f"weights.pth: {message}"):
        read_checkpoint(path)
