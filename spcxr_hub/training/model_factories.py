"""Task-model factories: what `spcxr finetune TASK --backbone NAME` builds, a task's head on a network.

This module is itself a plugin (entry point `backbones` in group `spcxr_hub`): it registers the built-in factories
through the same `register_backbones(register)` hook a third party implements, so `spcxr plugins` lists them.

- `spcxr` (default): SS-CXR's ViT (`SpcxrForImageClassification` / `SpcxrForSemanticSegmentation`); `--init` is a
  model directory or Hub id (default `spcxr/vit-s`) or `scratch` with a `--config` preset.
- `timm:<architecture>`: the paper's baselines (`densenet121`, `densenet169`, `efficientnet_b2`,
  `inception_resnet_v2`, `vit_small_patch16_224`; any other timm architecture works too), created by timm with
  `in_chans=1` and wrapped in transformers' own `TimmWrapperForImageClassification` (model_type `timm_wrapper`), so
  the saved directory loads with `AutoModelForImageClassification` and `pipeline("image-classification")` like any
  SS-CXR model. `--init` is `scratch` (default: timm's own random initialisation) or a local weights file or folder
  (`.safetensors`, or `.pth`/`.bin` read with `weights_only=True`); RGB weights are adapted to one channel by timm
  (the first convolution's kernels are summed over R, G, B, exactly what `spcxr convert` does for ViTs) and the
  classifier is replaced. Nothing is downloaded. Classification tasks only: UNETR needs a ViT's token grid.

A plugin's factory: `register(name, factory)` where `factory(task, init, *, config, image_size, drop_path_rate)`
returns a transformers `PreTrainedModel` whose forward takes `pixel_values` (B, 1, H, W) and `labels` and returns
`loss` and `logits`, and whose `save_pretrained` directory loads with the Auto classes. Register a `ModelFactory`
for more control (default `--init`, segmentation support, layer-wise lr decay).

Imported whenever the plugins load: heavy libraries (torch, timm, transformers' models) are imported inside the
functions that build.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SpcxrError, UsageError
from ..plugins.hookspecs import hookimpl
from ..plugins.tasks import MULTI_LABEL, SEGMENTATION, SINGLE_LABEL, Task
from .presets import preset_config

SCRATCH = "scratch"
TIMM_PREFIX = "timm:"
# The supervised CNN and ViT baselines of the SPCXR paper's comparison.
TIMM_BASELINES = ("densenet121", "densenet169", "efficientnet_b2", "inception_resnet_v2", "vit_small_patch16_224")
# Inputs smaller than this fail inside the network (inception's stem shrinks 64² below its 3×3 kernels).
MIN_IMAGE_SIZE = {"inception_resnet_v2": 75}

LayerMap = tuple[int, Callable[[str], int]]
"""(number of blocks L, parameter name → 0 for embeddings, i + 1 for block i, L + 1 for what follows)."""


class UnknownModelFactoryError(SpcxrError, KeyError):
    def __str__(self):
        return self.args[0]


@dataclass(frozen=True)
class ModelFactory:
    """A named way to build a task model (`--backbone NAME`).

    Args:
        name: `--backbone NAME`.
        build: `build(task, init, *, config, image_size, drop_path_rate)` → a `PreTrainedModel` with the task's head.
        default_init: `--init` when none is given.
        segmentation: whether it can build segmentation models.
        layers: `layers(model)` → `LayerMap` for layer-wise lr decay, or None for one learning rate.
        description: one line for `spcxr plugins`.
        min_image_size: smallest input the network takes.
    """

    name: str
    build: Callable
    default_init: str = SCRATCH
    segmentation: bool = False
    layers: Callable | None = None
    description: str = ""
    min_image_size: int = 0

    def check(self, task: Task, image_size: int | None = None) -> None:
        """Raises UsageError when this factory cannot serve `task` (at `image_size`)."""
        if task.kind == SEGMENTATION and not self.segmentation:
            raise UsageError(
                f"backbone {self.name!r} cannot fine-tune segmentation task {task.name!r}: the UNETR decoder needs a "
                "ViT token grid; use --backbone spcxr (a timm/DeiT ViT checkpoint converts with `spcxr convert`)")
        if image_size is not None and image_size < self.min_image_size:
            raise UsageError(f"{self.name} needs --image-size {self.min_image_size} or more, got {image_size}")

    def __call__(self, task: Task, init: str, **kwargs):
        self.check(task)
        return self.build(task, init, **kwargs)


# --- SS-CXR -------------------------------------------------------------------------------------------------------


def label_fields(task: Task) -> dict:
    """The task's labels (and problem type) as transformers config fields, for a head of any architecture."""
    fields = {"id2label": task.id2label, "label2id": {label: i for i, label in task.id2label.items()}}
    if task.kind == MULTI_LABEL:
        fields["problem_type"] = "multi_label_classification"
    elif task.kind == SINGLE_LABEL:
        fields["problem_type"] = "single_label_classification"
    return fields


