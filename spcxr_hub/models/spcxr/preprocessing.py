"""One radiograph → model input, on numpy alone: decode (`imaging.load_image`), resize, normalise. The per-image work
of `SpcxrImageProcessor` and of the lean path's `LeanProcessor` (which must not import transformers), so the two
cannot drift apart. Remote code: travels with `image_processing_spcxr.py` to the Hub."""

import numpy as np

from .imaging import DEFAULT_MAX_PIXELS, load_image, to_model_size


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
