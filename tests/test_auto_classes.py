import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json

import pytest
import torch
from conftest import fresh_python, tiny_config_kwargs
from hub_cache import publish_to_cache
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
    AutoModelForSemanticSegmentation,
)

import spcxr_hub
from spcxr_hub import (
    SpcxrConfig,
    SpcxrForImageClassification,
    SpcxrForMaskedImageModeling,
    SpcxrForSemanticSegmentation,
    SpcxrImageProcessor,
    SpcxrModel,
)
from spcxr_hub.hub.saving import save_model_directory

# Run in a child process where `import spcxr_hub` fails, as on a machine that only has transformers.
WITHOUT_PROJECT = "import sys; sys.modules['spcxr_hub'] = None\n"


def saved(tmp_path, model_class=SpcxrForImageClassification, name="model", **overrides):
    config = SpcxrConfig(**tiny_config_kwargs(id2label={0: "normal", 1: "pneumonia"}, **overrides))
    torch.manual_seed(0)
    return save_model_directory(tmp_path / name, model_class(config).eval(), SpcxrImageProcessor(size={"height": 64, "width": 64}))




@pytest.mark.parametrize(
    "auto_class, model_class",
    [(AutoModel, SpcxrModel), (AutoModelForImageClassification, SpcxrForImageClassification),
     (AutoModelForSemanticSegmentation, SpcxrForSemanticSegmentation),
     (AutoModelForMaskedImageModeling, SpcxrForMaskedImageModeling)],
)
def test_importing_the_package_registers_every_auto_class(auto_class, model_class):
    config = SpcxrConfig(**tiny_config_kwargs())
    assert isinstance(AutoConfig.for_model("spcxr"), SpcxrConfig)
    assert type(auto_class.from_config(config)) is model_class


def test_auto_image_processor_loads_the_saved_processor(tmp_path):
    directory = saved(tmp_path)
    processor = AutoImageProcessor.from_pretrained(directory)
    assert type(processor) is SpcxrImageProcessor and processor.size == {"height": 64, "width": 64}


def test_save_writes_an_auto_map_for_every_auto_class_and_the_code(tmp_path):
    directory = saved(tmp_path)
    auto_map = json.loads((directory / "config.json").read_text())["auto_map"]
    assert set(auto_map) >= {"AutoConfig", "AutoModel", "AutoModelForImageClassification",
                             "AutoModelForSemanticSegmentation", "AutoImageProcessor"}
    processor_map = json.loads((directory / "preprocessor_config.json").read_text())["auto_map"]
    assert processor_map["AutoImageProcessor"].endswith("SpcxrImageProcessor")
    for name in ("configuration_spcxr.py", "modeling_spcxr.py", "vit_layers.py", "image_processing_spcxr.py",
                 "imaging.py"):
        assert (directory / name).is_file(), name
    assert (directory / "model.safetensors").is_file()


def test_hub_id_resolves_through_the_offline_hugging_face_cache(tmp_path):
    cache = tmp_path / "hub"
    publish_to_cache(saved(tmp_path, SpcxrModel, "backbone"), spcxr_hub.BACKBONE_REPO_ID, cache)
    out = fresh_python(
        "import spcxr_hub\nfrom transformers import AutoModel\n"
        "m = AutoModel.from_pretrained('spcxr/vit-s')\nprint(type(m).__name__, m.config.hidden_size)\n",
        env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
    )
    assert out.split() == ["SpcxrModel", "32"]


def test_unknown_hub_id_fails_at_once_offline(tmp_path):
    with pytest.raises(OSError):
        AutoModel.from_pretrained("spcxr/does-not-exist", cache_dir=tmp_path)


def test_failed_save_leaves_no_directory(tmp_path):
    class Broken(SpcxrImageProcessor):
        def save_pretrained(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_model_directory(tmp_path / "out", SpcxrModel(SpcxrConfig(**tiny_config_kwargs())), Broken())
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_to_overwrite_a_non_empty_directory(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="out"):
        save_model_directory(tmp_path / "out", SpcxrModel(SpcxrConfig(**tiny_config_kwargs())))
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"


def test_saved_directories_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        directory = save_model_directory(tmp_path / "out", SpcxrModel(SpcxrConfig(**tiny_config_kwargs())))
    finally:
        os.umask(old)
    assert directory.stat().st_mode & 0o777 == 0o755
    assert (directory / "config.json").stat().st_mode & 0o777 == 0o644
