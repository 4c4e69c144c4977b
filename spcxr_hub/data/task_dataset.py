"""A task's records as a torch dataset: the image through the model's processor, and the label as the task's loss
wants it. Apart from `records.py` so that reading a layout (all a plugin does) does not import torch."""

import numpy as np
import torch

from ..models.spcxr.imaging import ImageDecodeError, load_image
from ..plugins.tasks import MULTI_LABEL, SEGMENTATION, Task
from .records import LayoutError, load_mask


class TaskDataset(torch.utils.data.Dataset):
    """Records → model inputs: `pixel_values` (1, H, W) through the image processor, and `labels`: a class index
    (single-label), a float multi-hot vector (multi-label) or an (H, W) class-id mask placed exactly as the image.

    `transform(image, mask, index)` (training augmentation) maps a decoded float image and mask before the
    processor. An image that
    fails to decode is skipped (counted in `skipped`) unless `strict`, when its error propagates."""

    def __init__(self, records, task: Task, processor, *, transform=None, strict: bool = False):
        self.records, self.task, self.processor = records, task, processor
        self.transform, self.strict = transform, strict
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        try:
            image = load_image(record["image"], max_pixels=self.processor.max_pixels)
            mask = load_mask(record["label"]) if self.task.kind == SEGMENTATION else None
        except ImageDecodeError as error:
            if self.strict:
                raise
            self.skipped.append(str(error))
            return None
        if mask is not None and mask.shape != image.shape:
            raise LayoutError(f"{record['label']}: mask is {mask.shape[1]}x{mask.shape[0]}, image is {image.shape[1]}x{image.shape[0]}")
        if self.transform is not None:
            image, mask = self.transform(image, mask, index)
        pixel_values = self.processor(image, return_tensors="pt")["pixel_values"][0]
        if self.task.kind == SEGMENTATION:
            size = (pixel_values.shape[-2], pixel_values.shape[-1])
            placed = self.processor.to_model_size(mask.astype(np.float32), {"height": size[0], "width": size[1]}, self.processor.resize_mode)
            labels = torch.from_numpy(placed > 0.5).long()
        elif self.task.kind == MULTI_LABEL:
            labels = torch.tensor(record["label"], dtype=torch.float32)
        else:
            labels = torch.tensor(int(record["label"]))
        return {"pixel_values": pixel_values, "labels": labels, "index": index}


def collate(items: list) -> dict | None:
    """Stacks a batch, dropping the items that failed to decode."""
    items = [item for item in items if item is not None]
    if not items:
        return None
    return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in items[0]}
