"""Pooled features, the input of a classifier's head, captured during its ordinary forward pass: what the OOD score
(`ood.py`) measures. One forward pre-hook on the head serves the lean SS-CXR classifier, the transformers classes, the
`--fast` paths (their head stays a module) and timm baselines (`get_classifier()`); a runtime export returns them as
its graph's second output."""

from __future__ import annotations

import contextlib

import numpy as np

__all__ = ["capture_pooled_features", "head_module", "records_features"]


def head_module(model):
    """The module whose input is the pooled feature vector, or None (a segmenter has no such head)."""
    head = getattr(model, "classifier", None)
    if head is not None and hasattr(head, "weight"):  # nn.Linear, or the --fast path's quantised / packed Linear
        return head
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None and hasattr(timm_model, "get_classifier"):
        return timm_model.get_classifier()
    return None


@contextlib.contextmanager
def capture_pooled_features(model):
    """Within the block, each forward pass of `model` appends its (B, D) pooled features (float32 numpy) to the
    yielded list; the list stays empty for a model without a classification head."""
    captured: list[np.ndarray] = []
    if getattr(model, "manifest", None) is not None:  # a runtime export (runtimes.py): its graph outputs them
        def keep_output(_module, _inputs, output):
            if output.features is not None:
                captured.append(output.features.float().flatten(1).numpy())

        handle = model.register_forward_hook(keep_output)
        try:
            yield captured
        finally:
            handle.remove()
        return
    head = head_module(model)
    if head is None:
        yield captured
        return

    def keep(_module, inputs):
        captured.append(inputs[0].detach().float().flatten(1).cpu().numpy())

    handle = head.register_forward_pre_hook(keep)
    try:
        yield captured
    finally:
        handle.remove()


def records_features(model, processor, task, records, *, batch_size: int = 16, strict: bool = False,
                     progress: bool = True) -> np.ndarray:
    """(N, D) pooled features of a task's records, preprocessed as for evaluation (no augmentation)."""
    import torch
    from tqdm.auto import tqdm

    from ..data.task_dataset import TaskDataset, collate
    from .devices import model_device, to_device

    dataset = TaskDataset(records, task, processor, strict=strict)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    where = model_device(model)
    was_training = model.training
    model.eval()
    with capture_pooled_features(model) as captured, torch.inference_mode():
        for batch in tqdm(loader, desc="OOD statistics", unit="batch", disable=not progress, leave=False):
            if batch is not None:
                model(pixel_values=to_device(batch["pixel_values"], where))
    model.train(was_training)
    return np.concatenate(captured) if captured else np.zeros((0, 0), np.float32)


def write_ood_statistics(model, processor, task, records, directory, *, strict: bool = False,
                         progress: bool = True, batch_size: int = 16):
    """Fits `ood.fit` on the training records' pooled features and writes `ood_statistics.safetensors` into
    `directory`. Returns the statistics, or None for a model without a classification head (a segmenter: its
    mask is its own check) or too few readable images."""
    from . import ood

    if head_module(model) is None:
        return None
    features = records_features(model, processor, task, records, batch_size=batch_size, strict=strict,
                                progress=progress)
    if len(features) < 2 * ood.FOLDS:
        return None
    statistics = ood.fit(features)
    statistics.save(directory)
    return statistics
