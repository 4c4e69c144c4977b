"""The options of GMML pretraining, declared once: `PretrainOptions` is a run's settings and, field by field, the
options of the one typer command that `spcxr pretrain`, `python pretrain.py` and `accelerate launch …` all run
(`typer_options` turns the fields into the command's parameters).

Light on purpose (standard library and typer only): the `spcxr` command line builds its commands at start-up.
"""

import copy
import dataclasses
import functools
import inspect
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Annotated, Literal

import typer
from typer.core import TyperCommand

from .presets import CONFIG_PRESETS
from .schedules import BASE_LR, RECIPE_EPOCHS, RECIPE_WARMUP_EPOCHS

# Output names the help mentions (the pretraining program writes them).
UNREADABLE_LOG = "unreadable_images.log"
BACKBONE_DIR = "backbone"


def _number(convert, minimum, kind: str):
    """A typer `parser` for numbers >= `minimum` whose messages name the rule: 'must be a positive integer, got 0'."""

    def parse(text) -> int | float:
        try:
            value = convert(text)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"expected a {kind}, got {text!r}") from None
        if value < minimum or not math.isfinite(value):
            raise typer.BadParameter(f"must be a {kind}, got {text}")
        return value

    return parse


POSITIVE = _number(int, 1, "positive integer")
NON_NEGATIVE = _number(int, 0, "non-negative integer")
NON_NEGATIVE_NUMBER = _number(float, 0.0, "finite number >= 0")


def _one_of(values: tuple[str, ...]):
    """The parser of a `Literal` field, with the message the other options have (typer's prefixes 'Value error')."""

    def parse(text: str) -> str:
        if text not in values:
            raise typer.BadParameter(f"must be one of {', '.join(values)}; got {text!r}")
        return text

    return parse


def _default_max_pixels() -> int:
    from ..models.spcxr.imaging import DEFAULT_MAX_PIXELS  # numpy and Pillow: only when a run needs the value

    return DEFAULT_MAX_PIXELS


