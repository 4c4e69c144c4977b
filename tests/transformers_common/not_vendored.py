"""What the vendored transformers test files import from transformers' repository but the transformers 5.24.0
sdist does not contain (tests/exporters, tests/generation, tests/utils, utils/). Written for SPCXR Hub; see README.md.
"""

import copy
import unittest

import torch
from transformers.testing_utils import torch_device

# The fields every PreTrainedConfig of transformers 5.24 has, each set to a value other than its default, so
# `ConfigTester.check_config_arguments_init` sees whether a config class passes them through. (Upstream keeps its
# own dict in tests/utils/test_configuration_utils.py; this one is built from `dataclasses.fields(PreTrainedConfig)`.)
config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}


def url_to_local_path(url: str) -> str:
    """Upstream maps fixture URLs to a CI cache; only the ADE20k/COCO fixture loaders call this, and SPCXR Hub's
    tests run offline and never use those fixtures."""
    raise unittest.SkipTest(f"network fixture {url} is not available offline")


class GenerationTesterMixin:
    """Marker only: `ModelTesterMixin` checks that models which cannot `generate` do not inherit the upstream mixin
    of this name (SS-CXR models do not generate, so its tests are not vendored)."""


class ExportTesterMixin:
    """Stands in for upstream's tests/exporters/test_export.py (not in the sdist) with the check that matters here:
    each model class exports with transformers' `DynamoExporter` (torch.export) and the exported program gives the
    eager model's outputs."""

    test_torch_exportable = True

    def test_torch_export(self):
        if not self.test_torch_exportable:
            self.skipTest(reason="test_torch_exportable is False")
        from transformers.exporters import DynamoConfig, DynamoExporter

        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            with self.subTest(model_class.__name__):
                model = model_class(copy.deepcopy(config)).to(torch_device).eval()
                inputs = self._prepare_for_class(inputs_dict, model_class)
                with torch.no_grad():
                    eager = model(**copy.deepcopy(inputs))
                exported = DynamoExporter().export(model, copy.deepcopy(inputs), config=DynamoConfig())
                outputs = exported(**copy.deepcopy(inputs))
                expected = [value for value in eager.to_tuple() if isinstance(value, torch.Tensor)]
                actual = [value for value in (outputs.to_tuple() if hasattr(outputs, "to_tuple") else outputs)
                          if isinstance(value, torch.Tensor)]
                self.assertEqual(len(actual), len(expected))
                for first, second in zip(expected, actual):
                    torch.testing.assert_close(first, second, rtol=1e-4, atol=1e-5)
