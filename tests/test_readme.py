import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fresh_python, tiny_config_kwargs
from hub_cache import publish_to_cache
from PIL import Image
from test_auto_classes import WITHOUT_PROJECT

from spcxr_hub import SpcxrConfig, SpcxrForImageClassification, SpcxrForSemanticSegmentation, SpcxrImageProcessor, SpcxrModel

from spcxr_hub.data import synthetic
from spcxr_hub.hub.saving import save_model_directory

README = Path(__file__).parents[1] / "README.md"


def snippets() -> dict[str, str]:
    text = README.read_text()
    return dict(re.findall(r"<!-- readme-test: ([\w-]+) -->\n```python\n(.*?)```", text, flags=re.S))


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A Hugging Face cache holding tiny spcxr/vit-s, spcxr/vit-s-pneumonia and spcxr/vit-s-lungseg, and a film."""
    root = tmp_path_factory.mktemp("readme")
    processor = SpcxrImageProcessor(size={"height": 64, "width": 64})
    torch.manual_seed(0)
    models = {
        "spcxr/vit-s": SpcxrModel(SpcxrConfig(**tiny_config_kwargs())),
        "spcxr/vit-s-pneumonia": SpcxrForImageClassification(SpcxrConfig(**tiny_config_kwargs(id2label={0: "normal", 1: "pneumonia"}))),
        "spcxr/vit-s-lungseg": SpcxrForSemanticSegmentation(SpcxrConfig(**tiny_config_kwargs(id2label={0: "background", 1: "lung"}))),
    }
    for repo_id, model in models.items():
        publish_to_cache(save_model_directory(root / repo_id.split("/")[1], model, processor), repo_id, root / "cache")
    image = synthetic.generate(seed=5, size=(120, 100)).image
    Image.fromarray((image * 255).astype(np.uint8)).save(root / "chest.png")
    return root


def test_readme_shows_the_two_setup_commands_first():
    text = README.read_text()
    first_block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    assert first_block.splitlines()[0].startswith("make demo") and first_block.splitlines()[1].startswith("make test")


def test_readme_has_the_three_loading_snippets():
    assert set(snippets()) == {"registered", "remote-code", "offline-cache"}


@pytest.mark.parametrize("name", ["registered", "remote-code", "offline-cache"])
def test_readme_snippet_runs(name, hub):
    code = snippets()[name]
    if name == "remote-code":
        code = WITHOUT_PROJECT + code  # as on a machine where only transformers is installed
    out = fresh_python(code, env={"HF_HUB_CACHE": str(hub / "cache"), "HF_HUB_OFFLINE": "1"}, cwd=hub)
    if name == "registered":
        assert "torch.Size([1, 32])" in out
    elif name == "remote-code":
        assert "'label': 'normal'" in out and "'label': 'pneumonia'" in out
        assert "(100, 120)" in out  # PIL size (width, height) of the 120×100 film
    else:
        assert "SpcxrModel SpcxrForSemanticSegmentation" in out
