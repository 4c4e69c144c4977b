"""Chest-X-ray screening on NIH ChestX-ray14: the built-in `screening` (normal / abnormal) and `screening-14`
(the fourteen findings, multi-label) tasks of SPCXR Hub, written as any plugin is."""

from dataclasses import replace
from pathlib import Path

from spcxr_hub.plugin_api import MULTI_LABEL, SINGLE_LABEL, CardText, FinetuneDefaults, Task, hookimpl

from .layout import FINDINGS, LABELS, read_folder, read_folder_14, write_synthetic

METRICS = Path(__file__).parent / "metrics" / "screening.py"

CARD = CardText(
    dataset_name="NIH ChestX-ray14 (ChestX-ray8), NIH Clinical Center",
    dataset_citation="""@inproceedings{wang2017chestxray8,
  title     = {{ChestX-ray8}: Hospital-scale Chest {X-ray} Database and Benchmarks on Weakly-Supervised
               Classification and Localization of Common Thorax Diseases},
  author    = {Wang, Xiaosong and Peng, Yifan and Lu, Le and Lu, Zhiyong and Bagheri, Mohammadhadi and
               Summers, Ronald M.},
  booktitle = {Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {2097--2106},
  year      = {2017}
}""",
    intended_use=(
        "Research on separating normal from abnormal frontal chest radiographs (and on the fourteen ChestX-ray14 "
        "findings), e.g. as a benchmark of chest-X-ray representations. Not a medical device: not for diagnosis, "
        "triage or worklist prioritisation."
    ),
    limitations=(
        "Labels were text-mined from radiology reports by NLP and are noisy (some findings much more than others); "
        "'No Finding' means none of the fourteen findings was mentioned, not a normal study. One hospital (NIH "
        "Clinical Center), many follow-up images per patient, images downsampled to 1024x1024 8-bit PNG. "
        "Performance on other populations, scanners and prevalences is unknown."
    ),
    dataset_url="https://nihcc.app.box.com/v/ChestXray-NIHCC",
    hub_datasets=("spcxr/nih-chestxray14",),
)

# 112,120 images: fewer epochs than the small sets, a larger batch.
TASK = Task(
    name="screening", kind=SINGLE_LABEL, labels=LABELS, card=CARD, model_id="spcxr/vit-s-screening",
    description="Normal ('No Finding') vs abnormal chest X-rays (NIH ChestX-ray14).",
    read_folder=read_folder, write_synthetic=write_synthetic, metrics=(METRICS,),
    hub_columns={"image": "image", "abnormal": "label"}, hub_label_names={"0": "normal", "1": "abnormal"},
    defaults=FinetuneDefaults(epochs=20, batch_size=64, learning_rate=5e-4, layer_decay=0.65, warmup_epochs=2),
)

# The same images and metric module (it takes multi-label inputs too); the label is a multi-hot list.
TASK_14 = replace(
    TASK, name="screening-14", kind=MULTI_LABEL, labels=FINDINGS, read_folder=read_folder_14,
    model_id="spcxr/vit-s-screening-14", hub_columns={"image": "image", "findings": "label"}, hub_label_names={},
    description="The fourteen ChestX-ray14 findings, multi-label (NIH ChestX-ray14).",
)


@hookimpl
def register_tasks(register):
    register(TASK)
    register(TASK_14)
