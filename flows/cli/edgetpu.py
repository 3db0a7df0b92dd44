"""`edgecompress check-edgetpu`: the offline preflight of any .tflite (and the compiler's verdict when installed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.app import app, checked
from flows.cli.tables import print_preflight


@app.command("check-edgetpu")
def check_edgetpu(
    model: Annotated[Path, typer.Argument(help="A .tflite file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    min_runtime_version: Annotated[int, typer.Option(help="The oldest Edge TPU runtime to support.")] = 14,
    multiple_subgraphs: Annotated[bool, typer.Option("-a", help="Allow several Edge TPU subgraphs.")] = False,
    compiler: Annotated[str | None, typer.Option(help="edgetpu_compiler to run (default: PATH).")] = None,
) -> None:
    """Predict, without the compiler, how a model maps to the Edge TPU; compile it too when possible.

    A model that cannot run on the Edge TPU at all (not quantized) is a verdict, reported with exit
    status 0; only a file that is not a readable .tflite is an error.
    """
    from tasks.stages.edgetpu import check_model, check_report

    predicted, compiled, found = checked(lambda: check_model(model, min_runtime_version, multiple_subgraphs, compiler))
    if as_json:
        typer.echo(json.dumps(check_report(predicted, compiled), indent=2, default=str))
        return
    print_preflight(model, predicted, compiled, found)
