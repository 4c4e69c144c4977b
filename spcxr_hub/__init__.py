"""SPCXR Hub: SS-CXR, a GMML-pretrained ViT for chest radiographs, as a Hugging Face model family with task plugins.

Importing the package registers the model family with transformers' Auto classes, so
`AutoModel.from_pretrained("spcxr/vit-s")` works without `trust_remote_code` (`models/registration.py`: each Auto
class as soon as transformers has loaded it, so that `spcxr predict` starts without transformers' model machinery).
The classes (`spcxr_hub.SpcxrModel`, …) are imported on first use.

The folders, one concern each: `models/spcxr/` (the model family: exactly the files a saved model carries as remote
code), `data/`, `training/`, `evaluation/`, `inference/`, `hub/` (cards, publishing) and `plugins/` (the plugin core;
`plugin_api` is what plugins import).
"""

import importlib

from . import _moved
from .models.registration import register_with_auto_classes
from .plugins.hookspecs import hookimpl
from .plugins.tasks import MULTI_LABEL, SEGMENTATION, SINGLE_LABEL, CardText, FinetuneDefaults, Task, TaskError

__version__ = "0.1.0"
BACKBONE_REPO_ID = "spcxr/vit-s"

# Public name → the submodule defining it, imported on first access.
_LAZY = {
    "SpcxrConfig": "models.spcxr.configuration_spcxr",
    "SpcxrImageProcessor": "models.spcxr.image_processing_spcxr",
    "SpcxrModel": "models.spcxr.modeling_spcxr",
    "SpcxrPreTrainedModel": "models.spcxr.modeling_spcxr",
    "SpcxrForImageClassification": "models.spcxr.modeling_spcxr",
    "SpcxrForMaskedImageModeling": "models.spcxr.modeling_spcxr",
    "SpcxrForSemanticSegmentation": "models.spcxr.modeling_spcxr",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


_moved.install()
register_with_auto_classes()

__all__ = [
    "hookimpl",
    "Task",
    "TaskError",
    "CardText",
    "FinetuneDefaults",
    "SINGLE_LABEL",
    "MULTI_LABEL",
    "SEGMENTATION",
    "BACKBONE_REPO_ID",
    "SpcxrConfig",
    "SpcxrImageProcessor",
    "SpcxrModel",
    "SpcxrPreTrainedModel",
    "SpcxrForImageClassification",
    "SpcxrForMaskedImageModeling",
    "SpcxrForSemanticSegmentation",
]
