import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from conftest import tiny_config_kwargs

from spcxr_hub import SpcxrConfig, SpcxrForImageClassification, SpcxrImageProcessor, synthetic


def phantoms(seeds, size=64):
    processor = SpcxrImageProcessor(size={"height": size, "width": size})
    labels = np.array([seed % 2 for seed in seeds])  # odd seeds have pneumonia
    images = [synthetic.generate(int(s), 128, ("pneumonia",) if label else ()).image for s, label in zip(seeds, labels)]
    return processor(images)["pixel_values"], torch.from_numpy(labels)


def test_a_tiny_classifier_separates_pneumonia_from_normal_after_short_training():
    torch.manual_seed(0)
    train_x, train_y = phantoms(range(0, 160))
    test_x, test_y = phantoms(range(1000, 1080))
    model = SpcxrForImageClassification(SpcxrConfig(**tiny_config_kwargs(classifier_pooling="mean")))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for epoch in range(12):
        for batch in torch.randperm(len(train_x)).split(32):
            loss = model(train_x[batch], labels=train_y[batch]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        accuracy = (model(test_x).logits.argmax(-1) == test_y).float().mean().item()
    assert accuracy >= 0.8, f"held-out accuracy {accuracy:.2f} (chance 0.5)"