def option(default=dataclasses.MISSING, help: str = "", *, panel: str, factory=None, **typer_settings):
    """A field of `PretrainOptions` and, in its metadata, the typer option (`--field-name`) it is on the command
    line; a field without a default is a required option."""
    metadata = {"option": typer.Option(help=help, rich_help_panel=panel, **typer_settings)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


DATA, MODEL, AUGMENTATION, OPTIMISATION, RUN = ("data", "model and corruption", "augmentation",
                                                 "optimisation (defaults: the GMML recipe)", "run")


@dataclass(kw_only=True)
class PretrainOptions:
    """One pretraining run. Checked as a whole when made (`UsageError` for a contradiction)."""

    # data
    data: str = option(help="A folder of images (searched recursively: PNG, JPEG, 16-bit PNG, DICOM…), a Hugging "
                       "Face dataset id, or 'synthetic' (phantom radiographs, for demos and tests).", panel=DATA)
    image_column: str | None = option(None, "Image column of a Hub dataset (default: the first Image feature).",
                                      panel=DATA)
    split: str = option("train", "Split of a Hub dataset.", panel=DATA)
    streaming: bool = option(False, "Stream a Hub dataset instead of downloading it (for datasets larger than the "
                             "disk); needs --max-steps.", panel=DATA)
    shuffle_buffer: int = option(10_000, "Shuffle buffer of --streaming.", panel=DATA, parser=POSITIVE)
    synthetic_size: int = option(256, "Number of phantom images of --data synthetic.", panel=DATA, parser=POSITIVE)
    max_pixels: int = option(help="Images with more pixels are treated as unreadable (decompression-bomb guard; "
                             "default: the image loader's, imaging.DEFAULT_MAX_PIXELS).", panel=DATA, parser=POSITIVE,
                             factory=_default_max_pixels, show_default=False)
    num_workers: int = option(min(4, os.cpu_count() or 1), "Data-loading worker processes per process.", panel=DATA,
                              parser=NON_NEGATIVE, show_default="min(4, CPUs)")
    strict: bool = option(False, "Stop at the first unreadable image instead of skipping it (skipped ones are listed "
                          f"in OUTPUT_DIR/{UNREADABLE_LOG}).", panel=DATA)
    # model and corruption
    config: str = option("vit-s", f"Model config: a preset ({', '.join(CONFIG_PRESETS)}; vit-s = ViT-S/16) or a JSON "
                         "file / folder with config.json of an SpcxrConfig.", panel=MODEL)
    image_size: int | None = option(None, "Training resolution (default: the config's, 224).", panel=MODEL,
                                    parser=POSITIVE)
    mask_ratio: float | None = option(None, "p: corrupted-area fraction per image ~ U(min(0.5, p), p) (default: "
                                      "the config's, 0.75).", panel=MODEL)
    mask_fill: Literal["noise", "zeros"] | None = option(None, "Fill of the corrupted rectangles: N(0, 1) noise (GMML) "
                                                         "or zeros (SiT); default: the config's.", panel=MODEL)
    paste_prob: float = option(0.5, "Probability per image of pasting rectangles from another image of the batch "
                               "instead (GMML's 0.5).", panel=MODEL)
    align_to_patches: bool = option(False, "Snap the corruption rectangles to the patch grid (default: "
                                    "pixel-aligned, as GMML).", panel=MODEL)
    # augmentation
    crop_scale: tuple[float, float] = option((0.35, 1.0), "Area range of the random resized crop.",
                                             panel=AUGMENTATION, metavar="MIN MAX")
    hflip: bool = option(False, "Random horizontal flips (off by default: the heart is on the patient's left in a "
                         "CXR).", panel=AUGMENTATION)
    # optimisation
    epochs: int = option(RECIPE_EPOCHS, "Passes over the data; --max-steps overrides.", panel=OPTIMISATION,
                         parser=POSITIVE)
    max_steps: int | None = option(None, "Optimizer steps in all (overrides --epochs).", panel=OPTIMISATION,
                                   parser=POSITIVE)
    batch_size: int = option(64, "Images per device and micro-batch.", panel=OPTIMISATION, parser=POSITIVE)
    grad_accum: int = option(1, "Gradient accumulation micro-batches.", panel=OPTIMISATION, parser=POSITIVE)
    lr: float | None = option(None, "Peak learning rate (default: --base-lr × global batch / 256).",
                              panel=OPTIMISATION, parser=NON_NEGATIVE_NUMBER)
    base_lr: float = option(BASE_LR, "Learning rate per 256 images of global batch.", panel=OPTIMISATION,
                            parser=NON_NEGATIVE_NUMBER)
    min_lr: float = option(1e-6, "End of the cosine.", panel=OPTIMISATION, parser=NON_NEGATIVE_NUMBER)
    warmup_epochs: float = option(RECIPE_WARMUP_EPOCHS, "Linear warm-up in epochs; --warmup-steps overrides.",
                                  panel=OPTIMISATION, parser=NON_NEGATIVE_NUMBER)
    warmup_steps: int | None = option(None, "Linear warm-up in optimizer steps.", panel=OPTIMISATION,
                                      parser=NON_NEGATIVE)
    weight_decay: float = option(0.04, "Weight decay at the start.", panel=OPTIMISATION, parser=NON_NEGATIVE_NUMBER)
    weight_decay_end: float = option(0.4, "Weight decay at the end (cosine schedule).", panel=OPTIMISATION,
                                     parser=NON_NEGATIVE_NUMBER)
    clip_grad: float = option(3.0, "Gradient-norm clipping, 0 disables.", panel=OPTIMISATION,
                              parser=NON_NEGATIVE_NUMBER)
    seed: int = option(0, "Seed of everything random.", panel=OPTIMISATION, parser=NON_NEGATIVE)
    mixed_precision: Literal["no", "fp16", "bf16"] | None = option(
        None, "Override accelerate's setting (default: from `accelerate config` / launch flags).", panel=OPTIMISATION)
    # run
    output_dir: str = option(help="Where checkpoints, logs, previews and the backbone "
                             f"(OUTPUT_DIR/{BACKBONE_DIR}) go.", panel=RUN)
    overwrite: bool = option(False, "Reuse a non-empty --output-dir, deleting this program's previous outputs "
                             "there.", panel=RUN)
    resume: str | None = option(None, "Continue from a checkpoint: 'latest' (the newest in OUTPUT_DIR; what --resume "
                                "alone means), a checkpoint folder or another run's output folder.", panel=RUN)
    checkpoint_every: int = option(1000, "Save a resumable checkpoint every N optimizer steps and at the end "
                                   "(0: never).", panel=RUN, parser=NON_NEGATIVE)
    keep_checkpoints: int = option(2, "Checkpoints kept (the newest).", panel=RUN, parser=POSITIVE)
    preview_every: int = option(1000, "Write a reconstruction preview PNG every N steps (0: only at the end).",
                                panel=RUN, parser=NON_NEGATIVE)
    preview_images: int = option(4, "Images in a preview.", panel=RUN, parser=POSITIVE)
    log_every: int = option(10, "Log loss, lr, weight decay and img/s every N steps.", panel=RUN, parser=POSITIVE)
    report_to: str = option("tensorboard", "Accelerate tracker(s), comma-separated (tensorboard, wandb, …) or "
                            "'none'.", panel=RUN)

    def __post_init__(self):
        from ..errors import UsageError

        self.crop_scale = tuple(self.crop_scale)
        if self.resume is not None and self.overwrite:
            raise UsageError("--resume and --overwrite exclude each other (resume continues the run in --output-dir)")
        if self.streaming and self.max_steps is None:
            raise UsageError("--streaming needs --max-steps (a stream has no known length to count epochs in)")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise UsageError(f"--crop-scale must satisfy 0 < MIN <= MAX <= 1, got {low} {high}")
        if not 0 <= self.paste_prob <= 1:
            raise UsageError(f"--paste-prob must be in [0, 1], got {self.paste_prob}")
        if not self.trackers and self.trackers is not None:
            raise UsageError("--report-to needs a tracker name or 'none'")

    @property
    def trackers(self) -> list[str] | None:
        """The trackers of --report-to; None for 'none'."""
        names = [name.strip() for name in self.report_to.split(",") if name.strip()]
        return None if names == ["none"] else names


def typer_options(command):
    """`command(options: PretrainOptions)` as a typer command function: one `--field-name` option per field."""
    hints = typing.get_type_hints(PretrainOptions)
    parameters = []
    for f in dataclasses.fields(PretrainOptions):
        info = copy.copy(f.metadata["option"])
        info.param_decls = (f"--{f.name.replace('_', '-')}",)  # bools: a flag alone, as before (no --no-…)
        choices = [a for a in typing.get_args(hints[f.name]) if typing.get_origin(a) is Literal]
        if choices:
            info.parser = _one_of(typing.get_args(choices[0]))
        default = inspect.Parameter.empty
        if f.default_factory is not dataclasses.MISSING:
            info.default_factory = f.default_factory
        elif f.default is not dataclasses.MISSING:
            default = f.default
        parameters.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=Annotated[hints[f.name], info]))

    @functools.wraps(command)
    def from_options(**values):
        return command(PretrainOptions(**values))

    from_options.__signature__ = inspect.Signature(parameters)
    from_options.__annotations__ = {}
    return from_options


class PretrainCommand(TyperCommand):
    """The command's parsing: a bad value is one line naming the option (exit status 2), whichever program runs it
    (under `accelerate launch` every process reports, and a framed usage block per process would bury the reason);
    `--resume` alone means `--resume latest`, as it always has (typer has no option with an optional value)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        given = []
        for i, arg in enumerate(args):
            given.append(arg)
            if arg == "--resume" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                given.append("latest")
        try:
            return super().parse_args(ctx, given)
        except typer.TyperException as error:  # click's usage errors (exit status 2): unknown option, bad value…
            typer.echo(f"error: {error.format_message()} (see {ctx.command_path} --help)", err=True)
            raise typer.Exit(error.exit_code) from None
