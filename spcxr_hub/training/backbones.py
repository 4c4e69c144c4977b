"""The former name of `spcxr_hub.training.model_factories`, kept only while `spcxr_hub.training.reproduce` still
imports these three names from here; delete it once that import names `model_factories`."""

from .model_factories import SCRATCH  # noqa: F401
from .model_factories import available_model_factories as available_backbones  # noqa: F401
from .model_factories import get_model_factory as get_backbone  # noqa: F401
