"""Lung-field segmentation on the Montgomery County chest X-ray set: the built-in `lungseg` task of SPCXR Hub,
written as any plugin is."""

from pathlib import Path

from spcxr_hub.plugin_api import SEGMENTATION, CardText, FinetuneDefaults, Task, hookimpl

from .layout import LABELS, read_folder, write_synthetic

METRICS = Path(__file__).parent / "metrics" / "lungseg.py"

CARD = CardText(
    dataset_name="Montgomery County chest X-ray set (U.S. National Library of Medicine)",
    dataset_citation="""@article{jaeger2014two,
  title   = {Two public chest {X-ray} datasets for computer-aided screening of pulmonary diseases},
  author  = {Jaeger, Stefan and Candemir, Sema and Antani, Sameer and W{\\'a}ng, Yi-Xi{\\'a}ng J. and
             Lu, Pu-Xuan and Thoma, George},
  journal = {Quantitative Imaging in Medicine and Surgery},
  volume  = {4},
  number  = {6},
  pages   = {475--477},
  year    = {2014}
}""",
    intended_use=(
        "Research on lung-field segmentation of frontal chest radiographs, e.g. as a pre-processing step or as a "
        "dense-prediction benchmark of chest-X-ray representations. Not a medical device: not for diagnosis, "
        "measurement for clinical decisions or treatment planning."
    ),
    limitations=(
        "138 radiographs (80 normal, 58 with tuberculosis) from one tuberculosis-control programme in Montgomery "
        "County, Maryland, one scanner type; masks drawn by one annotation team exclude the heart and the "
        "regions behind it and below the diaphragm. The split is a fixed every-fifth-image rule, not a "
        "patient-level benchmark split; performance on other populations, pediatric or portable images is unknown."
    ),
    dataset_url="https://lhncbc.nlm.nih.gov/LHC-publications/pubs/TuberculosisChestXrayImageDataSets.html",
    hub_datasets=("spcxr/montgomery-lung-masks",),
)

TASK = Task(
    name="lungseg", kind=SEGMENTATION, labels=LABELS, card=CARD, model_id="spcxr/vit-s-lungseg",
    description="Lung-field segmentation, left and right lung merged (Montgomery County set).",
    read_folder=read_folder, write_synthetic=write_synthetic, metrics=(METRICS,),
    # A segmentation fine-tune learns a whole decoder: a higher learning rate and more epochs than classification.
    defaults=FinetuneDefaults(epochs=100, batch_size=8, learning_rate=1e-3, layer_decay=0.75, warmup_epochs=10),
    hub_columns={"image": "image", "lung_mask": "label"},
)


@hookimpl
def register_tasks(register):
    register(TASK)
