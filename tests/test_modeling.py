import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from conftest import tiny_config_kwargs

from spcxr_hub import (
    SpcxrConfig,
    SpcxrForImageClassification,
    SpcxrForMaskedImageModeling,
    SpcxrForSemanticSegmentation,
    SpcxrModel,
)
from spcxr_hub.models.spcxr.modeling_spcxr import gmml_reconstruction_loss

ALL_MODELS = [SpcxrModel, SpcxrForImageClassification, SpcxrForSemanticSegmentation, SpcxrForMaskedImageModeling]


def build(model_class, seed=0, **overrides):
    torch.manual_seed(seed)
    return model_class(SpcxrConfig(**tiny_config_kwargs(**overrides))).eval()


def main_output(output):
    for name in ("logits", "reconstruction", "last_hidden_state"):
        if getattr(output, name, None) is not None:
            return getattr(output, name)
    raise AssertionError("no output tensor")


def pixels(batch=2, size=64, seed=0):
    return torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_default_config_is_vit_small_for_one_channel():
    config = SpcxrConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, 12, 6)
    assert (config.intermediate_size, config.layer_norm_eps, config.qkv_bias) == (1536, 1e-6, True)
    assert (config.image_size, config.patch_size, config.num_channels) == (224, 16, 1)
    assert config.model_type == "spcxr"


