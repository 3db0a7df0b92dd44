"""`edgecompress run | retrain | serve | stage`: the pipeline, now, on a schedule, or one stage for `dvc repro`."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from flows import launch
from flows.cli.app import ProjectOption, app, checked, fail, gated
from flows.cli.tables import print_report


def _process_started() -> float:
    return time.time() - launch.process_age()


@app.command()
def run(
    project: ProjectOption = Path("."),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set-param", "-S", help="Override a param, e.g. -S prune.final_sparsity=0.6 (repeatable)."),
    ] = None,
) -> None:
    """Run the compression flow under Prefect: the stages, the gate, registration."""
    from tasks.layout import check_project
    from tasks.params import Params, check_overrides
    from tasks.stages.models import check_paths
    from tasks.stages.prepare import check_source
    from tasks.stages.prune import check_prunable

    root = project.resolve()
    overrides = list(set_ or [])

    def check() -> Params:
        check_project(root)
        params = check_overrides(root / "params.yaml", overrides)  # bad input stops here, nothing written
        check_paths(params.train, root)
        check_source(params.data)
        check_prunable(params, root)  # a layer channel pruning cannot follow, before anything trains
        return params

    params = checked(check)
    started = _process_started()
    report = gated(root, lambda: launch.compress(root, overrides, params.retrain.wait_s, started))
    print_report(report, process_started=started, finished=time.time())


@app.command()
def retrain(project: ProjectOption = Path(".")) -> None:
    """One scheduled-style retrain: skipped in seconds when nothing changed; else run, gate, register, push."""
    from tasks.layout import check_project

    root = project.resolve()
    checked(lambda: check_project(root))
    started = _process_started()
    result = gated(root, lambda: launch.retrain(root, started))
    if result.skipped:
        from flows.compress import SKIPPED

        recorded = "" if result.recorded else " (not recorded in Prefect: no server configured)"
        typer.echo(f"{SKIPPED}: DVC reports every stage up to date and no setting changed since the last run{recorded}")
        return
    typer.echo("changed: " + "; ".join(f"{stage} ({reason})" for stage, reason in result.changes.items()))
    assert result.run is not None  # not skipped
    print_report(result.run, process_started=started, finished=time.time())
    if result.pushed is not None:
        typer.echo(f"dvc push: {result.pushed} file(s) sent to the default remote")


@app.command()
def serve(
    cron: Annotated[str | None, typer.Option(help="Cron schedule (default: retrain.cron in params.yaml).")] = None,
    interval: Annotated[
        float | None, typer.Option(help="Run every N seconds instead of on a cron schedule.", min=1)
    ] = None,
    project: ProjectOption = Path("."),
) -> None:
    """Serve the retrain flow on a schedule with Prefect (Ctrl-C stops it)."""
    from tasks.layout import check_project
    from tasks.params import check_cron, load_params

    root = project.resolve()

    def schedule() -> dict[str, Any]:
        check_project(root)
        params = load_params(root / "params.yaml")
        return {"interval": interval} if interval else {"cron": check_cron(cron or params.retrain.cron)}

    when = checked(schedule)

    def announce(ui: str, run_now: str) -> None:
        typer.echo(f"serving retrain of {root} on {when}; Prefect UI: {ui}; Ctrl-C stops")
        typer.echo(f"to run it now, from any shell: {run_now}")

    gated(root, lambda: launch.serve(root, when, announce))


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="prepare | train | prune | cluster | quantize | evaluate | edgetpu")],
    project: ProjectOption = Path("."),
) -> None:
    """Run one stage without Prefect or DVC bookkeeping (what `dvc repro` calls)."""
    from tasks.stages import STAGES

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if name not in STAGES:
        fail(f"unknown stage {name!r} (stages: {', '.join(STAGES)})")
    root = project.resolve()
    checked(lambda: launch.stage(root, name))
