"""`import spcxr_hub` registers the family with transformers' Auto classes (models/registration.py): whatever the
program imports next, through the public `register` methods only, and without paying for transformers' model
machinery before it is used."""

import pytest
from conftest import fresh_python

from spcxr_hub import SpcxrConfig, SpcxrForImageClassification, SpcxrImageProcessor

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32)
# What a program may import after `import spcxr_hub`: each reaches the Auto modules along another path (ViTModel
# loads them half-way through modeling_layers; modeling_spcxr before defining the classes to register).
FIRST = ["pass", "from transformers import ViTModel", "from transformers import PreTrainedModel",
         "from transformers import pipeline", "import spcxr_hub.models.spcxr.modeling_spcxr",
         "from spcxr_hub import SpcxrModel", "from spcxr_hub.training import finetuning"]




@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("registration") / "classifier"
    SpcxrForImageClassification(SpcxrConfig(**TINY, id2label={0: "normal", 1: "pneumonia"})).save_pretrained(directory)
    SpcxrImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("first", FIRST)
def test_every_auto_class_resolves_the_family_whatever_is_imported_first(first, saved):
    out = fresh_python(
        f"import spcxr_hub\n{first}\n"
        "from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification\n"
        "from spcxr_hub import SpcxrConfig\n"
        f"print(type(AutoModel.from_config(SpcxrConfig(**{TINY!r}))).__name__)\n"
        f"print(type(AutoModelForImageClassification.from_pretrained({str(saved)!r})).__name__)\n"
        f"print(type(AutoImageProcessor.from_pretrained({str(saved)!r})).__name__)\n"
        "print(type(AutoConfig.for_model('spcxr')).__name__)\n"
    )
    assert out.split() == ["SpcxrModel", "SpcxrForImageClassification", "SpcxrImageProcessor", "SpcxrConfig"]


def test_registration_leaves_transformers_tables_plain_and_the_import_system_as_it_was():
    out = fresh_python(
        "import sys\nimport spcxr_hub\n"
        "from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoVideoProcessor\n"
        "from transformers.models.auto import configuration_auto, image_processing_auto, modeling_auto, "
        "video_processing_auto\n"
        "tables = [configuration_auto.CONFIG_MAPPING, modeling_auto.MODEL_MAPPING,\n"
        "          modeling_auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING, image_processing_auto.IMAGE_PROCESSOR_MAPPING,\n"
        "          video_processing_auto.VIDEO_PROCESSOR_MAPPING]\n"
        "print(all(type(table._extra_content) is dict for table in tables))\n"
        "print(any(type(finder).__module__ == 'spcxr_hub.models.registration' for finder in sys.meta_path))\n"
    )
    assert out.split() == ["True", "False"]


def test_the_stock_image_pipeline_never_asks_whether_to_run_custom_code(saved):
    """With the package imported everything is local code; transformers must not prompt (it waits 15 s for an
    answer on a terminal) for a video processor it guessed from the image processor's auto_map."""
    out = fresh_python(
        "import builtins, sys\n"
        "builtins.input = lambda *a, **k: print('PROMPTED', flush=True) or 'n'\n"
        "import numpy as np\nimport spcxr_hub\nfrom transformers import pipeline\n"
        f"classify = pipeline('image-classification', model={str(saved)!r}, top_k=None)\n"
        "print(sorted(r['label'] for r in classify(np.zeros((40, 30), np.float32))))\n"
    )
    assert out.split("\n")[-2] == "['normal', 'pneumonia']" and "PROMPTED" not in out, out


def test_importing_the_package_imports_no_model_machinery():
    out = fresh_python("import sys\nimport spcxr_hub\n"
                     "print(sorted(m for m in ('transformers.modeling_utils', 'transformers.image_processing_utils', "
                     "'torch') if m in sys.modules))\n")
    assert out.strip() == "[]"
