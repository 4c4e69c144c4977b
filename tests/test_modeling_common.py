"""transformers' own conformance tests for the SS-CXR family, in the style of transformers'
`tests/models/vit/test_modeling_vit.py`: `ModelTesterMixin` over the four model classes, `ConfigTester` on
`SpcxrConfig`, and the image-processing mixins on `SpcxrImageProcessor`. The mixins are vendored from the
transformers 5.24.0 source release into tests/transformers_common/ (see its README.md). Every skip says why the
check does not apply to this family."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import unittest
import unittest.mock
import warnings

import pytest
import torch
from torch import nn
from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

with warnings.catch_warnings():
    # the marks (flash_attn_test, torch_compile_test ...) that transformers registers in its own conftest
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    from transformers_common.test_configuration_common import ConfigTester
    from transformers_common.test_image_processing_common import (
        ImageProcessingTester,
        ImageProcessingTestMixin,
        PostProcessSemanticSegmentationTestMixin,
    )
    from transformers_common.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor

from spcxr_hub import (
    SpcxrConfig,
    SpcxrForImageClassification,
    SpcxrForMaskedImageModeling,
    SpcxrForSemanticSegmentation,
    SpcxrImageProcessor,
    SpcxrModel,
)


class SpcxrModelTester:
    """A two-block ViT on 32×32 single-channel images (4 patches + CLS): what the mixins build and run."""

    def __init__(
        self,
        parent,
        batch_size=2,
        image_size=32,
        patch_size=16,
        num_channels=1,
        is_training=True,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        num_labels=3,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.is_training = is_training
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.num_labels = num_labels
        # in ViT, the sequence length is the number of patches + 1 (the CLS token)
        self.seq_length = (image_size // patch_size) ** 2 + 1

    def get_config(self):
        return SpcxrConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            num_labels=self.num_labels,
            # every block feeds the heads, as the defaults do for ViT-S (the last block is always among them)
            reconstruction_layers=[1, 2],
            segmentation_skip_layers=[1, 1, 2],
            segmentation_feature_size=4,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        labels = ids_tensor([self.batch_size], self.num_labels)
        return self.get_config(), pixel_values, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}


class SpcxrModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (SpcxrModel, SpcxrForImageClassification, SpcxrForSemanticSegmentation, SpcxrForMaskedImageModeling)
    test_resize_embeddings = False  # no token embeddings to resize: the input is pixels
    # The mixin runs this only for model files whose copyright line says 2023 or later; ours have none.
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = SpcxrModelTester(self)
        # hidden_size 36: divisible by the default 6 heads (SpcxrConfig validates it; ViT's test uses 37)
        self.config_tester = ConfigTester(self, config_class=SpcxrConfig, has_text_modality=False, hidden_size=36)
        # The mixin tells base models from heads by transformers' registry of in-library names (no training test for
        # a model without a loss; the base-weight loading checks). List SpcxrModel there while a test runs, so it is
        # treated as ViTModel is; `AutoModel.register` fills another table, which the mixin does not read.
        names = unittest.mock.patch.dict(MODEL_MAPPING_NAMES, {SpcxrConfig.model_type: SpcxrModel.__name__})
        names.start()
        self.addCleanup(names.stop)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        # The mixin picks labels by transformers' own Auto mappings, which do not list these classes.
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:
            pixel_values = inputs_dict["pixel_values"]
            batch, _, height, width = pixel_values.shape
            if model_class is SpcxrForImageClassification:
                inputs_dict["labels"] = torch.zeros(batch, dtype=torch.long, device=pixel_values.device)
            elif model_class is SpcxrForSemanticSegmentation:
                inputs_dict["labels"] = torch.zeros(batch, height, width, dtype=torch.long, device=pixel_values.device)
            elif model_class is SpcxrForMaskedImageModeling:
                inputs_dict["labels"] = pixel_values.clone()
                inputs_dict["pixel_mask"] = torch.ones(batch, 1, height, width, dtype=torch.bool, device=pixel_values.device)
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model_outputs_have_the_documented_shapes(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        batch, size, dim = self.model_tester.batch_size, self.model_tester.image_size, self.model_tester.hidden_size
        expected = {
            SpcxrModel: ("last_hidden_state", (batch, self.model_tester.seq_length, dim)),
            SpcxrForImageClassification: ("logits", (batch, self.model_tester.num_labels)),
            SpcxrForSemanticSegmentation: ("logits", (batch, self.model_tester.num_labels, size, size)),
            SpcxrForMaskedImageModeling: ("reconstruction", (batch, self.model_tester.num_channels, size, size)),
        }
        for model_class in self.all_model_classes:
            name, shape = expected[model_class]
            with torch.no_grad():
                output = model_class(config).eval()(**inputs)
            self.assertEqual(tuple(getattr(output, name).shape), shape, model_class.__name__)

    def test_model_get_set_embeddings(self):
        # As ViT's test: the input "embeddings" are the patch projection, not an nn.Embedding to swap.
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), nn.Module)
            output_embeddings = model.get_output_embeddings()
            self.assertTrue(output_embeddings is None or isinstance(output_embeddings, nn.Linear))


class SpcxrImageProcessingTester(ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        kwargs.setdefault("batch_size", 3)
        kwargs.setdefault("num_channels", 3)  # the inputs: RGB(A) scans of films as well as grayscale images
        kwargs.setdefault("min_resolution", 20)
        kwargs.setdefault("max_resolution", 60)
        kwargs.setdefault("size", {"height": 32, "width": 32})
        kwargs.setdefault("do_resize", True)
        kwargs.setdefault("do_normalize", True)
        kwargs.setdefault("image_mean", [0.5])
        kwargs.setdefault("image_std", [0.25])
        kwargs.setdefault("num_labels", 2)
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        # Upstream finds the classes by the test file's folder name in transformers' registry; ours is not in it.
        return {"python": SpcxrImageProcessor}

    def expected_output_image_shape(self, images):
        return 1, self.size["height"], self.size["width"]  # radiographs: always one channel out, whatever came in

    def prepare_image_processor_dict(self):
        return {"do_resize": self.do_resize, "size": self.size, "do_normalize": self.do_normalize,
                "image_mean": self.image_mean, "image_std": self.image_std}


class SpcxrImageProcessingTest(PostProcessSemanticSegmentationTestMixin, ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = SpcxrImageProcessingTester

    @unittest.skip(reason="applies to transformers' in-library processors; SpcxrImageProcessor is remote code (one "
                   "BaseImageProcessor that decodes DICOM/16-bit films itself), so there is no torchvision backend")
    def test_new_models_require_torchvision_backend(self):
        pass
