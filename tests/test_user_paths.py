"""The paths users take, each in a fresh process through the plain public API: save with `save_pretrained` (in
each import order), then load with `spcxr_hub` not importable through `AutoConfig`, the Auto model class,
`AutoImageProcessor` and `pipeline(..., trust_remote_code=True)`, and get the outputs the saving process got."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import fresh_python

KINDS = ("backbone", "classification", "segmentation", "masked-image-modeling")
IMPORT_ORDERS = {
    "spcxr_hub first": "import spcxr_hub\nimport transformers\n",
    "transformers first": "import transformers\nfrom transformers import pipeline\nimport spcxr_hub\n",
    "auto classes first": "from transformers import AutoConfig, AutoImageProcessor, AutoModel\nimport spcxr_hub\n",
}
BLOCK_PROJECT = "import sys\nsys.modules['spcxr_hub'] = None  # as on a machine that has only transformers\n"

# Saves one model of each kind and the processor with save_pretrained only, and the outputs it computes itself.
SAVE = """
import json, sys
from pathlib import Path
import numpy as np, torch
from PIL import Image
from spcxr_hub import (SpcxrConfig, SpcxrForImageClassification, SpcxrForMaskedImageModeling,
                       SpcxrForSemanticSegmentation, SpcxrImageProcessor, SpcxrModel)

root = Path(sys.argv[1])
image_path = root / "film.png"
rows = np.linspace(0, 255, 40)[:, None] * np.linspace(0.2, 1.0, 56)[None]
Image.fromarray(rows.astype(np.uint8)).save(image_path)  # non-square: the letterbox is exercised
classes = {"backbone": SpcxrModel, "classification": SpcxrForImageClassification,
           "segmentation": SpcxrForSemanticSegmentation, "masked-image-modeling": SpcxrForMaskedImageModeling}
labels = {"classification": {0: "normal", 1: "pneumonia"}, "segmentation": {0: "background", 1: "lung"}}
processor = SpcxrImageProcessor(size={"height": 32, "width": 32})
pixels = processor(str(image_path), return_tensors="pt")["pixel_values"]
outputs = {}
for kind, model_class in classes.items():
    torch.manual_seed(0)
    config = SpcxrConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         image_size=32, segmentation_feature_size=4, **({"id2label": labels[kind]} if kind in labels else {}))
    model = model_class(config).eval()
    model.save_pretrained(root / kind)
    processor.save_pretrained(root / kind)
    with torch.no_grad():
        out = model(pixel_values=pixels)
    if kind == "backbone":
        outputs[kind] = out.last_hidden_state[0].tolist()
    elif kind == "classification":
        outputs[kind] = out.logits.softmax(-1)[0].tolist()
    elif kind == "segmentation":
        outputs[kind] = processor.post_process_semantic_segmentation(out, target_sizes=[(40, 56)])[0].tolist()
    else:
        outputs[kind] = out.reconstruction[0].tolist()
(root / "expected.json").write_text(json.dumps(outputs))
"""

# Loads every saved folder as a user without the project does, and reports what each way of loading computed.
LOAD = BLOCK_PROJECT + """
import json
from pathlib import Path
import numpy as np, torch
from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification,
                          AutoModelForMaskedImageModeling, AutoModelForSemanticSegmentation, pipeline)

AUTO = {"backbone": AutoModel, "classification": AutoModelForImageClassification,
        "segmentation": AutoModelForSemanticSegmentation, "masked-image-modeling": AutoModelForMaskedImageModeling}
PIPELINES = {"backbone": "image-feature-extraction", "classification": "image-classification",
             "segmentation": "image-segmentation"}
