"""The `edgecompress` command: run the flow, or one stage as dvc.yaml calls it."""

from __future__ import annotations

import faulthandler
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar, cast

import typer

if TYPE_CHECKING:
    from flows.compress import RunReport
    from flows.retrain import RetrainReport
    from flows.sweep import SweepReport

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


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit status 1, without the interpreter's teardown.

    Everything that matters is closed by then (the MLflow run, Prefect's queues, the server this
    process started). The teardown itself is skipped because a native library can crash in it
    after a failure: h5py's file-object driver, once it failed to open a file, calls back into an
    interpreter that is gone and takes the exit status with it (a segfault instead of 1).
    """
    import os

    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(1)


def _process_age() -> float:
    """Seconds since this process started: start-up cost that no timer inside could see.

    On Linux from /proc, to the hundredth (the process's start in clock ticks since boot, against
    the uptime); psutil elsewhere, whose start time rests on a boot time rounded to the second.
    """
    import os

    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        import psutil

        return time.time() - psutil.Process().create_time()


def _check_project(root: Path) -> None:
    """A project folder: params.yaml and a DVC repository; checked before anything is written."""
    from tasks.errors import EdgecompressError

    if not (root / "params.yaml").is_file():
        raise EdgecompressError(f"{root / 'params.yaml'}: not found (run from the project folder or pass --project)")
    if not (root / ".dvc").is_dir():
        raise EdgecompressError(
            f"{root}: not a DVC repository; run from the project folder (or `git init && dvc init` a copy)"
        )


@app.command()
def run(
    project: ProjectOption = Path("."),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set-param", "-S", help="Override a param, e.g. -S prune.final_sparsity=0.6 (repeatable)."),
    ] = None,
) -> None:
    """Run the compression flow under Prefect: the stages, the gate, registration."""
    from tasks.data import check_source
    from tasks.errors import EdgecompressError
    from tasks.models import check_paths
    from tasks.params import check_overrides

    root = project.resolve()
    overrides = list(set_ or [])
    try:
        _check_project(root)
        params = check_overrides(root / "params.yaml", overrides)  # bad input stops here, nothing written
        check_paths(params.train, root)
        check_source(params.data)
    except EdgecompressError as error:
        _fail(str(error))
    report = _guarded(root, lambda: _compress(root, overrides, params.retrain.wait_s))
    _print_report(report, process_started=time.time() - _process_age(), finished=time.time())


def _compress(root: Path, overrides: list[str], wait_s: float) -> RunReport:
    """The compress flow with -S overrides in params.yaml for its duration, kept only if it succeeds.

    The project lock is taken before params.yaml is touched, so a second run never rewrites the
    settings of a running one; the original waits in params.yaml.journal, so that a killed run's
    overrides are undone by whatever runs next (tasks/journal.py).
    """
    from tasks import journal
    from tasks.locking import project_lock
    from tasks.params import write_overrides

    with project_lock(root, wait_s):
        write_overrides(root / "params.yaml", overrides, journaled=True)
        try:
            report = _unchanged(root) or _in_prefect(root, lambda: _compress_flow(root), while_starting=_import_stages)
        except BaseException:
            journal.end_overrides(root, keep=False)
            raise
        journal.end_overrides(root, keep=True)
    return report


def _compress_flow(root: Path) -> RunReport:
    from flows.compress import compress

    return cast("RunReport", compress(project=str(root)))


def _unchanged(root: Path) -> RunReport | None:
    """The report of a run with nothing to do, decided before any Prefect server starts; None otherwise.

    With a Prefect server configured the flow itself records such a run (a flow run that ends
    "skipped: no change", about a second of API calls), so this returns None then. The embedded
    server would have to be started just for that, which costs more than all the rest of a run
    with nothing to do, so without one the run is decided here and not recorded in Prefect; the
    MLflow run it stands for and dvc.lock remain the record.
    """
    from flows.compress import RunReport
    from flows.server import configured_api
    from tasks.layout import Layout
    from tasks.params import load_params
    from tasks.pipeline import Plan
    from tasks.tracking import tracking_uri

    layout = Layout(root)
    plan = Plan(layout, load_params(layout.params_file), tracking_uri(root))
    if plan.pending or plan.last is None or configured_api():
        return None
    return RunReport.unchanged(tracking_uri(root), plan.last, time.time() - _process_age(), recorded=False)


def _import_stages() -> None:
    """What a run with stages to do imports first (the flow, TensorFlow and tf_keras: about 8 s on 2
    cores), done while a local Prefect server boots (about 6.5 s) instead of after it."""
    import flows.compress  # noqa: F401
    from tasks.train import keras

    keras()


def _in_prefect(
    root: Path, call: Callable[[], T], scheduler: bool = False, while_starting: Callable[[], object] | None = None
) -> T:
    """Run a flow as every command does: a Prefect API, domain logs shown, Prefect flushed after."""
    from flows.server import prefect_api

    # Prefect attaches its handlers to the `tasks` logger (flows/__init__.py) but not a level.
    logging.getLogger("tasks").setLevel(logging.INFO)
    # serve's own server keeps this project's schedule and history in the project (beside DVC's
    # tmp files), not in Prefect's home: runs that an earlier serve of another folder scheduled
    # there would otherwise reach this one, with that folder's path.
    database = root / ".dvc" / "tmp" / "edgecompress-prefect.db" if scheduler else None
    with prefect_api(scheduler=scheduler, database=database, while_starting=while_starting):
        from flows.compress import flush_prefect_services

        try:
            return call()
        finally:
            flush_prefect_services()


def _guarded(root: Path, call: Callable[[], T]) -> T:
    """Expected errors as one line and exit status 1 (a failed gate's table first)."""
    from tasks.errors import EdgecompressError
    from tasks.gate import GateFailed

    try:
        return call()
    except EdgecompressError as error:
        if isinstance(error, GateFailed):
            _print_gate(json.loads((root / "data" / "reports" / "gate.json").read_text()))
        _fail(str(error))


@app.command()
def retrain(project: ProjectOption = Path(".")) -> None:
    """One scheduled-style retrain: skipped in seconds when nothing changed; else run, gate, register, push."""
    from tasks.errors import EdgecompressError

    root = project.resolve()
    try:
        _check_project(root)
    except EdgecompressError as error:
        _fail(str(error))
    result = _guarded(root, lambda: _retrain(root))
    if result.skipped:
        from flows.compress import SKIPPED

        recorded = "" if result.recorded else " (not recorded in Prefect: no server configured)"
        typer.echo(f"{SKIPPED}: DVC reports every stage up to date and no setting changed since the last run{recorded}")
        return
    typer.echo("changed: " + "; ".join(f"{stage} ({reason})" for stage, reason in result.changes.items()))
    assert result.run is not None  # not skipped
    _print_report(result.run, process_started=time.time() - _process_age(), finished=time.time())
    if result.pushed is not None:
        typer.echo(f"dvc push: {result.pushed} file(s) sent to the default remote")


def _retrain(root: Path) -> RetrainReport:
    from flows.retrain import RetrainReport
    from tasks.locking import project_lock
    from tasks.params import load_params

    with project_lock(root, load_params(root / "params.yaml").retrain.wait_s):
        if _unchanged(root) is not None:
            return RetrainReport(changes={}, recorded=False)

        def retrain_flow() -> RetrainReport:
            from flows.retrain import retrain as flow

            return cast("RetrainReport", flow(project=str(root)))

        return _in_prefect(root, retrain_flow, while_starting=_import_stages)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


@app.command()
def serve(
    cron: Annotated[str | None, typer.Option(help="Cron schedule (default: retrain.cron in params.yaml).")] = None,
    interval: Annotated[
        float | None, typer.Option(help="Run every N seconds instead of on a cron schedule.", min=1)
    ] = None,
    project: ProjectOption = Path("."),
) -> None:
    """Serve the retrain flow on a schedule with Prefect (Ctrl-C stops it)."""
    from tasks.errors import EdgecompressError
    from tasks.params import check_cron, load_params

    root = project.resolve()
    try:
        _check_project(root)
        params = load_params(root / "params.yaml")
        schedule: dict[str, Any] = (
            {"interval": interval} if interval else {"cron": check_cron(cron or params.retrain.cron)}
        )
    except EdgecompressError as error:
        _fail(str(error))

    def serve_flow() -> None:
        from prefect.settings import PREFECT_UI_URL

        from flows.retrain import retrain as retrain_flow

        ui = PREFECT_UI_URL.value() or "no UI"
        typer.echo(f"serving retrain of {root} on {schedule}; Prefect UI: {ui}; Ctrl-C stops")
        # Ctrl-C as KeyboardInterrupt, which Flow.serve catches to shut its runner down. Under
        # Python's own handler, asyncio.run turns the first Ctrl-C into a cancellation of the
        # runner's task instead, which the runner can absorb and go on serving.
        previous = signal.signal(signal.SIGINT, _interrupt)
        try:
            # limit=1: runs of this schedule queue up rather than overlap (the project lock would refuse them).
            retrain_flow.serve(name=f"{root.name}-retrain", parameters={"project": str(root)}, limit=1, **schedule)
        finally:
            signal.signal(signal.SIGINT, previous)

    # Schedules need Prefect's scheduler service, which the embedded server lacks: use
    # PREFECT_API_URL when set, else a local `prefect server` with its services and UI.
    _guarded(root, lambda: _in_prefect(root, serve_flow, scheduler=True))


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
    from tasks import sweep as search
    from tasks.errors import EdgecompressError

    root = project.resolve()
    try:
        _check_project(root)
        grid = search.parse_grid(list(set_ or []))
        trials = search.expand(root / "params.yaml", grid)  # every grid point valid before any starts
        if dask_address:
            _check_dask(dask_address)
    except EdgecompressError as error:
        _fail(str(error))
    typer.echo(f"{len(trials)} trials on " + (dask_address or f"{workers} local Dask worker(s)"))

    def run_sweep() -> SweepReport:
        import os

        # Dask's own INFO lines (workers joining and leaving) drown the trials' progress.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        from prefect_dask import DaskTaskRunner

        from flows.sweep import sweep_flow

        if dask_address:
            runner, threads = DaskTaskRunner(address=dask_address), None
        else:
            cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True}
            runner = DaskTaskRunner(cluster_kwargs={**cluster, "host": "127.0.0.1", "dashboard_address": None})
            threads = search.worker_threads(workers)
        # prefect-dask's runner hands out its own futures type, which Prefect's stubs do not name.
        flow = sweep_flow.with_options(task_runner=runner)  # type: ignore[arg-type]
        return cast("SweepReport", flow(project=str(root), grid=grid, threads=threads, apply=apply))

    report = _guarded(root, lambda: _in_prefect(root, run_sweep))
    _print_sweep(report, root)


