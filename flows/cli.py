"""The `edgecompress` command: run the flow, or one stage as dvc.yaml calls it."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from flows.compress import RunReport

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Keep a TensorFlow model small, fast and accurate on a Coral Edge TPU.",
)

ProjectOption = Annotated[
    Path, typer.Option("--project", "-p", help="Project folder (holds params.yaml and dvc.yaml).")
]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _process_age() -> float:
    """Seconds since this process started: start-up cost that no timer inside could see."""
    import psutil

    return time.time() - psutil.Process().create_time()


@app.command()
def run(
    project: ProjectOption = Path("."),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set-param", "-S", help="Override a param, e.g. -S prune.final_sparsity=0.6 (repeatable)."),
    ] = None,
) -> None:
    """Run the compression flow (prepare, train, prune, quantize, evaluate) under Prefect."""
    from tasks.errors import EdgecompressError
    from tasks.fsutil import write_text
    from tasks.params import write_overrides

    root = project.resolve()
    params_file = root / "params.yaml"
    # -S lands in params.yaml only if the run succeeds; a failed run leaves the file as it was.
    original = params_file.read_text() if params_file.is_file() else None
    try:
        write_overrides(params_file, list(set_ or []))
    except EdgecompressError as error:
        _fail(str(error))
    from flows.compress import compress

    # Prefect attaches its handlers to the `tasks` logger (flows/__init__.py) but not a level.
    logging.getLogger("tasks").setLevel(logging.INFO)
    try:
        report = compress(project=str(root))
    except BaseException as error:
        if original is not None and set_:
            write_text(params_file, original)
        if isinstance(error, EdgecompressError):
            _fail(str(error))
        raise
    _print_report(report, process_started=time.time() - _process_age(), finished=time.time())


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="prepare | train | prune | quantize | evaluate")],
    project: ProjectOption = Path("."),
) -> None:
    """Run one stage without Prefect or DVC bookkeeping (what `dvc repro` calls)."""
    from tasks.errors import EdgecompressError
    from tasks.layout import Layout
    from tasks.params import load_params
    from tasks.stages import STAGES

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if name not in STAGES:
        _fail(f"unknown stage {name!r} (stages: {', '.join(STAGES)})")
    layout = Layout(project.resolve())
    try:
        STAGES[name](layout, load_params(layout.params_file))
    except EdgecompressError as error:
        _fail(str(error))


def _print_report(report: RunReport, process_started: float, finished: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    variants = Table(title="variants (test split)")
    for column in ("variant", "accuracy", "size bytes", "gzip bytes"):
        variants.add_column(column, justify="left" if column == "variant" else "right")
    evaluation = report.metrics["evaluate"]
    for name in ("float", "pruned", "float_tflite", "int8_tflite"):
        values = evaluation[name]
        variants.add_row(name, f"{values['accuracy']:.4f}", f"{values['size_bytes']:,}", f"{values['gzip_bytes']:,}")
    console.print(variants)

    timing = Table(title="where the time went")
    for column in ("step", "status", "seconds"):
        timing.add_column(column, justify="right" if column == "seconds" else "left")
    in_stages = 0.0
    for outcome in report.stages:
        timing.add_row(outcome.name, "ran" if outcome.ran else "skipped", f"{outcome.seconds:.1f}")
        in_stages += outcome.seconds
    tracking = report.seconds.get("tracking", 0.0)
    startup = report.started_at - process_started
    orchestration = (finished - report.started_at) - in_stages - tracking
    timing.add_row("tracking (MLflow)", "", f"{tracking:.1f}")
    timing.add_row("orchestration (Prefect, DVC)", "", f"{max(orchestration, 0.0):.1f}")
    timing.add_row("start-up (imports, Prefect server)", "", f"{startup:.1f}")
    timing.add_row("total", "", f"{finished - process_started:.1f}", style="bold")
    console.print(timing)
    console.print(f"MLflow run {report.run_id} in {report.tracking_uri}")


def main() -> None:
    """Entry point of the `edgecompress` script."""
    app()


if __name__ == "__main__":
    main()
