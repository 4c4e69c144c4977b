"""SPCXR Hub: SS-CXR, a GMML-pretrained ViT for chest radiographs, as a Hugging Face model family with task plugins.

Importing the package registers the model family with transformers' Auto classes, so
`AutoModel.from_pretrained("spcxr/vit-s")` works without `trust_remote_code`.

The import is lazy, so that `spcxr predict` starts without transformers' model machinery (~3 s and ~250 MB on a
2-core machine): the classes (`spcxr_hub.SpcxrModel`, …) are imported on first use, and the registration with each
Auto class happens as soon as transformers' module defining it is imported — at once when it already is, otherwise
through an import hook — so `import spcxr_hub` followed by `from transformers import AutoModel` behaves exactly as
an eager registration would.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys

from .hookspecs import hookimpl
from .tasks import MULTI_LABEL, SEGMENTATION, SINGLE_LABEL, CardText, FinetuneDefaults, Task, TaskError

__version__ = "0.1.0"
BACKBONE_REPO_ID = "spcxr/vit-s"

# Public name → the submodule defining it, imported on first access.
_LAZY = {
    "SpcxrConfig": "configuration_spcxr",
    "SpcxrImageProcessor": "image_processing_spcxr",
    "SpcxrModel": "modeling_spcxr",
    "SpcxrPreTrainedModel": "modeling_spcxr",
    "SpcxrForImageClassification": "modeling_spcxr",
    "SpcxrForMaskedImageModeling": "modeling_spcxr",
    "SpcxrForSemanticSegmentation": "modeling_spcxr",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


# ----------------------------------------------------------------------------------------------------------------------
# Registration with the Auto classes, each done when transformers' module holding that Auto class is imported.


def _register_config():
    from transformers.models.auto.configuration_auto import AutoConfig

    from .configuration_spcxr import SpcxrConfig

    AutoConfig.register(SpcxrConfig.model_type, SpcxrConfig, exist_ok=True)


def _register_models():
    from transformers.models.auto.modeling_auto import (
        AutoModel,
        AutoModelForImageClassification,
        AutoModelForMaskedImageModeling,
        AutoModelForSemanticSegmentation,
    )

    from .configuration_spcxr import SpcxrConfig
    from .modeling_spcxr import (
        SpcxrForImageClassification,
        SpcxrForMaskedImageModeling,
        SpcxrForSemanticSegmentation,
        SpcxrModel,
    )

    AutoModel.register(SpcxrConfig, SpcxrModel, exist_ok=True)
    AutoModelForImageClassification.register(SpcxrConfig, SpcxrForImageClassification, exist_ok=True)
    AutoModelForSemanticSegmentation.register(SpcxrConfig, SpcxrForSemanticSegmentation, exist_ok=True)
    AutoModelForMaskedImageModeling.register(SpcxrConfig, SpcxrForMaskedImageModeling, exist_ok=True)


def _register_image_processor():
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    from .configuration_spcxr import SpcxrConfig
    from .image_processing_spcxr import SpcxrImageProcessor

    AutoImageProcessor.register(SpcxrConfig, slow_image_processor_class=SpcxrImageProcessor, exist_ok=True)


_REGISTRATIONS = {
    "transformers.models.auto.configuration_auto": _register_config,
    "transformers.models.auto.modeling_auto": _register_models,
    "transformers.models.auto.image_processing_auto": _register_image_processor,
}
# The lookup tables each registration writes to, by the name transformers gives them in that module.
_MAPPINGS = {
    "transformers.models.auto.configuration_auto": ("CONFIG_MAPPING",),
    "transformers.models.auto.modeling_auto": ("MODEL_MAPPING", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING",
                                               "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING",
                                               "MODEL_FOR_MASKED_IMAGE_MODELING_MAPPING"),
    "transformers.models.auto.image_processing_auto": ("IMAGE_PROCESSOR_MAPPING",),
}
_pending = dict(_REGISTRATIONS)


def _run_registration(module_name: str) -> None:
    registration = _pending.pop(module_name, None)  # popped first: registering imports more of transformers
    if registration is None:
        return
    try:
        registration()
    except ImportError:
        # Imported from inside another transformers module that is still initialising (e.g. `from transformers import
        # ViTModel` reaches modeling_auto through modeling_layers), whose names our classes need: register on the
        # first lookup in the Auto class's tables instead, once every module is complete.
        if not _register_on_first_lookup(module_name, registration):
            raise


class _RegisterOnFirstLookup(dict):
    """Stands in for an Auto table's `_extra_content` dict until the deferred registration has run."""

    def __init__(self, content, registration):
        super().__init__(content)
        self._registration = registration

    def _complete(self):
        registration, self._registration = self._registration, None
        if registration is not None:
            try:
                registration()
            except ImportError:  # still inside the import that caused the deferral: try again on the next lookup
                self._registration = registration

    def __contains__(self, key):
        self._complete()
        return super().__contains__(key)

    def __getitem__(self, key):
        self._complete()
        return super().__getitem__(key)

    def __iter__(self):
        self._complete()
        return super().__iter__()

    def __len__(self):
        self._complete()
        return super().__len__()

    def get(self, key, default=None):
        self._complete()
        return super().get(key, default)

    def keys(self):
        self._complete()
        return super().keys()

    def values(self):
        self._complete()
        return super().values()

    def items(self):
        self._complete()
        return super().items()


def _register_on_first_lookup(module_name: str, registration) -> bool:
    module = sys.modules.get(module_name)
    mappings = [getattr(module, name, None) for name in _MAPPINGS[module_name]]
    if any(type(getattr(m, "_extra_content", None)) is not dict for m in mappings):
        return False  # not the transformers layout this fallback was written for
    done = []

    def once():
        if not done:
            registration()
            done.append(True)

    for mapping in mappings:
        mapping._extra_content = _RegisterOnFirstLookup(mapping._extra_content, once)
    return True


class _RegisterAfterLoading(importlib.abc.Loader):
    """Delegates to the real loader, then registers with the Auto class the module defines."""

    def __init__(self, loader, module_name: str):
        self._loader, self._module_name = loader, module_name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _run_registration(self._module_name)

    def __getattr__(self, name):  # get_source, get_filename, is_package, get_resource_reader …
        return getattr(self._loader, name)


class _RegistrationFinder(importlib.abc.MetaPathFinder):
    """Finds transformers' Auto-class modules with the other finders and wraps their loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisterAfterLoading(spec.loader, fullname)
                return spec
        return None


def _register_with_auto_classes():
    for module_name in list(_REGISTRATIONS):
        module = sys.modules.get(module_name)
        if module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False) is False:
            _run_registration(module_name)
    if _pending and not any(isinstance(finder, _RegistrationFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegistrationFinder())


_register_with_auto_classes()

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
