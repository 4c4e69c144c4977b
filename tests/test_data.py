import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from spcxr_hub import SpcxrImageProcessor

from spcxr_hub.data import synthetic
from spcxr_hub.data.records import LayoutError, is_synthetic, load_mask, load_records
from spcxr_hub.data.task_dataset import TaskDataset, collate
from spcxr_hub.plugins.registry import get_task


def test_synthetic_datasets_are_marked_as_such(tmp_path):
    data = get_task("pneumonia").write_synthetic(tmp_path / "kermany", 1, 0)
    assert is_synthetic(data)
    assert not is_synthetic(tmp_path) and not is_synthetic("org/some-dataset")


def test_a_hub_id_that_cannot_be_loaded_offline_is_one_clear_error():
    with pytest.raises(LayoutError, match="org/not-here: neither a local folder nor a loadable Hugging Face dataset"):
        load_records(get_task("pneumonia"), "org/not-here", "train")


def test_a_split_the_task_does_not_have_is_refused(tmp_path):
    data = get_task("covid").write_synthetic(tmp_path / "covidx", 1, 0)
    with pytest.raises(ValueError, match="no split 'val'"):
        load_records(get_task("covid"), data, "val")


def test_mask_labels_may_be_a_union_of_files(tmp_path):
    left, right = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    left[:, :2], right[:, 6:] = True, True
    paths = [synthetic.write_mask_png(tmp_path / "l.png", left), synthetic.write_mask_png(tmp_path / "r.png", right)]
    assert (load_mask(paths) == (left | right)).all()


def test_segmentation_labels_are_placed_exactly_like_the_image(tmp_path):
    image = np.zeros((40, 80), np.float32)
    image[:, 40:] = 1
    mask = image > 0.5
    record = {"image": synthetic.write_png8(tmp_path / "i.png", image), "label": synthetic.write_mask_png(tmp_path / "m.png", mask)}
    item = TaskDataset([record], get_task("lungseg"), SpcxrImageProcessor(size={"height": 64, "width": 64}))[0]
    bright = item["pixel_values"][0] > 0
    assert (bright == item["labels"].bool()).float().mean() > 0.98


def test_undecodable_records_are_dropped_from_the_batch_and_counted(tmp_path):
    good = synthetic.write_png8(tmp_path / "good.png", np.zeros((8, 8), np.float32))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    dataset = TaskDataset([{"image": good, "label": 0}, {"image": bad, "label": 1}], get_task("pneumonia"),
                          SpcxrImageProcessor(size={"height": 32, "width": 32}))
    batch = collate([dataset[0], dataset[1]])
    assert batch["labels"].tolist() == [0] and len(dataset.skipped) == 1 and "bad.png" in dataset.skipped[0]
