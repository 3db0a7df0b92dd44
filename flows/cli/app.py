"""The typer app every command module adds itself to, and what all commands share: options and failing."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer

T = TypeVar("T")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Keep a TensorFlow model small, fast and accurate on a Coral Edge TPU.",
)

ProjectOption = Annotated[
    Path, typer.Option("--project", "-p", help="Project folder (holds params.yaml and dvc.yaml).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def fail(message: str) -> NoReturn:
    """One line on stderr and exit status 1, without the interpreter's teardown.

    Everything that matters is closed by then (the MLflow run, Prefect's queues, the server this
    process started). The teardown itself is skipped because a native library can crash in it
    after a failure: h5py's file-object driver, once it failed to open a file, calls back into an
    interpreter that is gone and takes the exit status with it (a segfault instead of 1). What the
    teardown would have removed (TensorFlow's AutoGraph modules, among them) is in the command's own
    temporary folder, removed here.
    """
    import os

    from tasks.bookkeeping.scratch import remove_own_tmp
    from tasks.errors import bounded

    # One line, of a length a terminal shows: a message that quotes a huge value keeps its two ends.
    typer.secho(f"error: {bounded(' '.join(message.split()))}", fg=typer.colors.RED, err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    remove_own_tmp()
    os._exit(1)


def checked(call: Callable[[], T]) -> T:
    """The call's result, or its EdgecompressError (or a full disk) as one line and exit status 1."""
    from tasks.errors import EdgecompressError, no_room, no_room_error

    try:
        return call()
    except EdgecompressError as error:
        fail(str(error))
    except OSError as error:
        if not no_room(error):
            raise
        fail(str(no_room_error(error)))


def gated(root: Path, call: Callable[[], T]) -> T:
    """The call's result; its expected error as one line and exit status 1 (a failed gate's tables first)."""
    from flows.cli.tables import print_gate, print_variants
    from tasks.errors import EdgecompressError, no_room, no_room_error
    from tasks.stages.gate import GateFailed

    try:
        return call()
    except EdgecompressError as error:
        if isinstance(error, GateFailed):
            reports = root / "data" / "reports"
            print_variants(json.loads((reports / "metrics.json").read_text()))
            print_gate(json.loads((reports / "gate.json").read_text()))
        fail(str(error))
    except OSError as error:
        if not no_room(error):
            raise
        fail(str(no_room_error(error)))