@pytest.mark.parametrize(
    "field, value",
    [("hidden_size", 31), ("image_size", 70), ("reconstruction_layers", [5]), ("segmentation_skip_layers", [1, 2]),
     ("mask_ratio", 1.5), ("classifier_pooling", "max"), ("hidden_size", "wide")],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(Exception, match=field):
        SpcxrConfig(**tiny_config_kwargs(**{field: value}))


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_save_and_reload_give_the_same_outputs(model_class, tmp_path):
    model = build(model_class)
    with torch.no_grad():
        before = main_output(model(pixels()))
    model.save_pretrained(tmp_path)
    reloaded = model_class.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        after = main_output(reloaded(pixels()))
    torch.testing.assert_close(before, after, rtol=0, atol=0)


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_sdpa_and_eager_attention_agree(model_class):
    sdpa = build(model_class)
    eager = build(model_class)
    eager.set_attn_implementation("eager")
    assert sdpa.config._attn_implementation == "sdpa"
    with torch.no_grad():
        torch.testing.assert_close(main_output(sdpa(pixels())), main_output(eager(pixels())), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_batch_equals_single_images(model_class):
    model = build(model_class)
    batch = pixels(batch=3)
    with torch.no_grad():
        together = main_output(model(batch))
        alone = torch.cat([main_output(model(batch[i : i + 1])) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_same_seed_builds_the_same_model_and_output():
    first, second, other = build(SpcxrModel, seed=7), build(SpcxrModel, seed=7), build(SpcxrModel, seed=8)
    with torch.no_grad():
        out = first(pixels()).last_hidden_state
        torch.testing.assert_close(out, second(pixels()).last_hidden_state, rtol=0, atol=0)
        assert not torch.allclose(out, other(pixels()).last_hidden_state)


def test_hidden_states_are_embeddings_plus_one_per_block():
    model = build(SpcxrModel)
    output = model(pixels(), output_hidden_states=True, output_attentions=True)
    assert len(output.hidden_states) == model.config.num_hidden_layers + 1
    assert len(output.attentions) == model.config.num_hidden_layers
    tokens = 1 + (64 // 16) ** 2
    assert output.attentions[0].shape == (2, model.config.num_attention_heads, tokens, tokens)
    torch.testing.assert_close(output.attentions[0].sum(-1), torch.ones(2, 2, tokens))


def test_forward_intermediates_are_the_hidden_states_asked_for():
    model = build(SpcxrModel)
    x = pixels()
    with torch.no_grad():
        hidden_states = model(x, output_hidden_states=True).hidden_states
        encoded = model.forward_intermediates(x, [0, 2, -1])
        last_two = model.forward_intermediates(x, 2).intermediates
    assert list(encoded.intermediates) == [0, 2, len(hidden_states) - 1]  # only those are kept
    for index, tensor in encoded.intermediates.items():
        torch.testing.assert_close(tensor, hidden_states[index], rtol=0, atol=0)
    assert list(last_two) == [len(hidden_states) - 2, len(hidden_states) - 1]


def test_timm_style_entry_points_give_the_models_outputs():
    model = build(SpcxrModel, classifier_pooling="mean")
    x = pixels()
    with torch.no_grad():
        output = model(x)
        tokens = model.forward_features(x)
    torch.testing.assert_close(tokens, output.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(model.forward_head(tokens), tokens[:, 1:].mean(dim=1), rtol=0, atol=0)
    torch.testing.assert_close(output.pooler_output, tokens[:, 1:].mean(dim=1), rtol=0, atol=0)


def test_gradient_checkpointing_recomputes_the_blocks_in_the_backward_pass():
    model = build(SpcxrForImageClassification).train()
    calls = []
    model.spcxr.layers[0].norm1.register_forward_hook(lambda *args: calls.append(1))
    model.activation_checkpointing_enable()
    model(pixels(), labels=torch.tensor([0, 1])).loss.backward()
    assert len(calls) == 2  # the forward, and its replay for the gradients


def test_tuple_output_when_return_dict_is_false():
    model = build(SpcxrModel)
    assert isinstance(model(pixels(), return_dict=False), tuple)


@pytest.mark.parametrize("model_class", ALL_MODELS[1:])
def test_gradient_checkpointing_gives_the_same_gradients(model_class):
    labels = {
        SpcxrForImageClassification: torch.tensor([0, 1]),
        SpcxrForSemanticSegmentation: torch.randint(0, 2, (2, 64, 64), generator=torch.Generator().manual_seed(0)),
        SpcxrForMaskedImageModeling: pixels(seed=1),
    }[model_class]
    grads = []
    for checkpointing in (False, True):
        model = build(model_class).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.is_activation_checkpointing
        model(pixels(), labels=labels).loss.backward()
        grads.append(model.spcxr.embeddings.patch_embeddings.projection.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("height, width", [(64, 64), (96, 64), (48, 80)])
def test_segmentation_logits_have_the_input_size(height, width):
    model = build(SpcxrForSemanticSegmentation, num_labels=3)
    output = model(torch.randn(2, 1, height, width), labels=torch.randint(0, 3, (2, height, width)))
    assert output.logits.shape == (2, 3, height, width)
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)


def test_segmentation_needs_patch_16():
    with pytest.raises(ValueError, match="patch_size"):
        SpcxrForSemanticSegmentation(SpcxrConfig(**tiny_config_kwargs(patch_size=8)))


def test_position_embeddings_interpolate_to_other_input_sizes():
    model = build(SpcxrModel)
    assert model(torch.randn(1, 1, 96, 128)).last_hidden_state.shape == (1, 1 + 6 * 8, 32)


def test_wrong_channel_count_is_one_clear_error():
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 1"):
        build(SpcxrModel)(torch.randn(1, 3, 64, 64))


def test_classification_loss_follows_problem_type():
    single = build(SpcxrForImageClassification, num_labels=3)
    output = single(pixels(), labels=torch.tensor([0, 2]))
    torch.testing.assert_close(output.loss, torch.nn.functional.cross_entropy(output.logits, torch.tensor([0, 2])))
    assert single.config.problem_type == "single_label_classification"

    multi = build(SpcxrForImageClassification, num_labels=4, problem_type="multi_label_classification")
    targets = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1]])
    output = multi(pixels(), labels=targets)
    torch.testing.assert_close(output.loss, torch.nn.functional.binary_cross_entropy_with_logits(output.logits, targets))


def test_reconstruction_has_the_input_shape_and_counts_only_corrupted_pixels():
    model = build(SpcxrForMaskedImageModeling)
    clean = pixels(seed=3)
    mask = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    mask[:, :, :32] = True
    output = model(pixels(seed=4), labels=clean, pixel_mask=mask)
    assert output.reconstruction.shape == clean.shape
    expected = (output.reconstruction - clean).abs()[mask.expand_as(clean)].mean()
    torch.testing.assert_close(output.loss, expected)
    # Changing the target where nothing was corrupted does not change the loss.
    changed = clean.clone()
    changed[:, :, 32:] += 5
    torch.testing.assert_close(model(pixels(seed=4), labels=changed, pixel_mask=mask).loss, output.loss)


def test_reconstruction_loss_options():
    reconstruction, target = torch.ones(1, 1, 2, 2, requires_grad=True), torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[[[True, False], [False, False]]]])
    assert gmml_reconstruction_loss(reconstruction, target, mask).item() == 1.0
    assert gmml_reconstruction_loss(reconstruction, target, mask, masked_only=False).item() == 1.0
    empty = gmml_reconstruction_loss(reconstruction, target, torch.zeros_like(mask))
    empty.backward()
    assert empty.item() == 0.0 and reconstruction.grad is not None


def test_reconstruction_head_averages_the_configured_blocks():
    model = build(SpcxrForMaskedImageModeling)
    assert model.decoder.layers == (2, 3, 4)
    assert model.decoder.to_pixels.kernel_size == (16, 16) and model.decoder.to_pixels.stride == (16, 16)
    linear = [m for m in model.decoder.mlp if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 3


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_models_build_on_the_meta_device(model_class):
    # What accelerate's init_empty_weights, low-memory loading and FSDP's meta initialisation do.
    from accelerate import init_empty_weights

    config = SpcxrConfig(**tiny_config_kwargs(drop_path_rate=0.1))
    with torch.device("meta"):
        model = model_class(config)
    assert all(p.device.type == "meta" for p in model.parameters())
    with init_empty_weights():
        model = model_class(config)
    backbone = model if isinstance(model, SpcxrModel) else model.spcxr
    assert [layer.drop_path.rate for layer in backbone.layers] == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1])


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_config_output_hidden_states_is_honoured_when_the_argument_is_unset(model_class):
    model = build(model_class, output_hidden_states=True)
    with torch.no_grad():
        assert len(model(pixels()).hidden_states) == model.config.num_hidden_layers + 1
        assert model(pixels(), output_hidden_states=False).hidden_states is None
    model.config.output_hidden_states = False
    with torch.no_grad():
        assert model(pixels()).hidden_states is None


def test_masked_image_modeling_gives_every_parameter_a_gradient():
    # DDP (without find_unused_parameters) and Trainer fail on parameters no loss reaches.
    config = SpcxrConfig(**tiny_config_kwargs())
    assert max(config.reconstruction_layers) == config.num_hidden_layers  # the default config's situation
    model = SpcxrForMaskedImageModeling(config).train()
    model(pixels(), labels=pixels(seed=1), pixel_mask=torch.ones(2, 1, 64, 64, dtype=torch.bool)).loss.backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


def test_masked_image_modeling_loads_a_backbone_checkpoint_without_its_final_layernorm(tmp_path, caplog):
    backbone = build(SpcxrModel)
    backbone.save_pretrained(tmp_path)
    with caplog.at_level("WARNING"):
        model = SpcxrForMaskedImageModeling.from_pretrained(tmp_path)
    assert "layernorm" not in caplog.text
    torch.testing.assert_close(model.spcxr.layers[0].mlp.fc1.weight, backbone.layers[0].mlp.fc1.weight)
    assert not any("layernorm" in name for name in model.state_dict() if name.startswith("spcxr."))
