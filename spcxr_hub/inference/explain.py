"""Where a classifier looked: saliency maps on the patch grid (ViT) or the last feature map (CNN), and overlay PNGs.

* `gradcam` (default): Grad-CAM (Selvaraju et al. 2017) on the last block's output. For a ViT the patch tokens are
  the "pixels" of the feature map, reshaped to the (H/16, W/16) patch grid; for the timm CNN baselines it is the
  feature map of stride 16 (`feature_info`; the last stage where none has it). Class-specific: the predicted class or `--explain-label`.
* `rollout` (SS-CXR only): attention rollout (Abnar & Zuidema 2020): the heads' mean attention plus the residual
  identity, multiplied through the layers; the row of the pooled token(s) (CLS, or the mean of the patch tokens
  for `classifier_pooling="mean"`). Not class-specific.

Written here rather than through the `grad-cam` package: it would add opencv-python (and ttach) to the install for
about 30 lines, and the SS-CXR paths (the lean classifier, token-grid reshape, rollout) would need custom glue there
too. The pointing-game test (tests/test_explanations.py) checks the maps on phantoms with known lesions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError

__all__ = ["METHODS", "explain", "overlay", "resolve_label", "write_overlay"]

METHODS = ("gradcam", "rollout")


def _encoder(model):
    """The SS-CXR encoder (lean or transformers classifier), or None for another architecture."""
    encoder = getattr(model, "spcxr", None)
    return encoder if encoder is not None and hasattr(encoder, "forward_intermediates") else None


def _target_layer(model):
    encoder = _encoder(model)
    if encoder is not None:
        return encoder.layers[-1]
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None and getattr(timm_model, "feature_info", None):
        # The stage of stride 16: the SS-CXR patch grid's resolution (14x14 at 224). The last stage (stride 32) is
        # Grad-CAM's textbook choice but too coarse for a lesion: on phantoms its maps' mass in the lesion was
        # 2.1-3.2x the lesion's area share against 3.2-5.5x at stride 16 (seeds 0-1, tests/test_explanations.py).
        stages = timm_model.feature_info
        chosen = next((stage for stage in reversed(stages) if stage.get("reduction") == 16), stages[-1])
        return timm_model.get_submodule(chosen["module"])
    raise UsageError(f"--explain covers SS-CXR and timm classifiers, not {type(model).__name__}")


def resolve_label(config, label: str | None, logits: torch.Tensor) -> int:
    """The class to explain: `label` (by name) or the top-scoring one."""
    if label is None:
        return int(logits.argmax())
    names = {name.lower(): int(index) for index, name in config.id2label.items()}
    if label.lower() not in names:
        raise UsageError(f"--explain-label {label}: not a label of this model (labels: "
                         f"{', '.join(config.id2label[i] for i in sorted(config.id2label))})")
    return names[label.lower()]


def explain(model, pixel_values: torch.Tensor, target: int | list[int], method: str = "gradcam") -> np.ndarray:
    """(B, C, H, W) pixel values → (B, h, w) maps in [0, 1] (the patch grid or feature map), for class `target`
    (one index, or one per image)."""
    if method not in METHODS:
        raise UsageError(f"--explain-method {method}: expected one of {', '.join(METHODS)}")
    targets = [target] * len(pixel_values) if isinstance(target, int) else list(target)
    # Gradients are needed even when called from predict's inference_mode; clone() leaves inference tensors behind.
    with torch.inference_mode(False), torch.enable_grad():
        pixels = pixel_values.detach().clone().float().requires_grad_(True)
        maps = _rollout(model, pixels) if method == "rollout" else _gradcam(model, pixels, targets)
    maps = maps.detach().float()
    low = maps.flatten(1).min(dim=1).values[:, None, None]
    high = maps.flatten(1).max(dim=1).values[:, None, None]
    return ((maps - low) / (high - low).clamp_min(1e-12)).cpu().numpy()


def _gradcam(model, pixels: torch.Tensor, targets: list[int]) -> torch.Tensor:
    kept = {}

    def keep(_module, _inputs, output):
        activation = output[0] if isinstance(output, tuple) else output
        activation.retain_grad()
        kept["activation"] = activation

    handle = _target_layer(model).register_forward_hook(keep)
    try:
        output = model(pixel_values=pixels)
    finally:
        handle.remove()
    logits = output if isinstance(output, torch.Tensor) else output.logits
    logits[torch.arange(len(targets)), torch.tensor(targets)].sum().backward()
    activation, gradient = kept["activation"], kept["activation"].grad
    if activation.ndim == 3:  # ViT tokens (B, 1 + h*w, D): drop CLS, tokens become the grid
        grid = _grid(model, pixels)
        activation, gradient = activation[:, 1:], gradient[:, 1:]
        weights = gradient.mean(dim=1, keepdim=True)  # (B, 1, D)
        return torch.relu((activation * weights).sum(-1)).reshape(len(pixels), *grid)
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # CNN (B, C, h, w)
    return torch.relu((activation * weights).sum(1))


def _rollout(model, pixels: torch.Tensor) -> torch.Tensor:
    encoder = _encoder(model)
    if encoder is None:
        raise UsageError("--explain-method rollout needs an SS-CXR (ViT) model; use gradcam for CNN baselines")
    attentions = encoder.forward_intermediates(pixels, output_attentions=True).attentions
    tokens = attentions[0].shape[-1]
    identity = torch.eye(tokens, device=pixels.device)
    rollout = identity.expand(len(pixels), tokens, tokens)
    for weights in attentions:
        mixed = weights.float().mean(dim=1) + identity  # the residual connection carries half of each token on
        rollout = (mixed / mixed.sum(dim=-1, keepdim=True)) @ rollout
    pooled = rollout[:, 1:, 1:].mean(dim=1) if encoder.config.classifier_pooling == "mean" else rollout[:, 0, 1:]
    return pooled.reshape(len(pixels), *_grid(model, pixels))


def _grid(model, pixels: torch.Tensor) -> tuple[int, int]:
    patch = _encoder(model).config.patch_size
    return pixels.shape[-2] // patch, pixels.shape[-1] // patch


def to_image(processor, saliency: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (h, w) map on the model's input grid → (height, width) on the original film (undoing the letterbox)."""
    from ..models.spcxr.preprocessing import letterbox_geometry

    grid = torch.from_numpy(np.ascontiguousarray(saliency, dtype=np.float32))[None, None]
    size = processor.size  # LeanProcessor: (height, width); SpcxrImageProcessor: a dict-like of height and width
    model_h, model_w = tuple(size) if isinstance(size, (tuple, list)) else (size["height"], size["width"])
    grid = torch.nn.functional.interpolate(grid, size=(model_h, model_w), mode="bilinear", align_corners=False)
    if processor.do_resize and processor.resize_mode == "pad":
        top, left, new_h, new_w = letterbox_geometry(height, width, (model_h, model_w))
        grid = grid[..., top:top + new_h, left:left + new_w]
    return torch.nn.functional.interpolate(grid, size=(height, width), mode="bilinear",
                                           align_corners=False)[0, 0].clamp(0, 1).numpy()


def overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(H, W) film in [0, 1] and a same-size map in [0, 1] → (H, W, 3) uint8: the film in grey, the map in 'jet'
    weighted by itself (cold areas stay grey, so the anatomy remains readable)."""
    from matplotlib import colormaps

    grey = np.repeat(image[..., None], 3, axis=-1)
    colour = colormaps["jet"](saliency)[..., :3]
    weight = alpha * saliency[..., None]
    return np.round(255 * ((1 - weight) * grey + weight * colour)).clip(0, 255).astype(np.uint8)


def write_overlay(path: Path, processor, saliency: np.ndarray, output_dir: Path, suffix: str = "explanation") -> Path:
    """The overlay PNG of one film (`<stem>_<suffix>.png` in `output_dir`), at the film's original size."""
    from PIL import Image

    from ..hub.saving import atomic_file
    from ..models.spcxr.imaging import load_image

    image = load_image(str(path), max_pixels=processor.max_pixels)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{Path(path).name.rsplit('.', 1)[0]}_{suffix}.png"
    with atomic_file(target) as staging:
        Image.fromarray(overlay(image, to_image(processor, saliency, *image.shape))).save(staging, format="PNG")
    return target


def check_explain_options(explain_wanted: bool, segmentation: bool, fast: bool, output_dir, runtime: bool = False) -> None:
    """`predict --explain`'s bad combinations, each one line."""
    if not explain_wanted:
        return
    if segmentation:
        raise UsageError("--explain: a segmentation model's mask is its explanation (predict writes it to "
                         "--output-dir as an overlay); --explain covers classifiers")
    if fast:
        raise UsageError("--explain needs gradients of the fp32 model; drop --fast")
    if runtime:
        raise UsageError("--explain needs gradients of the PyTorch model, which an exported (ONNX/OpenVINO) folder "
                         "does not have: explain with the model directory it was exported from")
    if output_dir is None:
        raise UsageError("--explain needs --output-dir (one overlay PNG per image is written there)")


def explain_batch(model, pixel_values: torch.Tensor, logits: torch.Tensor, paths, processor, output_dir: Path, *,
                  label: str | None = None, method: str = "gradcam") -> list[dict]:
    """One overlay PNG per image of a batch; returns what predict adds to each result."""
    targets = [resolve_label(model.config, label, item) for item in logits]
    maps = explain(model, pixel_values, targets, method)
    return [{"explanation": str(write_overlay(path, processor, saliency, output_dir)),
             "explained_label": model.config.id2label[target], "explanation_method": method}
            for path, saliency, target in zip(paths, maps, targets)]