def _check_dask(address: str) -> None:
    """A scheduler that answers within seconds, or one line naming it."""
    import socket

    from distributed import Client
    from distributed.comm import parse_address, parse_host_port

    from tasks.errors import EdgecompressError

    try:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls"):
            # A refused connection is an answer at once; Dask's client would retry it for its whole timeout.
            socket.create_connection(parse_host_port(location), timeout=10).close()
        with Client(address, timeout=10):
            pass
    except (OSError, TimeoutError, ValueError) as error:
        reason = " ".join(str(error).split())[:120] or type(error).__name__
        raise EdgecompressError(f"--dask-address {address}: no Dask scheduler answers ({reason})") from None


def _print_sweep(report: SweepReport, root: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="sweep (test split; shipped int8 model of each trial)")
    for column in (
        "trial",
        "settings",
        "accuracy",
        "gzip bytes",
        "ms (builtin)",
        "ms (xnnpack)",
        "TPU",
        "gate",
        "front",
    ):
        table.add_column(column)
    for outcome in report.outcomes:
        if outcome.status != "ok":
            table.add_row(outcome.trial.name, outcome.trial.settings, "failed", "", "", "", "", "", outcome.error[:60])
            continue
        m = outcome.metrics
        front = "/".join(
            name for name, on in (("size", outcome.pareto_size), ("latency", outcome.pareto_latency)) if on
        )
        table.add_row(
            outcome.trial.name,
            outcome.trial.settings,
            f"{m['accuracy']:.4f}",
            f"{m['gzip_bytes']:,}",
            f"{m['latency_ms_builtin']:.3f}",
            f"{m['latency_ms_xnnpack']:.3f}",
            f"{m['edgetpu_mapped_fraction']:.0%}",
            outcome.gate,
            front,
        )
    console.print(table)
    console.print(f"table: {report.csv.relative_to(root)}; Pareto front: {report.plot.relative_to(root)}")
    console.print(f"MLflow run {report.run_id} (a nested run per trial)")
    if report.best is None:
        console.print("no trial passes the gate")
    elif report.applied:
        console.print(
            f"best that passes the gate: {report.best.trial.name}; written into params.yaml "
            f"({report.best.trial.settings}) - `edgecompress run` builds and registers it through the gate"
        )
    else:
        console.print(
            f"best that passes the gate: {report.best.trial.name} ({report.best.trial.settings}); --apply writes it"
        )
    failed = [o for o in report.outcomes if o.status != "ok"]
    if failed:
        console.print(f"{len(failed)} trial(s) failed: " + "; ".join(f"{o.trial.name}: {o.error}" for o in failed))