report = {}
for root in sorted(Path(p) for p in json.loads(input())):
    image = str(root / "film.png")
    for kind, auto_class in AUTO.items():
        folder = str(root / kind)
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        model = auto_class.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        modules = [type(x).__module__ for x in (config, model, processor)]
        with torch.no_grad():
            out = model(**processor(image, return_tensors="pt"))
        got = {"modules": modules}
        if kind == "backbone":
            got["model"] = out.last_hidden_state[0].tolist()
            got["pipeline"] = pipeline(PIPELINES[kind], model=folder, trust_remote_code=True)(image)[0]
        elif kind == "classification":
            got["model"] = out.logits.softmax(-1)[0].tolist()
            predictions = pipeline(PIPELINES[kind], model=folder, trust_remote_code=True)(image)
            by_label = {p["label"]: p["score"] for p in predictions}
            got["pipeline"] = [by_label[model.config.id2label[i]] for i in range(model.config.num_labels)]
        elif kind == "segmentation":
            got["model"] = processor.post_process_semantic_segmentation(out, target_sizes=[(40, 56)])[0].tolist()
            segments = pipeline(PIPELINES[kind], model=folder, trust_remote_code=True)(image)
            ids = {label: i for i, label in model.config.id2label.items()}
            mask = torch.zeros(40, 56, dtype=torch.long)
            for segment in segments:
                mask[torch.as_tensor(np.asarray(segment["mask"])) > 0] = ids[segment["label"]]
            got["pipeline"] = mask.tolist()
        else:
            got["model"] = out.reconstruction[0].tolist()
        report[f"{root.name}/{kind}"] = got
print(json.dumps(report))
"""




@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One folder per import order, each holding one saved model of every kind."""
    roots = {}
    for order, imports in IMPORT_ORDERS.items():
        root = tmp_path_factory.mktemp(order.replace(" ", "-"))
        fresh_python(imports + SAVE, root)
        roots[order] = root
    return roots


@pytest.fixture(scope="module")
def loaded(saved, tmp_path_factory):
    """What a process without the project computed from every saved folder (one process for all of them)."""
    out = fresh_python(LOAD, stdin=json.dumps([str(root) for root in saved.values()]), cwd=tmp_path_factory.mktemp("user"))
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("order", IMPORT_ORDERS)
def test_saved_model_loads_without_the_project_with_the_same_outputs(saved, loaded, order, kind):
    root = saved[order]
    got = loaded[f"{root.name}/{kind}"]
    assert all(module.startswith("transformers_modules.") for module in got["modules"]), got["modules"]
    expected = np.asarray(json.loads((root / "expected.json").read_text())[kind])
    np.testing.assert_allclose(np.asarray(got["model"]), expected, atol=1e-5)
    if "pipeline" in got:
        np.testing.assert_allclose(np.asarray(got["pipeline"]), expected, atol=1e-5)


@pytest.mark.parametrize("order", IMPORT_ORDERS)
def test_saved_processor_names_its_remote_code(saved, order):
    processor_config = json.loads((saved[order] / "classification" / "preprocessor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoImageProcessor": "image_processing_spcxr.SpcxrImageProcessor"}
    assert (saved[order] / "classification" / "imaging.py").is_file()


def test_a_pacs_dicom_goes_through_the_remote_code_processor_as_through_the_project(saved, tmp_path):
    """A JPEG Lossless DICOM (tests/data) through the processor of a saved model, where only transformers is
    installed: DICOM decoding is part of the remote code a model carries, not of the project."""
    from spcxr_hub import SpcxrImageProcessor

    model_dir = saved["spcxr_hub first"] / "classification"
    film = Path(__file__).parent / "data" / "film-jpeg-lossless-sv1.dcm"
    expected = SpcxrImageProcessor.from_pretrained(model_dir)(str(film), return_tensors="np")["pixel_values"]
    out = fresh_python(BLOCK_PROJECT + (
        "import json, sys\nfrom transformers import AutoImageProcessor\n"
        "processor = AutoImageProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "print(type(processor).__module__)\n"
        "print(json.dumps(processor(sys.argv[2], return_tensors='np')['pixel_values'].tolist()))\n"
    ), model_dir, film, cwd=tmp_path)
    module, pixels = out.strip().splitlines()[-2:]
    assert module.startswith("transformers_modules.")
    np.testing.assert_allclose(np.asarray(json.loads(pixels)), expected, atol=1e-6)
