"""The errors a user can cause. The CLI reports each as one line on stderr with exit status 2; any other exception
is a bug: exit status 1, with the traceback behind `SPCXR_DEBUG=1` (see `cli.readable_errors`)."""

import re

DEBUG_ENV = "SPCXR_DEBUG"


class SpcxrError(Exception):
    """Bad input: an option, a file, a folder, a dataset or a model that is not what the command expects. The message
    is the whole report, so it names the option, file or field and what was expected."""


class UsageError(SpcxrError, ValueError):
    """An option or argument value that cannot work."""


class InputNotFoundError(SpcxrError, FileNotFoundError):
    """A file or folder the command was pointed at is not there."""


class OutputExistsError(SpcxrError, FileExistsError):
    """The output folder already holds something the command will not overwrite unasked."""


def one_line(error: BaseException) -> str:
    """The message of `error` as one line: its informative last line (strict-dataclass and worker errors span
    several), without a leading "SomeError: ", and a KeyError's message without the quotes KeyError adds."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[-1] if lines else type(error).__name__
    return re.sub(r"^[\w.]*(Error|Exception): ", "", line)


def internal_error_line(error: BaseException) -> str:
    """What a command prints for an exception that is not a user error: it is a bug, and says so."""
    return (f"internal error: {type(error).__name__}: {one_line(error)} (a bug in spcxr-hub, not in your input; "
            f"run again with {DEBUG_ENV}=1 for the traceback)")
