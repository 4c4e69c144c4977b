import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from conftest import phantom_ids, phantoms


@pytest.mark.training
def test_a_tiny_classifier_separates_pneumonia_from_normal_after_short_training(pneumonia_classifier, seed,
                                                                                 record_property):
    test_x, test_y = phantoms(phantom_ids(seed, 1000, 80))
    with torch.no_grad():
        accuracy = (pneumonia_classifier(test_x).logits.argmax(-1) == test_y).float().mean().item()
    record_property("held_out_accuracy", accuracy)
    assert accuracy >= 0.8, f"held-out accuracy {accuracy:.2f} (chance 0.5)"
