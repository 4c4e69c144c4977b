"""Explanations: `spcxr predict --explain` overlays (Grad-CAM, attention rollout) and the pointing game on phantoms."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import phantom_ids, phantoms, spcxr, tiny_config_kwargs
from PIL import Image

from spcxr_hub.data import synthetic
from spcxr_hub.inference import explain, predictions
from spcxr_hub.plugins.registry import get_task

CNN_SIZE = 96


def lesion_phantoms(ids, size=128):
    """Pneumonia phantoms and their lesion masks: the generator draws each finding from its own random stream, so
    the noiseless film with the finding minus the one without it is exactly where the finding changed the film."""
    films, masks = [], []
    for seed in ids:
        films.append(synthetic.generate(int(seed), size, ("pneumonia",)).image)
        drawn = synthetic.generate(int(seed), size, ("pneumonia",), noise=0, text=False).image
        masks.append(np.abs(drawn - synthetic.generate(int(seed), size, (), noise=0, text=False).image) > 0.02)
    return films, masks


@pytest.fixture(scope="module")
def cnn(seed, tmp_path_factory):
    """timm's resnet10t (the CNN baselines' smallest relative), trained from scratch on 160 phantoms, saved as a
    model directory; Grad-CAM's feature map (stride 16) is 6x6 at 96 pixels. A tiny ViT trained this briefly does
    not localise (its maps' mass in the lesion is ~1.3x the lesion's area share): it has no locality prior."""
    from spcxr_hub import SpcxrImageProcessor
    from spcxr_hub.training.model_factories import get_model_factory

    torch.manual_seed(seed)
    x, y = phantoms(phantom_ids(seed, 0, 160), size=CNN_SIZE)
    model = get_model_factory("timm:resnet10t")(get_task("pneumonia"), "scratch", config="tiny", image_size=CNN_SIZE,
                                                drop_path_rate=0.0)
    epochs, batches = 12, torch.arange(len(x)).split(32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=epochs * len(batches),
                                                   pct_start=0.1)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(32):
            model(pixel_values=x[batch], labels=y[batch]).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            schedule.step()
    directory = tmp_path_factory.mktemp("cnn")
    model.eval().save_pretrained(directory)
    SpcxrImageProcessor(size={"height": CNN_SIZE, "width": CNN_SIZE}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def vit(tmp_path_factory, seed):
    root = tmp_path_factory.mktemp("vit")
    data = get_task("pneumonia").write_synthetic(root / "data", 4, seed)
    spcxr("finetune", "pneumonia", "--data", data, "--output-dir", root / "model", "--max-steps", 2, "--init", "scratch",
          "--config", "tiny", "--image-size", 64, "--batch-size", 8)
    return root / "model", data / "test" / "PNEUMONIA"


@pytest.mark.training
def test_gradcam_points_at_the_lesion_well_above_chance(cnn, seed, record_property):
    model, processor, _ = predictions.load_for_inference(str(cnn))
    films, masks = lesion_phantoms(phantom_ids(seed, 50_000, 40))
    pixels = torch.from_numpy(np.stack([processor(film, return_tensors="np")["pixel_values"][0] for film in films]))
    maps = explain.explain(model, pixels, 1, "gradcam")  # class 1: pneumonia
    shares, masses, hits = [], [], []
    for saliency, mask in zip(maps, masks):
        full = explain.to_image(processor, saliency, *mask.shape)
        shares.append(mask.mean())
        masses.append((full * mask).sum() / full.sum())
        hits.append(mask.flat[full.argmax()])  # the pointing game: is the map's peak inside the lesion?
    ratio, hit_rate, chance = np.mean(masses) / np.mean(shares), np.mean(hits), np.mean(shares)
    record_property("mass_over_area_share", float(ratio))
    record_property("pointing_hit_rate", float(hit_rate))
    assert ratio > 2.0, (ratio, chance)  # seeds 0-9 (tests/seed_sweep.py): worst 3.19 (seed 1), mean 4.06
    assert hit_rate > 3 * chance, (hit_rate, chance)


def test_predict_explain_writes_an_overlay_per_image_at_the_film_size(vit, tmp_path):
    model, films = vit
    for method in explain.METHODS:
        out = tmp_path / method
        results = json.loads(spcxr("predict", "--model", model, films, "--json", "--explain", "--output-dir", out,
                                   "--explain-method", method, "--explain-label", "pneumonia").stdout)
        for result in results:
            assert result["explained_label"] == "pneumonia" and result["explanation_method"] == method
            overlay = Image.open(result["explanation"])
            assert overlay.mode == "RGB" and overlay.size == Image.open(result["file"]).size


def test_gradcam_maps_the_vit_patch_grid_and_the_cnn_feature_map(vit, cnn):
    for directory, grid in ((vit[0], (4, 4)), (cnn, (6, 6))):
        model, processor, _ = predictions.load_for_inference(str(directory), lean=True)
        size = 64 if directory == vit[0] else CNN_SIZE
        maps = explain.explain(model, torch.randn(2, 1, size, size), [0, 1])
        assert maps.shape == (2, *grid) and maps.min() >= 0 and np.isclose(maps.max(), 1)


def test_explain_misuse_is_one_line(vit, tmp_path):
    from spcxr_hub import SpcxrConfig, SpcxrForSemanticSegmentation, SpcxrImageProcessor

    model, films = vit
    segmenter = tmp_path / "segmenter"
    SpcxrForSemanticSegmentation(SpcxrConfig(**tiny_config_kwargs(id2label={0: "background", 1: "lung"}))
                                 ).save_pretrained(segmenter)
    SpcxrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(segmenter)
    cases = [
        (["--model", segmenter, "--explain", "--output-dir", tmp_path / "o"], "mask is its explanation"),
        (["--model", model, "--explain"], "--explain needs --output-dir"),
        (["--model", model, "--explain", "--fast", "--output-dir", tmp_path / "o"], "drop --fast"),
        (["--model", model, "--explain", "--output-dir", tmp_path / "o", "--explain-label", "tumour"],
         "not a label of this model"),
        (["--model", model, "--explain", "--output-dir", tmp_path / "o", "--explain-method", "lime"],
         "expected one of gradcam, rollout"),
    ]
    for args, message in cases:
        result = spcxr("predict", films, *args, expect=2)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_evaluate_explain_draws_the_most_confident_errors(vit, tmp_path):
    model, films = vit
    data = films.parent.parent
    result = spcxr("evaluate", "pneumonia", "--model", model, "--data", data, "--output-dir", tmp_path, "--explain", 4)
    grid = tmp_path / "explanations.png"
    assert (f"wrote {grid}" in result.output and Image.open(grid).size[0] > 200) or "made no error" in result.output
