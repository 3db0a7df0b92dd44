"""`edgecompress sweep`: a grid of compression settings on Dask, answered with the Pareto front."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows import launch
from flows.cli.app import ProjectOption, app, checked, gated
from flows.cli.tables import print_sweep


@app.command()
def sweep(
    set_: Annotated[
        list[str] | None,
        typer.Option("--set-param", "-S", help="A grid axis, e.g. -S prune.final_sparsity=0.5,0.75,0.9 (repeatable)."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Local Dask worker processes.", min=1, max=64)] = 2,
    dask_address: Annotated[
        str | None, typer.Option(help="An existing Dask scheduler, e.g. tcp://HOST:8786 (instead of local workers).")
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Write the best trial that passes the gate into params.yaml.")
    ] = False,
    project: ProjectOption = Path("."),
) -> None:
    """Search compression settings: train once, run every grid point on Dask, answer with the Pareto front."""
    from tasks.layout import check_project
    from tasks.search import sweep as search

    root = project.resolve()

    def check() -> tuple[dict[str, list[Any]], int]:
        check_project(root)
        grid = search.parse_grid(list(set_ or []))
        trials = search.expand(root / "params.yaml", grid)  # every grid point valid before any starts
        if dask_address:
            launch.check_dask(dask_address)
        return grid, len(trials)

    grid, count = checked(check)
    typer.echo(f"{count} trials on " + (dask_address or f"{workers} local Dask worker(s)"))
    report = gated(root, lambda: launch.sweep(root, grid, workers, dask_address, apply))
    print_sweep(report, root)