def _new_folder(path: Path) -> None:
    """A folder that does not exist yet, or an empty one; else one line saying what is there."""
    from tasks.errors import EdgecompressError

    if path.exists() and not path.is_dir():
        raise EdgecompressError(f"{path}: exists and is a file; choose a new folder with --into")
    if path.is_dir() and any(path.iterdir()):
        raise EdgecompressError(f"{path}: not empty; choose a new folder with --into")


@app.command()
def checkout(
    ref: Annotated[str, typer.Argument(help="MODEL@ALIAS, MODEL@VERSION, or just ALIAS / VERSION.")],
    into: Annotated[Path | None, typer.Option(help="Folder to restore into (default: ./checkout-v<VERSION>).")] = None,
    project: ProjectOption = Path("."),
) -> None:
    """Restore the data/ outputs a model version was made from, into a separate folder."""
    from tasks import registry
    from tasks.errors import EdgecompressError
    from tasks.versioning import lock_outs, restore_outputs

    try:
        if into is not None:
            _new_folder(into)
    except EdgecompressError as error:
        _fail(str(error))
    uri, default = _registry_target(project, ref.rpartition("@")[0] or None)
    name, which = registry.parse_ref(ref, default)
    try:
        version, lock = registry.recorded_lock(uri, name, which)
        target = (into or Path(f"checkout-v{version}")).resolve()
        _new_folder(target)
        restored = restore_outputs(project.resolve(), lock_outs(lock), target)
    except EdgecompressError as error:
        _fail(str(error))
    typer.echo(f"restored {name} version {version}'s outputs into {target}:")
    for path in restored:
        typer.echo(f"  {path}")


