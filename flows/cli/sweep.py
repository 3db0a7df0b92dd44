"""`edgecompress sweep`: a grid or a study over float and compression settings on Dask, under constraints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows import launch
from flows.cli.app import ProjectOption, app, checked, gated
from flows.cli.tables import print_sweep


@app.command()
def sweep(
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set-param",
            "-S",
            help="An axis: values (-S train.alpha=0.35,0.5,0.75) or, for a sampler, a range "
            "(-S prune.final_sparsity=0.5:0.9; integers give integers). Repeatable.",
        ),
    ] = None,
    search: Annotated[
        str, typer.Option(help="grid (every point of the value lists), random or optuna (--trials points).")
    ] = "grid",
    trials: Annotated[
        int | None, typer.Option(min=1, max=10_000, help="random, optuna: points to run in this sweep.")
    ] = None,
    objective: Annotated[
        str, typer.Option(help="random, optuna: what goes down as accuracy goes up: param-bytes or latency.")
    ] = "param-bytes",
    study: Annotated[
        str | None, typer.Option(help="random, optuna: the study's name; an existing one is continued.")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="random, optuna: the study's database URL (default EDGECOMPRESS_OPTUNA_STORAGE, else optuna.db)."
        ),
    ] = None,
    max_param_bytes: Annotated[
        int | None, typer.Option(min=1, help="Constraint: int8 parameter bytes (dense; what the device holds).")
    ] = None,
    max_latency_ms: Annotated[
        float | None,
        typer.Option(min=0.0, help="Constraint: ms of the slower CPU kernel set (XNNPACK, built-in), 1 thread."),
    ] = None,
    max_off_chip_bytes: Annotated[
        int | None, typer.Option(min=0, help="Constraint: Edge TPU parameter bytes streamed from host memory.")
    ] = None,
    min_mapped_fraction: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Constraint: share of operators on the Edge TPU.")
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Local Dask worker processes; with a sampler, points run at a time.", min=1, max=64)
    ] = 2,
    dask_address: Annotated[
        str | None, typer.Option(help="An existing Dask scheduler, e.g. tcp://HOST:8786 (instead of local workers).")
    ] = None,
    apply: Annotated[
        bool,
        typer.Option("--apply", help="Write the best trial's settings (train.* and data.* included) into params.yaml."),
    ] = False,
    project: ProjectOption = Path("."),
) -> None:
    """Search model and compression settings: float models trained once each, trials on Dask, best under constraints."""
    from tasks.search import sweep as searching

    root = project.resolve()
    constraints = searching.Constraints(max_off_chip_bytes, min_mapped_fraction, max_latency_ms, max_param_bytes)
    request, count, notes = checked(
        lambda: launch.check_sweep(
            root, list(set_ or []), search, trials, objective, study, storage, constraints, workers, apply, dask_address
        )
    )
    for note in notes:
        typer.echo(f"note: {note}")
    where = dask_address or f"{workers} local Dask worker(s)"
    typer.echo(f"{count} trials ({request.method}) on {where}; constraints: {constraints.describe()}")
    report = gated(root, lambda: launch.sweep(root, request, workers, dask_address))
    print_sweep(report, root)
