"""Pneumonia on Kermany et al.'s pediatric chest X-rays: the built-in `pneumonia` (normal / pneumonia) and
`pneumonia-3class` (normal / bacterial / viral) tasks of SPCXR Hub, written as any plugin is."""

from dataclasses import replace
from pathlib import Path

from spcxr_hub.plugin_api import SINGLE_LABEL, CardText, FinetuneDefaults, Task, hookimpl

from .layout import LABELS, LABELS_3CLASS, SPLITS, read_folder, read_folder_3class, write_synthetic

METRICS = Path(__file__).parent / "metrics" / "pneumonia.py"

CARD = CardText(
    dataset_name="Chest X-Ray Images (Pneumonia), Kermany et al. (Guangzhou Women and Children's Medical Center)",
    dataset_citation="""@article{kermany2018identifying,
  title   = {Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep Learning},
  author  = {Kermany, Daniel S. and Goldbaum, Michael and Cai, Wenjia and Valentim, Carolina C. S. and
             Liang, Huiying and Baxter, Sally L. and McKeown, Alex and Yang, Ge and Wu, Xiaokang and Yan, Fangbing
             and others},
  journal = {Cell},
  volume  = {172},
  number  = {5},
  pages   = {1122--1131.e9},
  year    = {2018},
  doi     = {10.1016/j.cell.2018.02.010}
}""",
    intended_use=(
        "Research on pneumonia detection in pediatric anterior-posterior chest radiographs and on label-efficient "
        "transfer from self-supervised pretraining. Not a medical device: not for diagnosis or any clinical decision."
    ),
    limitations=(
        "Children aged one to five from a single center in Guangzhou: the model is not validated on adults, other "
        "hospitals or other equipment. Labels are image-level gradings by physicians without laboratory "
        "confirmation, and bacterial vs viral labels are especially uncertain. The official validation split has "
        "only 16 images, and PNEUMONIA outnumbers NORMAL about three to one."
    ),
    dataset_url="https://data.mendeley.com/datasets/rscbjbr9sj/2",
    hub_datasets=("hf-vision/chest-xray-pneumonia",),
)

TASK = Task(
    name="pneumonia", kind=SINGLE_LABEL, labels=LABELS, splits=SPLITS, card=CARD, model_id="spcxr/vit-s-pneumonia",
    description="Normal vs pneumonia in pediatric chest X-rays (Kermany et al. 2018).",
    read_folder=read_folder, write_synthetic=write_synthetic, metrics=(METRICS,),
    hub_columns={"image": "image", "label": "label"}, hub_label_names={"NORMAL": "normal", "PNEUMONIA": "pneumonia"},
    defaults=FinetuneDefaults(epochs=30, batch_size=32, learning_rate=5e-4, layer_decay=0.65, warmup_epochs=3),
)

# Same images and metrics; the kind of pneumonia comes from the file names, which no Hub copy keeps.
TASK_3CLASS = replace(
    TASK, name="pneumonia-3class", labels=LABELS_3CLASS, read_folder=read_folder_3class,
    model_id="spcxr/vit-s-pneumonia-3class", card=replace(CARD, hub_datasets=()), hub_columns={}, hub_label_names={},
    description="Normal vs bacterial vs viral pneumonia, from Kermany et al.'s file names.",
)


@hookimpl
def register_tasks(register):
    register(TASK)
    register(TASK_3CLASS)