@app.command()
def reproduce(
    ref: Annotated[str, typer.Argument(help="MODEL@ALIAS, MODEL@VERSION, or just ALIAS / VERSION.")] = "champion",
    into: Annotated[
        Path | None, typer.Option(help="Rebuild in this new folder and keep it (default: a temporary one).")
    ] = None,
    project: ProjectOption = Path("."),
) -> None:
    """Rebuild a registered version from its lineage in a separate folder; say whether the same model came out."""
    import tempfile

    from tasks import registry
    from tasks.errors import EdgecompressError
    from tasks.reproduce import reproduce as rebuild

    uri, default = _registry_target(project, ref.rpartition("@")[0] or None)
    name, which = registry.parse_ref(ref, default)
    try:
        build = registry.recorded_build(uri, name, which)
        folder = into.resolve() if into else Path(tempfile.mkdtemp(prefix=f"edgecompress-v{build.version}-"))
        typer.echo(f"rebuilding {name} version {build.version} from commit {build.commit[:12]} in {folder}")
        verdict = rebuild(project.resolve(), build, folder, progress=typer.echo, keep=into is not None)
    except EdgecompressError as error:
        _fail(str(error))
    if verdict.identical:
        typer.echo(f"identical: {verdict.shipped} md5 {verdict.rebuilt_md5} is version {build.version}'s")
        return
    for difference in verdict.differences:
        typer.echo(f"  {difference}")
    _fail(
        f"not reproduced: {verdict.shipped} md5 {verdict.rebuilt_md5}, version {build.version} has "
        f"{verdict.recorded_md5}; {verdict.differences[0]}"
    )


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="prepare | train | prune | cluster | quantize | evaluate | edgetpu")],
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
    if report.skipped or report.gate is None:
        assert report.version is not None  # a skipped run stands for a registered version
        recorded = "" if report.recorded else "; not recorded in Prefect (no server configured)"
        console.print(
            f"nothing changed: every stage is up to date and no setting changed since MLflow run {report.run_id}, "
            f"which registered version {report.version.version}; it stands ({finished - process_started:.1f} s"
            f"{recorded})"
        )
        return
    variants = Table(title="variants (test split)")
    for column in ("variant", "accuracy", "size bytes", "gzip bytes"):
        variants.add_column(column, justify="left" if column == "variant" else "right")
    evaluation = report.metrics["evaluate"]
    for name in ("float", "pruned", "clustered", "float_tflite", evaluation["shipped"]):
        if name not in evaluation:
            continue  # clustered: only when cluster.enabled
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
    tpu = report.metrics["edgetpu"]
    console.print(
        f"Edge TPU: {tpu['mapped_fraction']:.0%} of operators mapped, {tpu['subgraphs']} subgraph(s) ({tpu['note']})"
    )
    _print_gate(report.gate.to_dict())
    console.print(f"MLflow run {report.run_id} in {report.tracking_uri}")
    if report.version is not None:
        verb = "registered" if report.version.new else "already registered (same model) as"
        console.print(f"{verb} version {report.version.version}, now 'candidate'")
    if report.promoted is not None:
        console.print(report.promoted.message)