def build_spcxr(task: Task, init: str, *, config: str = "vit-s", image_size: int | None = None,
                drop_path_rate: float = 0.0):
    """SS-CXR's head on its ViT: `init` is a model directory or Hub id (backbone weights loaded, head new), or
    `scratch` (a fresh `config` preset)."""
    from ..models.spcxr.modeling_spcxr import SpcxrForImageClassification, SpcxrForSemanticSegmentation

    head = SpcxrForSemanticSegmentation if task.kind == SEGMENTATION else SpcxrForImageClassification
    fields = {**label_fields(task), "drop_path_rate": drop_path_rate}
    if init == SCRATCH:
        if image_size:
            fields["image_size"] = image_size
        return head(preset_config(config, **fields))
    return head.from_pretrained(init, **fields)


def layer_id(name: str, num_layers: int) -> int:
    """0 for SS-CXR's embeddings, i + 1 for block i, num_layers + 1 for everything after the ViT."""
    if name.startswith("spcxr.embeddings"):
        return 0
    if name.startswith("spcxr.layers."):
        return int(name.split(".")[2]) + 1
    return num_layers + 1


def spcxr_layers(model) -> LayerMap:
    num_layers = model.config.num_hidden_layers
    return num_layers, lambda name: layer_id(name, num_layers)


# --- timm ---------------------------------------------------------------------------------------------------------


def timm_weights(init: str) -> dict:
    """The state dict of local weights for a timm model: the checkpoint at `init` (nothing downloaded, nothing
    unpickled), unwrapped from `{"state_dict": …}`-style training checkpoints, without the `module.` (DDP) and
    `timm_model.` (a saved TimmWrapper) prefixes."""
    from ..hub.convert import CheckpointError, read_checkpoint

    try:
        state = read_checkpoint(init)
    except CheckpointError as error:
        raise UsageError(f"--init {error}; timm backbones take 'scratch' or local weights (.safetensors, .pth, .bin, "
                         "or a folder holding them), nothing is downloaded") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    cleaned = {}
    for key, value in state.items():
        for prefix in ("module.", "timm_model."):
            key = key.removeprefix(prefix)
        cleaned[key] = value
    return cleaned


class TimmLoadLog(logging.Handler):
    """Collects the keys timm's `load_pretrained` reports as missing: with a new classifier it loads non-strictly,
    so weights of another architecture would otherwise leave the model silently random."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.missing_keys: list[str] = []
        self.logger = logging.getLogger("timm.models._builder")

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Missing keys (") and ") discovered" in message:
            self.missing_keys += message[len("Missing keys ("):message.index(") discovered")].split(", ")

    def __enter__(self):
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)


def create_timm_model(architecture: str, num_classes: int, model_args: dict, **kwargs):
    """`timm.create_model`, dropping the optional arguments an architecture does not take (DenseNet has no
    `drop_path_rate`, CNNs no `img_size`). Returns the model and the arguments it was built with."""
    import timm

    args = dict(model_args)
    while True:
        try:
            return timm.create_model(architecture, num_classes=num_classes, **args, **kwargs), args
        except TypeError as error:
            rejected = [name for name in ("drop_path_rate", "img_size") if name in args and f"'{name}'" in str(error)]
            if not rejected:
                raise
            for name in rejected:
                del args[name]


def build_timm(architecture: str, task: Task, init: str, *, config: str = "vit-s", image_size: int | None = None,
               drop_path_rate: float = 0.0):
    """A timm architecture with `in_chans=1` and the task's classifier, wrapped in `TimmWrapperForImageClassification`.

    The wrapper re-initialises every weight it creates with N(0, 0.02); the timm model built here (timm's own
    initialisation, or the given weights) replaces the wrapper's, so random baselines start as timm starts them."""
    import torch
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    size = image_size or task.defaults.image_size
    if size < MIN_IMAGE_SIZE.get(architecture, 0):
        raise UsageError(f"timm:{architecture} needs --image-size {MIN_IMAGE_SIZE[architecture]} or more, got {size}")
    pretrained = {}
    if init != SCRATCH:
        weights = timm_weights(init)
        pretrained = {"pretrained": True, "pretrained_cfg_overlay": {"state_dict": weights}}
    args = {"in_chans": 1, "drop_path_rate": drop_path_rate, "img_size": size}
    if not pretrained:
        timm_model, model_args = create_timm_model(architecture, len(task.labels), args)
    else:
        with TimmLoadLog() as log:
            try:
                timm_model, model_args = create_timm_model(architecture, len(task.labels), args, **pretrained)
            except RuntimeError as error:  # shape mismatches
                first = " ".join(str(error).split())[:300]
                raise UsageError(f"--init {init}: the weights do not fit timm:{architecture} ({first})") from None
        classifiers = timm_model.pretrained_cfg.get("classifier") or ()
        classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
        missing = [key for key in log.missing_keys if not key.startswith(tuple(f"{c}." for c in classifiers))]
        if missing:
            raise UsageError(f"--init {init}: {len(missing)} tensors of timm:{architecture} are not in the weights "
                             f"(e.g. {', '.join(missing[:3])}); is it a checkpoint of another architecture?")
    wrapper_config = TimmWrapperConfig(architecture=architecture, model_args=model_args, image_size=size,
                                       num_channels=1, **label_fields(task))
    with torch.device("meta"):  # the wrapper's own timm model is discarded: do not spend time initialising it
        model = TimmWrapperForImageClassification(wrapper_config)
    model.timm_model = timm_model
    return model


