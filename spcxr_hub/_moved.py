"""Old import paths of modules that moved into the package's folders keep working: `import spcxr_hub.imaging` gives
the module `spcxr_hub.models.spcxr.imaging` itself (one module object, under both names)."""

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "spcxr_hub.configuration_spcxr": "spcxr_hub.models.spcxr.configuration_spcxr",
    "spcxr_hub.modeling_spcxr": "spcxr_hub.models.spcxr.modeling_spcxr",
    "spcxr_hub.image_processing_spcxr": "spcxr_hub.models.spcxr.image_processing_spcxr",
    "spcxr_hub.imaging": "spcxr_hub.models.spcxr.imaging",
    "spcxr_hub.synthetic": "spcxr_hub.data.synthetic",
    "spcxr_hub.layouts": "spcxr_hub.data.layouts",
    "spcxr_hub.deploy": "spcxr_hub.inference.deploy",
    "spcxr_hub.convert": "spcxr_hub.hub.convert",
    "spcxr_hub.cards": "spcxr_hub.hub.cards",
    "spcxr_hub.publishing": "spcxr_hub.hub.publishing",
    "spcxr_hub.pretraining": "spcxr_hub.training.pretraining",
    "spcxr_hub.finetuning": "spcxr_hub.training.finetuning",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self._target = target

    def create_module(self, spec):
        module = importlib.import_module(self._target)
        self._spec = module.__spec__  # the import system overwrites it with the alias's spec
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec  # already executed under its new name: keep that name's spec


class _MovedModules(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(MOVED[fullname]))


def install() -> None:
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
