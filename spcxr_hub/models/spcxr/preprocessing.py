"""One radiograph → model input, on numpy alone: decode (`imaging.load_image`), resize, normalise. The per-image work
of `SpcxrImageProcessor` and of the lean path's `LeanProcessor` (which must not import transformers), so the two
cannot drift apart. Remote code: travels with `image_processing_spcxr.py` to the Hub."""

import numpy as np
from PIL import Image

from .imaging import DEFAULT_MAX_PIXELS, load_image


def letterbox_geometry(height: int, width: int, target: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where an (height, width) image lands inside `target` under `resize_mode="pad"`: (top, left, new_h, new_w)."""
    scale = min(target[0] / height, target[1] / width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    return (target[0] - new_h) // 2, (target[1] - new_w) // 2, new_h, new_w


def resize_array(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize (Pillow, antialiased when shrinking) of a float (H, W) image in [0, 1], clipped to [0, 1]."""
    if image.shape == (height, width):
        return image
    resized = Image.fromarray(image.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def to_model_size(image: np.ndarray, target: tuple[int, int], resize_mode: str = "pad") -> np.ndarray:
    """(H, W) float image → `target` (height, width): `"stretch"` resizes; `"pad"` keeps the aspect ratio and centres
    the image on a black (air) canvas."""
    if resize_mode == "stretch":
        return resize_array(image, *target)
    top, left, new_h, new_w = letterbox_geometry(*image.shape, target)
    canvas = np.zeros(target, dtype=np.float32)
    canvas[top : top + new_h, left : left + new_w] = resize_array(image, new_h, new_w)
    return canvas


def channel_value(value) -> np.float32:
    """A mean or std given as a scalar or one per channel → the single channel's float32."""
    return np.float32(np.asarray(value, dtype=np.float32).reshape(-1)[0])


def preprocess_image(
    image,
    size: tuple[int, int],
    resize_mode: str = "pad",
    do_resize: bool = True,
    do_normalize: bool = True,
    image_mean=0.5,
    image_std=0.25,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """image (path, bytes, PIL, numpy, torch) → float32 (1, H, W): decoded to [0, 1], resized to `size` (height,
    width) when `do_resize`, then `(x - image_mean) / image_std` when `do_normalize`."""
    array = load_image(image, max_pixels=max_pixels)
    if do_resize:
        array = to_model_size(array, size, resize_mode)
    if do_normalize:
        array = (array - channel_value(image_mean)) / channel_value(image_std)
    return array[None].astype(np.float32, copy=False)