def timm_layers(model) -> LayerMap | None:
    """ViT-style names (`patch_embed`, `cls_token`, `pos_embed`, `blocks.N`) get layer-wise decay; CNNs one group."""
    inner = model.timm_model
    if not (hasattr(inner, "blocks") and hasattr(inner, "patch_embed")):
        return None
    num_layers = len(inner.blocks)

    def layer_of(name: str) -> int:
        name = name.removeprefix("timm_model.")
        if name.startswith(("cls_token", "pos_embed", "reg_token", "dist_token", "patch_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return num_layers + 1

    return num_layers, layer_of


def timm_factory(architecture: str) -> ModelFactory:
    def build(task, init, **kwargs):
        return build_timm(architecture, task, init, **kwargs)

    return ModelFactory(name=f"{TIMM_PREFIX}{architecture}", build=build, layers=timm_layers,
                    description=f"timm {architecture}, 1 input channel, in transformers' TimmWrapper",
                    min_image_size=MIN_IMAGE_SIZE.get(architecture, 0))


BUILTIN: dict[str, ModelFactory] = {
    "spcxr": ModelFactory(name="spcxr", build=build_spcxr, default_init="spcxr/vit-s", segmentation=True,
                      layers=spcxr_layers, description="SS-CXR ViT (GMML-pretrained or from scratch)"),
    **{f"{TIMM_PREFIX}{arch}": timm_factory(arch) for arch in TIMM_BASELINES},
}


@hookimpl
def register_backbones(register):
    for name, factory in BUILTIN.items():
        register(name, factory)


# --- resolution ---------------------------------------------------------------------------------------------------


def available_model_factories(registry=None) -> dict[str, Callable]:
    """Registered factories (plugins, the built-in one included) over the built-ins, which stay available when
    `SPCXR_LOAD_PLUGINS` leaves this plugin out."""
    if registry is None:
        from ..plugins.registry import get_registry

        registry = get_registry()
    return {**BUILTIN, **registry.backbones}


def get_model_factory(name: str, registry=None) -> ModelFactory:
    """The factory registered as `--backbone name`; `timm:<architecture>` works for any architecture timm knows."""
    table = available_model_factories(registry)
    if name in table:
        found = table[name]
        return found if isinstance(found, ModelFactory) else ModelFactory(name=name, build=found)
    if name.startswith(TIMM_PREFIX):
        import timm

        if timm.is_model(name[len(TIMM_PREFIX):]):
            return timm_factory(name[len(TIMM_PREFIX):])
    known = ", ".join(sorted(table))
    raise UnknownModelFactoryError(
        f"unknown backbone {name!r}; known backbones: {known} (or timm:<any timm architecture>)")


def build_model(task: Task, init: str | None = None, *, config: str = "vit-s", image_size: int | None = None,
                drop_path_rate: float = 0.0, backbone: str = "spcxr"):
    """The task's model from the factory named `backbone`; `init` None is the factory's default."""
    factory = get_model_factory(backbone)
    return factory(task, init or factory.default_init, config=config, image_size=image_size,
                   drop_path_rate=drop_path_rate)
