"""COVID-19 detection on COVIDx CXR-3: the built-in `covid` task of SPCXR Hub, written as any plugin is."""

from pathlib import Path

from spcxr_hub.plugin_api import SINGLE_LABEL, CardText, FinetuneDefaults, Task, hookimpl

from .layout import LABELS, read_folder, write_synthetic

METRICS = Path(__file__).parent / "metrics" / "covid.py"

CARD = CardText(
    dataset_name="COVIDx CXR-3",
    dataset_citation="""@article{pavlova2022covidx,
  title   = {{COVIDx CXR-3}: A Large-Scale, Open-Source Benchmark Dataset of Chest {X-ray} Images for
             Computer-Aided {COVID-19} Diagnostics},
  author  = {Pavlova, Maya and Tuinstra, Tia and Aboutalebi, Hossein and Zhao, Andy and Gunraj, Hayden and
             Wong, Alexander},
  journal = {arXiv preprint arXiv:2206.03671},
  year    = {2022}
}""",
    intended_use=(
        "Research on detecting COVID-19 from frontal chest radiographs and on transfer from self-supervised "
        "chest-X-ray pretraining. Not a medical device: not for diagnosis, triage or any clinical decision."
    ),
    limitations=(
        "COVIDx is assembled from many public sources (RSNA, BIMCV, RICORD, SIRM, Cohen et al., ...) whose "
        "positives and negatives come from different hospitals, scanners and populations, so a model can learn "
        "the source instead of the disease (burned-in text, positioning, portable AP views). The test split is "
        "not an external validation; the prevalence in it is not a clinical prevalence; RT-PCR-negative "
        "patients with other pneumonia are labelled negative."
    ),
    dataset_url="https://github.com/lindawangg/COVID-Net/blob/master/docs/COVIDx.md",
    hub_datasets=("spcxr/covidx-cxr3",),
)

TASK = Task(
    name="covid", kind=SINGLE_LABEL, labels=LABELS, card=CARD, model_id="spcxr/vit-s-covid",
    description="COVID-19 positive vs negative chest X-rays (COVIDx CXR-3).",
    read_folder=read_folder, write_synthetic=write_synthetic, metrics=(METRICS,),
    hub_columns={"image": "image", "label": "label"},
    defaults=FinetuneDefaults(epochs=30, batch_size=32, learning_rate=5e-4, layer_decay=0.65, warmup_epochs=5),
)


@hookimpl
def register_tasks(register):
    register(TASK)
