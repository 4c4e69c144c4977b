"""Tuberculosis detection on the Shenzhen chest X-ray set: an example third-party plugin for SPCXR Hub.

Everything a task needs comes from SPCXR Hub's public plugin API, `spcxr_hub.plugin_api`: the Task contract,
`hookimpl` and the layout helpers. The package is found through its entry point (`[project.entry-points.spcxr_hub]`
in pyproject.toml), exactly as the built-in tasks are.
"""

from pathlib import Path

from spcxr_hub.plugin_api import SINGLE_LABEL, CardText, FinetuneDefaults, Task, hookimpl

from .layout import LABELS, read_folder, write_synthetic

__version__ = "0.1.0"

CARD = CardText(
    dataset_name="Shenzhen chest X-ray set (Shenzhen No. 3 People's Hospital, U.S. National Library of Medicine)",
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
        "Research on tuberculosis screening from frontal chest radiographs and on transfer of self-supervised "
        "chest-X-ray representations. Not a medical device: not for diagnosis, screening programmes or any "
        "clinical decision."
    ),
    limitations=(
        "662 radiographs (326 normal, 336 tuberculosis) from one hospital in Shenzhen, China; labels are image-level "
        "and not all tuberculosis cases are culture-confirmed; several images show other diseases. The every-fifth "
        "split is a convention of this plugin, not an official benchmark split."
    ),
    dataset_url="https://lhncbc.nlm.nih.gov/LHC-publications/pubs/TuberculosisChestXrayImageDataSets.html",
    hub_datasets=("spcxr/shenzhen-tuberculosis",),
)

TASK = Task(
    name="tuberculosis", kind=SINGLE_LABEL, labels=LABELS, card=CARD, model_id="spcxr/vit-s-tuberculosis",
    description="Normal vs tuberculosis chest X-rays (Shenzhen set); example third-party plugin.",
    read_folder=read_folder, write_synthetic=write_synthetic,
    metrics=(Path(__file__).parent / "metrics" / "tuberculosis.py",),
    hub_columns={"image": "image", "tuberculosis": "label"}, hub_label_names={"0": "normal", "1": "tuberculosis"},
    defaults=FinetuneDefaults(epochs=50, batch_size=32, learning_rate=5e-4, layer_decay=0.65, warmup_epochs=5),
)


@hookimpl
def register_tasks(register):
    register(TASK)
