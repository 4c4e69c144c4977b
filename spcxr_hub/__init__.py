"""SPCXR Hub: SS-CXR, a GMML-pretrained ViT for chest radiographs, as a Hugging Face model family with task plugins.

Importing the package registers the model family with transformers' Auto classes, so
`AutoModel.from_pretrained("spcxr/vit-s")` works without `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
    AutoModelForSemanticSegmentation,
)

from .configuration_spcxr import SpcxrConfig
from .hookspecs import hookimpl
from .image_processing_spcxr import SpcxrImageProcessor
from .modeling_spcxr import (
    SpcxrForImageClassification,
    SpcxrForMaskedImageModeling,
    SpcxrForSemanticSegmentation,
    SpcxrModel,
    SpcxrPreTrainedModel,
)
from .tasks import MULTI_LABEL, SEGMENTATION, SINGLE_LABEL, CardText, FinetuneDefaults, Task, TaskError

__version__ = "0.1.0"
BACKBONE_REPO_ID = "spcxr/vit-s"

AutoConfig.register(SpcxrConfig.model_type, SpcxrConfig, exist_ok=True)
AutoModel.register(SpcxrConfig, SpcxrModel, exist_ok=True)
AutoModelForImageClassification.register(SpcxrConfig, SpcxrForImageClassification, exist_ok=True)
AutoModelForSemanticSegmentation.register(SpcxrConfig, SpcxrForSemanticSegmentation, exist_ok=True)
AutoModelForMaskedImageModeling.register(SpcxrConfig, SpcxrForMaskedImageModeling, exist_ok=True)
AutoImageProcessor.register(SpcxrConfig, slow_image_processor_class=SpcxrImageProcessor, exist_ok=True)
# Saving a processor writes its auto_map and copies its code (and imaging.py, which it imports relatively).
SpcxrImageProcessor.register_for_auto_class("AutoImageProcessor")

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
