"""Image processor of SS-CXR: any radiograph → (1, H, W) normalised float tensor.

This file is copied to the Hugging Face Hub as remote code together with `preprocessing.py` (the per-image work,
shared with the lean inference path) and `imaging.py`; it imports nothing else of the project.

Policy (documented so results are reproducible):
1. Decoding (`imaging.load_image`): PIL images of any mode, numpy arrays, file paths (PNG/JPEG/TIFF/BMP, 16-bit
   PNG, DICOM with modality/VOI LUT and MONOCHROME1 inversion) → float32 (H, W) in [0, 1].
2. Resizing to `size` (224×224 by default), `resize_mode`:
   - `"pad"` (default): scale the longer side to the target, keep the aspect ratio, centre on a black (air)
     canvas. Non-square films keep their anatomy's proportions; masks are cropped back in post-processing.
   - `"stretch"`: plain resize to the target, as most CXR pipelines do.
   Resampling is bicubic with antialiasing (Pillow), so a 3000-pixel film and its 224-pixel version agree.
3. Normalisation: `(x - image_mean) / image_std` with mean 0.5 and std 0.25 by default, which brings typical
   radiographs near zero mean and unit variance (GMML fills corrupted areas with N(0, 1) in this space).
"""

from collections.abc import Sequence

import numpy as np
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

try:
    from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
except ImportError:  # older transformers 5.x: the same two fields on a plain BatchFeature
    SemanticSegmentationPostProcessorOutput = BatchFeature

from .imaging import DEFAULT_MAX_PIXELS
from .preprocessing import letterbox_geometry, to_model_size
from .preprocessing import preprocess_image


class SpcxrImageProcessor(BaseImageProcessor):
    r"""Turns radiographs into `pixel_values` of shape (B, 1, H, W) for SS-CXR models (see the module docstring).

    Args:
        do_resize: resize to `size`.
        size: `{"height": int, "width": int}`.
        resize_mode: `"pad"` (keep aspect ratio, letterbox) or `"stretch"`.
        do_normalize, image_mean, image_std: `(x - mean) / std` on the [0, 1] image.
        max_pixels: images with more pixels are rejected before decoding (decompression-bomb guard).
    """

    model_input_names = ["pixel_values"]
    # Declared here rather than registered at import time, so every save writes the auto_map and copies this file
    # (and imaging.py) whatever was imported first: the saved folder then loads where the project is not installed.
    _auto_class = "AutoImageProcessor"

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | None = None,
        resize_mode: str = "pad",
        do_normalize: bool = True,
        image_mean: float | Sequence[float] = 0.5,
        image_std: float | Sequence[float] = 0.25,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if resize_mode not in ("pad", "stretch"):
            raise ValueError(f"SpcxrImageProcessor.resize_mode must be 'pad' or 'stretch', got {resize_mode!r}")
        self.do_resize = do_resize
        self.size = dict(size) if size is not None else {"height": 224, "width": 224}
        self.resize_mode = resize_mode
        self.do_normalize = do_normalize
        self.image_mean = [float(image_mean)] if np.isscalar(image_mean) else [float(v) for v in image_mean]
        self.image_std = [float(image_std)] if np.isscalar(image_std) else [float(v) for v in image_std]
        self.max_pixels = int(max_pixels)

    def to_model_size(self, image: np.ndarray, size: dict[str, int], resize_mode: str) -> np.ndarray:
        return to_model_size(image, (size["height"], size["width"]), resize_mode)

    def preprocess(
        self,
        images,
        do_resize: bool | None = None,
        size: dict[str, int] | None = None,
        resize_mode: str | None = None,
        do_normalize: bool | None = None,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """images: one image or a list (PIL, numpy, torch, path, bytes). Returns `pixel_values` (B, 1, H, W)."""
        size = self.size if size is None else size
        if not isinstance(images, (list, tuple)):
            images = [images]
        options = dict(
            size=(size["height"], size["width"]),
            resize_mode=self.resize_mode if resize_mode is None else resize_mode,
            do_resize=self.do_resize if do_resize is None else do_resize,
            do_normalize=self.do_normalize if do_normalize is None else do_normalize,
            image_mean=self.image_mean if image_mean is None else image_mean,
            image_std=self.image_std if image_std is None else image_std,
            max_pixels=self.max_pixels,
        )
        arrays = [preprocess_image(image, **options) for image in images]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"images have different sizes {sorted(shapes)}; enable do_resize to batch them")
        return BatchFeature(data={"pixel_values": np.stack(arrays)}, tensor_type=return_tensors)

    def post_process_semantic_segmentation(
        self,
        outputs,
        target_sizes: Sequence[tuple[int, int]] | None = None,
        return_segmentation_scores: bool = False,
    ):
        """Class-id masks: a list of (H, W) long tensors, at `target_sizes` (the original images' sizes) when given,
        undoing the letterbox of `resize_mode="pad"`; otherwise at the model's input size.

        With `return_segmentation_scores=True` (as transformers' processors), each item is instead a
        `SemanticSegmentationPostProcessorOutput` with `segmentation` (that mask) and `segmentation_scores`, the
        logits (num_labels, H, W) at the same size, before softmax."""
        logits = outputs.logits if hasattr(outputs, "logits") else outputs["logits"]
        if target_sizes is None:
            scores = list(logits)
        else:
            if len(target_sizes) != len(logits):
                raise ValueError(f"got {len(target_sizes)} target_sizes for a batch of {len(logits)}")
            scores = []
            for item, (height, width) in zip(logits, target_sizes):
                if self.resize_mode == "pad" and self.do_resize:
                    top, left, new_h, new_w = letterbox_geometry(int(height), int(width), tuple(item.shape[-2:]))
                    item = item[:, top : top + new_h, left : left + new_w]
                size = (int(height), int(width))
                scores.append(F.interpolate(item[None].float(), size=size, mode="bilinear", align_corners=False)[0])
        masks = [item.argmax(dim=0) for item in scores]
        if not return_segmentation_scores:
            return masks
        return [
            SemanticSegmentationPostProcessorOutput(data={"segmentation": mask, "segmentation_scores": item})
            for mask, item in zip(masks, scores)
        ]


__all__ = ["SpcxrImageProcessor"]