def _print_gate(gate: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gate: {gate['verdict']}")
    for column in ("check", "observed", "threshold", "verdict", "note"):
        table.add_column(column)
    for check in gate["checks"]:
        observed = "-" if check["observed"] is None else f"{check['observed']:.6g}"
        threshold = "-" if check["threshold"] is None else f"{check['comparison']} {check['threshold']:.6g}"
        style = {"fail": "red", "pass": "green"}.get(check["verdict"], "dim")
        table.add_row(check["name"], observed, threshold, check["verdict"], check["note"], style=style)
    Console().print(table)


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
    import tempfile

    from tasks.edgetpu import compile_model, find_compiler, preflight
    from tasks.errors import EdgecompressError

    try:
        predicted = preflight(model, min_runtime_version=min_runtime_version, multiple_subgraphs=multiple_subgraphs)
        found = find_compiler(compiler)
        compiled = None
        if found is not None and predicted.error is None:
            with tempfile.TemporaryDirectory() as out:
                compiled = compile_model(model, Path(out), found, min_runtime_version, 180.0, multiple_subgraphs)
    except EdgecompressError as error:
        _fail(str(error))
    if as_json:
        result = predicted.to_dict()
        if compiled is not None:
            result["compiler"] = compiled.to_dict()
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    typer.echo(f"Edge TPU preflight (offline prediction) for {model}\n")
    typer.echo(predicted.table())
    mapped = f"{predicted.mapped}/{predicted.total} operators on the Edge TPU ({predicted.mapped_fraction:.0%})"
    typer.echo(f"\n{mapped}, {predicted.subgraphs} Edge TPU subgraph(s)")
    if predicted.uncertain:
        typer.echo(
            f"{predicted.uncertain} more not documented: may fall back (counted off the Edge TPU; "
            f"at most {predicted.mapped_fraction_max:.0%} if they map)"
        )
    if predicted.explanation is not None:
        typer.echo("\n" + "\n".join(predicted.explanation.lines()))
    if predicted.error:
        typer.echo(f"verdict: {predicted.error}")
    for warning in predicted.warnings:
        typer.echo(f"warning: {warning}")
    if compiled is not None:
        typer.echo(f"\nedgetpu_compiler {compiled.version}\n")
        typer.echo(compiled.table())
    elif found is None:
        typer.echo("\nedgetpu_compiler not found: this is the preflight's prediction only")


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Registered model (default: registry.model_name in params.yaml).")
]


def _registry_target(project: Path, model: str | None) -> tuple[str, str]:
    """(tracking URI, model name) for the registry commands."""
    from tasks.errors import EdgecompressError
    from tasks.params import load_params
    from tasks.tracking import tracking_uri

    root = project.resolve()
    if model is None:
        try:
            model = load_params(root / "params.yaml").registry.model_name
        except EdgecompressError as error:
            _fail(f"{error} (or pass --model)")
    assert model is not None
    uri = tracking_uri(root)
    store = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if store is not None and not store.is_file():
        # Asking would create an empty store; there is nothing in it to show.
        _fail(f"no tracking store yet ({store}); run `edgecompress run` first, or set MLFLOW_TRACKING_URI")
    return uri, model


def _registry_call(function: Any, *args: Any) -> Any:
    from tasks.errors import EdgecompressError

    try:
        return function(*args)
    except EdgecompressError as error:
        _fail(str(error))


