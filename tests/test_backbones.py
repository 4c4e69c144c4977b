import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ast
import json
from pathlib import Path

import pytest
import timm
import torch
from conftest import fresh_python, spcxr, tiny_config_kwargs
from test_auto_classes import WITHOUT_PROJECT
from safetensors.torch import save_file
from transformers import AutoModelForImageClassification, TimmWrapperForImageClassification, pipeline

import spcxr_covid
import spcxr_pneumonia
from spcxr_hub import SpcxrConfig, SpcxrForImageClassification, hookimpl
from spcxr_hub.plugins import registry as plugins
from spcxr_hub.training import model_factories
from spcxr_hub.training.finetuning import parameter_groups
from spcxr_hub.training.model_factories import TIMM_BASELINES, build_model, get_model_factory, label_fields
from spcxr_hub.plugins.registry import collect, get_task, new_plugin_manager

SMALL = ["--image-size", "64", "--max-steps", "1", "--batch-size", "4"]


@pytest.fixture(scope="module")
def kermany(tmp_path_factory):
    return get_task("pneumonia").write_synthetic(tmp_path_factory.mktemp("kermany"), 2, 0)


@pytest.fixture(scope="module")
def densenet_dir(kermany, tmp_path_factory):
    directory = tmp_path_factory.mktemp("densenet") / "model"
    spcxr("finetune", "pneumonia", "--backbone", "timm:densenet121", "--data", kermany, "--output-dir", directory,
          *SMALL)
    return directory


def test_plugins_lists_the_builtin_backbones():
    rows = {row["name"]: row for row in json.loads(spcxr("plugins", "--json").stdout)}
    assert rows["backbones"]["distribution"] == "spcxr-hub"
    assert rows["backbones"]["backbones"] == ["spcxr"] + [f"timm:{name}" for name in TIMM_BASELINES]
    assert "backbone:timm:densenet121" in spcxr("plugins").output


def test_timm_baseline_saves_a_model_the_auto_class_and_pipeline_load(densenet_dir, kermany):
    config = json.loads((densenet_dir / "config.json").read_text())
    assert config["model_type"] == "timm_wrapper" and config["architecture"] == "densenet121"
    assert config["model_args"]["in_chans"] == 1 and config["image_size"] == 64
    assert (densenet_dir / "metrics.json").is_file() and (densenet_dir / "preprocessor_config.json").is_file()
    model = AutoModelForImageClassification.from_pretrained(densenet_dir)
    assert isinstance(model, TimmWrapperForImageClassification)
    assert model.config.id2label == {0: "normal", 1: "pneumonia"}
    classify = pipeline("image-classification", model=str(densenet_dir), top_k=None)
    film = next((kermany / "test" / "NORMAL").iterdir())
    assert sorted(r["label"] for r in classify(str(film))) == ["normal", "pneumonia"]
    log = json.loads((densenet_dir / "training_log.json").read_text())
    assert log["options"]["backbone"] == "timm:densenet121" and log["options"]["init"] == "scratch"


def test_timm_baseline_loads_through_remote_code_without_the_project(densenet_dir, kermany):
    film = next((kermany / "test" / "PNEUMONIA").iterdir())
    code = (WITHOUT_PROJECT + "import json\nfrom transformers import pipeline\n"
            f"c = pipeline('image-classification', model={str(densenet_dir)!r}, trust_remote_code=True, top_k=None)\n"
            f"print(json.dumps(sorted(r['label'] for r in c({str(film)!r}))))\n")
    assert json.loads(fresh_python(code).strip().splitlines()[-1]) == ["normal", "pneumonia"]


