"""The `spcxr` application and what its commands share: one-line errors, the plugin registry, common options.

Every command prints one readable line and exits with status 2 on bad input (set SPCXR_DEBUG=1 for the traceback).
Heavy libraries (accelerate, datasets, evaluate, matplotlib, timm) are imported inside the commands that need them,
so `spcxr predict` starts fast.
"""

import functools
import json
import os
import sys
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SS-CXR: a self-supervised foundation model for chest radiographs, with task plugins.")

EXIT_BAD_INPUT = 2
EXIT_BUG = 1


@app.callback()
def quiet_libraries():
    """Library chatter (weight-loading bars, backend notices) would drown the one line a command prints. Set through
    the environment so that commands which never load transformers (a fast `predict`) do not pay for importing it."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def warn(line: str) -> None:
    typer.echo(line, err=True)


def readable_errors(command):
    """Errors a user can cause become one line on stderr and exit status 2; any other exception is a bug: one line
    saying so and exit status 1, its traceback shown with SPCXR_DEBUG=1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from ..errors import DEBUG_ENV, SpcxrError, internal_error_line, one_line
        from ..models.spcxr.imaging import ImageDecodeError  # Hub remote code: it cannot import errors.py, so it is named here

        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except (SpcxrError, ImageDecodeError) as error:
            if os.environ.get(DEBUG_ENV):
                raise
            fail(one_line(error))
        except Exception as error:
            if os.environ.get(DEBUG_ENV):
                raise
            typer.echo(internal_error_line(error), err=True)
            raise typer.Exit(EXIT_BUG) from None

    return wrapper


def registry():
    from ..plugins.registry import get_registry

    loaded = get_registry()
    for error in loaded.errors:
        typer.echo(f"warning: {error}", err=True)
    return loaded


def load_task(name: str):
    return registry().task(name)


# Where inference runs (spcxr_hub.inference.devices.resolve_device): predict, evaluate and embed.
DeviceOption = Annotated[str, typer.Option(help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps.")]
# Subgroup results in metrics.json (spcxr_hub.evaluation.subgroups): evaluate, finetune and reproduce.
GroupByOption = Annotated[str | None, typer.Option(help="Report metrics per group of these attributes, comma-separated: "
                                                        "sex, age, view, site (from the dataset, DICOM tags or --metadata).")]
MetadataOption = Annotated[str | None, typer.Option(help="CSV of attributes by file: a 'file' column (names or relative "
                                                         "paths) and sex/age/view/site columns; overrides the others.")]


@app.command("plugins")
@readable_errors
def plugins_command(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False):
    """List the installed plugins with their distribution, version, tasks and backbones."""
    loaded = registry()
    rows = [
        {"name": info.name, "distribution": info.distribution, "version": info.version, "tasks": info.tasks,
         "backbones": info.backbones, "errors": info.errors}
        for info in sorted(loaded.plugins.values(), key=lambda info: info.name)
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no plugins loaded (SPCXR_LOAD_PLUGINS may be limiting them)")
    for row in rows:
        provided = ", ".join(row["tasks"] + [f"backbone:{b}" for b in row["backbones"]]) or "-"
        status = "  [error]" if row["errors"] else ""
        typer.echo(f"{row['name']:<14} {row['distribution']} {row['version']:<8} {provided}{status}")


