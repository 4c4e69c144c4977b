"""Registers the SS-CXR family with transformers' Auto classes, through their public `register` methods.

`import spcxr_hub` makes `AutoModel.from_pretrained("spcxr/vit-s")` work without `trust_remote_code`. Registering
means importing transformers' model and image-processor machinery (~2.5 s on a 2-core machine, most of
`spcxr predict`'s cold start), so each registration waits until the program imports the transformers module that
defines its Auto class — at once when that module is already loaded.

It runs when the outermost import of a transformers or spcxr_hub module in progress has finished, not when the
Auto module itself has: `from transformers import ViTModel` loads `modeling_auto` half-way through loading
`modeling_layers`, whose classes ours subclass, and importing `modeling_spcxr` loads the Auto modules before it has
defined the classes to register. A finder on `sys.meta_path` counts how deep Python is inside those modules and
leaves `sys.meta_path` once everything is registered.
"""

import importlib.abc
import sys


def _register_config():
    from transformers import AutoConfig

    from .spcxr.configuration_spcxr import SpcxrConfig

    AutoConfig.register(SpcxrConfig.model_type, SpcxrConfig, exist_ok=True)


def _register_models():
    from transformers import (
        AutoModel,
        AutoModelForImageClassification,
        AutoModelForMaskedImageModeling,
        AutoModelForSemanticSegmentation,
    )

    from .spcxr.configuration_spcxr import SpcxrConfig
    from .spcxr.modeling_spcxr import (
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
    from transformers import AutoImageProcessor

    from .spcxr.configuration_spcxr import SpcxrConfig
    from .spcxr.image_processing_spcxr import SpcxrImageProcessor

    AutoImageProcessor.register(SpcxrConfig, slow_image_processor_class=SpcxrImageProcessor, exist_ok=True)


def _register_no_video_processor():
    """SS-CXR has no video processor, and says so: otherwise transformers' image pipelines, which also try
    AutoVideoProcessor, infer a remote `SpcxrVideoProcessor` from the image processor's auto_map and ask the user
    whether to run custom code, although everything they load is registered here."""
    from transformers import AutoVideoProcessor

    from .spcxr.configuration_spcxr import SpcxrConfig

    AutoVideoProcessor.register(SpcxrConfig, video_processor_classes={}, exist_ok=True)


# transformers' module defining an Auto class → the registration it waits for.
REGISTRATIONS = {
    "transformers.models.auto.configuration_auto": _register_config,
    "transformers.models.auto.modeling_auto": _register_models,
    "transformers.models.auto.image_processing_auto": _register_image_processor,
    "transformers.models.auto.video_processing_auto": _register_no_video_processor,
}
_pending = dict(REGISTRATIONS)
_state = {"depth": 0, "registering": False}


def _loaded(module_name: str, just_executed: str | None) -> bool:
    module = sys.modules.get(module_name)
    if module is None:
        return False
    # The import system marks a module initialised only after its loader returns.
    return module_name == just_executed or not getattr(getattr(module, "__spec__", None), "_initializing", False)


def _register_ready(just_executed: str | None = None) -> None:
    """Runs every pending registration whose Auto module is loaded (registering can load the others)."""
    if _state["registering"]:
        return
    _state["registering"] = True
    try:
        progress = True
        while progress:
            progress = False
            for module_name in [name for name in _pending if _loaded(name, just_executed)]:
                _pending.pop(module_name)()  # popped first: a failed registration is not retried forever
                progress = True
    finally:
        _state["registering"] = False
    if not _pending:
        sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _TransformersImports)]


class _CountingLoader(importlib.abc.Loader):
    """A module's own loader, with the depth of nested transformers and spcxr_hub imports counted around it."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        _state["depth"] += 1
        try:
            self._loader.exec_module(module)
        finally:
            _state["depth"] -= 1
        if _state["depth"] == 0 and _pending:
            _register_ready(module.__name__)

    def __getattr__(self, name):  # get_source, get_filename, is_package, get_resource_reader …
        return getattr(self._loader, name)


class _TransformersImports(importlib.abc.MetaPathFinder):
    """Finds transformers' and spcxr_hub's modules with the other finders and wraps their loaders."""

    def find_spec(self, fullname, path, target=None):
        if not _pending or not (fullname == "transformers" or fullname.startswith(("transformers.", "spcxr_hub."))):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _CountingLoader(spec.loader)
                return spec
        return None


def register_with_auto_classes() -> None:
    """Registers now what transformers has loaded, and the rest as transformers loads it."""
    _register_ready()
    if _pending and not any(isinstance(finder, _TransformersImports) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TransformersImports())