def test_given_rgb_weights_are_loaded_with_the_first_convolution_summed_to_one_channel(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("densenet121")
    save_file(source.state_dict(), tmp_path / "densenet121.safetensors")
    model = build_model(get_task("pneumonia"), str(tmp_path / "densenet121.safetensors"), backbone="timm:densenet121",
                        image_size=64)
    stem = model.timm_model.features.conv0.weight
    assert stem.shape[1] == 1
    torch.testing.assert_close(stem, source.features.conv0.weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.timm_model.features.norm5.running_var, source.features.norm5.running_var)
    assert model.timm_model.classifier.out_features == 2


def test_weights_of_another_architecture_are_refused(tmp_path):
    save_file(timm.create_model("resnet10t").state_dict(), tmp_path / "resnet.safetensors")
    with pytest.raises(ValueError, match="not in the weights"):
        build_model(get_task("pneumonia"), str(tmp_path / "resnet.safetensors"), backbone="timm:densenet121")


def test_random_timm_baseline_keeps_timm_initialisation():
    """transformers' wrapper would re-draw every weight from N(0, 0.02); timm's He init has a larger spread."""
    model = build_model(get_task("pneumonia"), None, backbone="timm:densenet121", image_size=64)
    assert model.timm_model.features.conv0.weight.std() > 0.1


def test_inception_resnet_v2_builds_and_refuses_inputs_below_its_minimum():
    model = build_model(get_task("pneumonia"), None, backbone="timm:inception_resnet_v2", image_size=96)
    assert model.config.model_args["in_chans"] == 1
    with pytest.raises(ValueError, match="--image-size 75 or more"):
        build_model(get_task("pneumonia"), None, backbone="timm:inception_resnet_v2", image_size=64)


def test_layer_wise_decay_follows_vit_blocks_and_cnns_train_at_one_rate():
    task = get_task("pneumonia")
    cnn = build_model(task, None, backbone="timm:densenet121", image_size=32)
    assert get_model_factory("timm:densenet121").layers(cnn) is None
    assert {group["lr"] for group in parameter_groups(cnn, 1e-3, 0.05, 0.5, (0, None))} == {1e-3}

    vit = build_model(task, None, backbone="timm:vit_tiny_patch16_224", image_size=32)  # any timm architecture
    depth = len(vit.timm_model.blocks)
    groups = parameter_groups(vit, 1e-3, 0.05, 0.5, get_model_factory("timm:vit_tiny_patch16_224").layers(vit))
    rate_of = {id(p): group["lr"] for group in groups for p in group["params"]}
    named = dict(vit.named_parameters())
    assert rate_of[id(named["timm_model.patch_embed.proj.weight"])] == pytest.approx(1e-3 * 0.5 ** (depth + 1))
    assert rate_of[id(named["timm_model.blocks.0.mlp.fc1.weight"])] == pytest.approx(1e-3 * 0.5 ** depth)
    assert rate_of[id(named["timm_model.head.weight"])] == pytest.approx(1e-3)
    no_decay = {id(p) for group in groups if group["weight_decay"] == 0 for p in group["params"]}
    assert id(named["timm_model.pos_embed"]) in no_decay and id(named["timm_model.head.weight"]) not in no_decay


def test_timm_backbone_on_a_segmentation_task_is_one_clear_error(tmp_path):
    result = spcxr("finetune", "lungseg", "--backbone", "timm:densenet121", "--data", tmp_path, "--output-dir",
                   tmp_path / "out", expect=2)
    assert "UNETR" in result.output and "--backbone spcxr" in result.output and len(result.output.splitlines()) == 1


def test_unknown_backbone_lists_the_known_ones(kermany, tmp_path):
    result = spcxr("finetune", "pneumonia", "--backbone", "timm:resnet9000", "--data", kermany, "--output-dir",
                   tmp_path / "out", expect=2)
    assert "unknown backbone 'timm:resnet9000'" in result.output and "timm:densenet121" in result.output
    assert not (tmp_path / "out").exists()


class TinyVitPlugin:
    """A third party's backbone: SS-CXR's head on a 2-block ViT."""

    @hookimpl
    def register_backbones(self, register):
        def build(task, init, *, config, image_size, drop_path_rate):
            return SpcxrForImageClassification(SpcxrConfig(**tiny_config_kwargs(
                hidden_size=16, image_size=image_size or 32, **label_fields(task))))

        register("tiny-vit", build)


def test_a_plugin_backbone_registered_through_the_hook_is_usable_as_backbone(kermany, tmp_path, monkeypatch):
    manager = new_plugin_manager()
    for name, plugin in (("pneumonia", spcxr_pneumonia), ("covid", spcxr_covid), ("backbones", model_factories),
                         ("tiny", TinyVitPlugin())):
        manager.register(plugin, name=name)
    monkeypatch.setattr(plugins, "_registry", collect(manager))
    rows = {row["name"]: row for row in json.loads(spcxr("plugins", "--json").stdout)}
    assert rows["tiny"]["backbones"] == ["tiny-vit"]
    spcxr("finetune", "pneumonia", "--backbone", "tiny-vit", "--data", kermany, "--output-dir", tmp_path / "out",
          "--image-size", "32", "--max-steps", "1", "--batch-size", "4")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["hidden_size"] == 16 and config["image_size"] == 32


def test_the_model_factories_do_not_import_fine_tuning():
    """Fine-tuning imports the factories; an import the other way would be a cycle."""
    tree = ast.parse(Path(model_factories.__file__).read_text())
    modules = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert modules and not [module for module in modules if module.endswith("finetuning")]