@app.command()
def promote(
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="Version to promote (default: candidate).")
    ] = None,
    model: ModelOption = None,
    project: ProjectOption = Path("."),
) -> None:
    """Move the `champion` alias to a gated version; the old champion becomes `previous-champion`."""
    from tasks import registry

    uri, name = _registry_target(project, model)
    typer.echo(_registry_call(registry.promote, uri, name, version).message)


@app.command()
def rollback(model: ModelOption = None, project: ProjectOption = Path(".")) -> None:
    """Move `champion` back to `previous-champion` (a second rollback undoes the first)."""
    from tasks import registry

    uri, name = _registry_target(project, model)
    typer.echo(_registry_call(registry.rollback, uri, name).message)


@app.command()
def lineage(
    ref: Annotated[str, typer.Argument(help="MODEL@ALIAS, MODEL@VERSION, or just ALIAS / VERSION.")] = "champion",
    as_json: JsonOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Show how a model version was made: run, params, metrics, gate checks, data hashes, code."""
    from tasks import registry

    named = ref.rpartition("@")[0] or None
    uri, default = _registry_target(project, named)
    name, which = registry.parse_ref(ref, default)
    record = _registry_call(registry.lineage, uri, name, which)
    if as_json:
        typer.echo(json.dumps(record, indent=2, default=str))
        return
    from rich.console import Console

    console = Console()
    aliases = ", ".join(record["aliases"]) or "no alias"
    console.print(f"[bold]{name} version {record['version']}[/bold] ({aliases})  run {record['run_id']}")
    dirty = " (uncommitted changes)" if record["code"]["dirty"] == "true" else ""
    console.print(f"code: git {record['code']['commit']}{dirty}")
    console.print(_table("data (DVC hashes recorded in the run's dvc.lock)", ("path", "md5"), record["data"].items()))
    if record["gate"]:
        _print_gate(record["gate"])
    shown = {k: f"{v:.6g}" for k, v in record["metrics"].items() if k.startswith(("evaluate.", "prune.sparsity"))}
    console.print(_table("metrics", ("metric", "value"), shown.items()))
    console.print(_table("params", ("param", "value"), record["params"].items()))


def _table(title: str, columns: tuple[str, str], rows: Iterable[tuple[str, Any]]) -> Any:
    """A two-column rich table."""
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for key, value in rows:
        table.add_row(key, str(value))
    return table


@app.command()
def history(model: ModelOption = None, as_json: JsonOption = False, project: ProjectOption = Path(".")) -> None:
    """List the registered versions with their gate verdict, key metrics and aliases."""
    from tasks import registry

    uri, name = _registry_target(project, model)
    rows = _registry_call(registry.history, uri, name)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{name} versions")
    for column in ("version", "aliases", "gate", "int8 acc", "float acc", "int8 bytes", "sparsity", "commit"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["version"]),
            ", ".join(row["aliases"]),
            row["gate"],
            _num(row["int8_accuracy"], ".4f"),
            _num(row["float_accuracy"], ".4f"),
            _num(row["int8_size_bytes"], ",.0f"),
            _num(row["sparsity"], ".3f"),
            row["git_commit"],
        )
    Console().print(table)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@app.command()
def diff(
    first: Annotated[str, typer.Argument(help="A version or alias (MODEL@ allowed).")],
    second: Annotated[str, typer.Argument(help="Another version or alias.")],
    as_json: JsonOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Show what differs between two versions: params, metrics, data hashes and code."""
    from tasks import registry

    uri, default = _registry_target(project, first.rpartition("@")[0] or None)
    name, a = registry.parse_ref(first, default)
    _, b = registry.parse_ref(second, name)
    result = _registry_call(registry.diff, uri, name, a, b)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    va, vb = result["versions"]
    for section in ("params", "metrics", "data", "code"):
        table = Table(title=f"{section}: version {va} vs {vb}")
        table.add_column("key")
        table.add_column(f"v{va}")
        table.add_column(f"v{vb}")
        for key, (left, right) in result[section].items():
            table.add_row(key, str(left), str(right))
        if result[section]:
            console.print(table)
        else:
            console.print(f"{section}: no difference")


def main() -> None:
    """Entry point of the `edgecompress` script."""
    # `kill -USR1 PID` prints every thread's stack to stderr: what a command that seems stuck is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    app()


if __name__ == "__main__":
    main()
