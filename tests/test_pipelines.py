import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from conftest import tiny_config_kwargs
from PIL import Image
from transformers import pipeline

from spcxr_hub import SpcxrConfig, SpcxrForImageClassification, SpcxrForSemanticSegmentation, SpcxrImageProcessor

from spcxr_hub.data import synthetic
from spcxr_hub.hub.saving import save_model_directory

LABELS = {0: "normal", 1: "pneumonia", 2: "covid"}


def classifier_dir(tmp_path):
    torch.manual_seed(0)
    model = SpcxrForImageClassification(SpcxrConfig(**tiny_config_kwargs(id2label=LABELS)))
    return save_model_directory(tmp_path / "classifier", model, SpcxrImageProcessor(size={"height": 64, "width": 64}))


def segmenter_dir(tmp_path):
    torch.manual_seed(0)
    model = SpcxrForSemanticSegmentation(SpcxrConfig(**tiny_config_kwargs(id2label={0: "background", 1: "lung"})))
    return save_model_directory(tmp_path / "segmenter", model, SpcxrImageProcessor(size={"height": 64, "width": 64}))


def film(size=(90, 70)):
    image = synthetic.generate(seed=3, size=size).image
    return Image.fromarray((image * 255).astype(np.uint8))


def test_classification_pipeline_returns_every_label_from_id2label(tmp_path):
    classify = pipeline("image-classification", model=str(classifier_dir(tmp_path)), top_k=None)
    results = classify(film())
    assert sorted(r["label"] for r in results) == sorted(LABELS.values())
    assert abs(sum(r["score"] for r in results) - 1.0) < 1e-5


def test_classification_pipeline_accepts_decoded_arrays_and_batches(tmp_path):
    classify = pipeline("image-classification", model=str(classifier_dir(tmp_path)))
    results = classify([np.asarray(film(), dtype=np.float32) / 255, film()])
    assert len(results) == 2 and all(r[0]["label"] in LABELS.values() for r in results)


def test_segmentation_pipeline_returns_masks_at_the_input_size(tmp_path):
    segment = pipeline("image-segmentation", model=str(segmenter_dir(tmp_path)))
    image = film((90, 70))
    results = segment(image)
    assert results and {r["label"] for r in results} <= {"background", "lung"}
    coverage = np.zeros((90, 70), dtype=int)
    for result in results:
        assert result["mask"].size == image.size
        coverage += np.asarray(result["mask"]) > 0
    assert np.all(coverage == 1)  # the class masks partition the film
