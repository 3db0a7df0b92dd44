"""How a command starts a flow: the project lock, `-S` overrides under the journal, a Prefect API, the flush.

Each function here is what one command does around its flow, so the command line only parses,
calls one of them and prints. A run with nothing to do is answered before any Prefect server
starts; everything else runs under `in_prefect` (flows/server.py).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from flows.server import configured_api, in_prefect

if TYPE_CHECKING:
    from flows.compress import RunReport
    from flows.retrain import RetrainReport
    from flows.sweep import SweepReport
    from tasks.search.sweep import Constraints, Search


def compress(root: Path, overrides: list[str], wait_s: float, process_started: float) -> RunReport:
    """The compress flow with -S overrides in params.yaml for its duration, kept only if it succeeds.

    The project lock is taken before params.yaml is touched, so a second run never rewrites the
    settings of a running one; the original waits in params.yaml.journal, so that a killed run's
    overrides are undone by whatever runs next (tasks/bookkeeping/journal.py).
    """
    from tasks.bookkeeping import journal
    from tasks.bookkeeping.lock import project_lock

    with project_lock(root, wait_s):
        journal.write_overrides(root, overrides)
        try:
            report = unchanged(root, process_started) or in_prefect(
                root, lambda: _compress_flow(root), while_starting=_import_stages
            )
        except BaseException:
            journal.end_overrides(root, keep=False)
            raise
        journal.end_overrides(root, keep=True)
    return report


def _compress_flow(root: Path) -> RunReport:
    from flows.compress import compress as flow

    return cast("RunReport", flow(project=str(root)))


def unchanged(root: Path, process_started: float) -> RunReport | None:
    """The report of a run with nothing to do, decided before any Prefect server starts; None otherwise.

    With a Prefect server configured the flow itself records such a run (a flow run that ends
    "skipped: no change", about a second of API calls), so this returns None then. The embedded
    server would have to be started just for that, which costs more than all the rest of a run
    with nothing to do, so without one the run is decided here and not recorded in Prefect; the
    MLflow run it stands for and dvc.lock remain the record.
    """
    from flows.compress import RunReport
    from tasks.bookkeeping.plan import Plan
    from tasks.bookkeeping.tracking import tracking_uri
    from tasks.layout import Layout
    from tasks.params import load_params

    layout = Layout(root)
    plan = Plan(layout, load_params(layout.params_file), tracking_uri(root))
    if plan.pending or plan.last is None or configured_api():
        return None
    return RunReport.unchanged(tracking_uri(root), plan.last, process_started, recorded=False)


def _import_stages() -> None:
    """What a run with stages to do imports first (the flow, TensorFlow and tf_keras: about 8 s on 2
    cores), done while a local Prefect server boots (about 6.5 s) instead of after it."""
    import flows.compress  # noqa: F401
    from tasks.stages.fit import keras

    keras()


def retrain(root: Path, process_started: float) -> RetrainReport:
    """One scheduled-style retrain: decided without Prefect when nothing changed, else the retrain flow."""
    from flows.retrain import RetrainReport
    from tasks.bookkeeping.lock import project_lock
    from tasks.params import load_params

    with project_lock(root, load_params(root / "params.yaml").retrain.wait_s):
        if unchanged(root, process_started) is not None:
            return RetrainReport(changes={}, recorded=False)

        def retrain_flow() -> RetrainReport:
            from flows.retrain import retrain as flow

            return cast("RetrainReport", flow(project=str(root)))

        return in_prefect(root, retrain_flow, while_starting=_import_stages)


def stage(root: Path, name: str) -> dict[str, Any]:
    """One stage as `dvc repro` runs it, under the project lock; its summary.

    The lock refuses while a run of the project is on, and cleans up after a dead one first. If a
    dead run's -S overrides were still in params.yaml, they are undone and the stage refuses: DVC
    chose what to run from them, so `dvc repro` must decide again.
    """
    from tasks.bookkeeping.lock import project_lock
    from tasks.bookkeeping.plan import run_alone
    from tasks.errors import EdgecompressError

    with project_lock(root, wait_s=0) as recovered:
        if recovered.params_restored:
            raise EdgecompressError(
                "params.yaml held the -S overrides of a run that did not finish; they are undone now, "
                "but DVC chose the stages to run from them: run `dvc repro` again"
            )
        return run_alone(root, name)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def serve(root: Path, schedule: dict[str, Any], announce: Any) -> None:
    """Serve the retrain flow on `schedule` until Ctrl-C, on PREFECT_API_URL or a local `prefect server`.

    Schedules need Prefect's scheduler service, which the embedded server lacks: a configured server
    must run its services; otherwise a local `prefect server` with its services and UI is started.
    """

    name = f"{root.name}-retrain"

    def serve_flow() -> None:
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

        from flows.retrain import retrain as retrain_flow

        # Prefect's own hint (`prefect deployment run ...`) reaches the default API, not the server
        # started here on a free port: this one names the API, and the prefect of this environment.
        prefect = Path(sys.executable).with_name("prefect")
        run_now = f"PREFECT_API_URL={PREFECT_API_URL.value()} {shlex.quote(str(prefect))} deployment run "
        announce(PREFECT_UI_URL.value() or "no UI", run_now + shlex.quote(f"retrain/{name}"))
        # Ctrl-C as KeyboardInterrupt, which Flow.serve catches to shut its runner down. Under
        # Python's own handler, asyncio.run turns the first Ctrl-C into a cancellation of the
        # runner's task instead, which the runner can absorb and go on serving.
        previous = signal.signal(signal.SIGINT, _interrupt)
        try:
            # limit=1: runs of this schedule queue up rather than overlap (the project lock would refuse them).
            retrain_flow.serve(
                name=name, parameters={"project": str(root)}, limit=1, print_starting_message=False, **schedule
            )
        finally:
            signal.signal(signal.SIGINT, previous)

    in_prefect(root, serve_flow, scheduler=True)


def check_sweep(
    root: Path,
    texts: list[str],
    method: str,
    trials: int | None,
    objective: str,
    study: str | None,
    storage: str | None,
    constraints: Constraints,
    workers: int,
    apply: bool,
    dask_address: str | None,
) -> tuple[Search, int, list[str]]:
    """The sweep a command asks for, checked whole before anything runs: the request, how many trials it
    runs, and what was said about it (duplicates dropped). Every problem is one line."""
    from tasks.errors import ParamsError
    from tasks.layout import check_project
    from tasks.search import space as spaces
    from tasks.search import study as studies
    from tasks.search.sweep import Search

    check_project(root)
    if method not in ("grid", *studies.SAMPLERS):
        raise ParamsError(f"--search {method}: must be grid, random or optuna")
    space = spaces.parse_space(texts)
    if method == "grid":
        given = [name for name, value in (("--trials", trials), ("--study", study), ("--storage", storage)) if value]
        if given:
            raise ParamsError(f"{given[0]} is for --search optuna or random; a grid runs every point once")
        grid = spaces.expand(root / "params.yaml", space)  # every grid point valid before any starts
        request, count, notes = Search(space, constraints=constraints, apply=apply), len(grid.trials), grid.notes
    else:
        if not trials:
            raise ParamsError(f"--search {method} needs --trials N (how many points this sweep runs)")
        if objective not in studies.OBJECTIVES:
            raise ParamsError(f"--objective {objective}: must be {' or '.join(studies.OBJECTIVES)}")
        spaces.check_space(root / "params.yaml", space)
        url = studies.storage_url(root, storage)
        name = study or studies.default_name()
        resumed = studies.check_resume(root, url, name, space, objective, method)
        if storage:  # the flow reads it from the environment: a flow's parameters are shown, a password with them
            os.environ[studies.STORAGE_ENV] = storage
        request = Search(space, method, trials, objective, name, "", max(workers, 1), constraints, apply)
        action = "continuing" if resumed else "new"
        notes = [*space.notes, f"{action} study {name} in {studies.shown(url)} (resume it with --study {name})"]
        count = trials
    if dask_address:
        check_dask(dask_address)
    return request, count, notes


def sweep(root: Path, search: Search, workers: int, dask_address: str | None) -> SweepReport:
    """The sweep flow on Dask through prefect-dask: a local cluster of `workers` processes, or a scheduler."""

    def run_sweep() -> SweepReport:
        # Dask's own INFO lines (workers joining and leaving) drown the trials' progress.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        from prefect_dask import DaskTaskRunner

        from flows.sweep import sweep_flow
        from tasks.search.sweep import worker_threads

        if dask_address:
            runner, threads = DaskTaskRunner(address=dask_address), None
        else:
            cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True}
            runner = DaskTaskRunner(cluster_kwargs={**cluster, "host": "127.0.0.1", "dashboard_address": None})
            threads = worker_threads(workers)
        # prefect-dask's runner hands out its own futures type, which Prefect's stubs do not name.
        flow = sweep_flow.with_options(task_runner=runner)  # type: ignore[arg-type]
        return cast("SweepReport", flow(project=str(root), search=search, threads=threads))

    return in_prefect(root, run_sweep)


def check_dask(address: str, timeout: float = 5.0) -> None:
    """A Dask scheduler that answers within seconds, or one line naming the address and what answered.

    Dask's client trusts whatever answers: a peer that says nothing (a dashboard's HTTP port waiting for
    a request) keeps it waiting past its own timeout, and one that answers in another protocol has its
    first 8 bytes read as a frame length ("HTTP/1.1" is 3.5 EiB: a MemoryError). So a tcp:// address is
    first asked for what a scheduler sends unprompted on every new connection: its handshake, one
    length-prefixed message of a few hundred bytes.
    """
    from distributed import Client
    from distributed.comm import parse_address, parse_host_port

    from tasks.errors import EdgecompressError

    def refuse(reason: str) -> NoReturn:
        raise EdgecompressError(f"--dask-address {address}: no Dask scheduler answers ({reason})") from None

    try:
        scheme, location = parse_address(address)
        if scheme == "tcp":
            problem = dask_handshake(parse_host_port(location), timeout)
            if problem:
                refuse(problem)
        with Client(address, timeout=timeout):
            pass
    except (OSError, TimeoutError, ValueError, MemoryError) as error:
        refuse(" ".join(str(error).split())[:120] or type(error).__name__)


def dask_handshake(host_port: tuple[str, int], timeout: float) -> str:
    """'' when what listens at host_port opens with a Dask handshake; otherwise what it did instead.

    Dask's TCP comm frames every message as an 8-byte total length, an 8-byte frame count, each
    frame's 8-byte length, then the frames (distributed/comm/tcp.py); a listener writes its handshake
    first, without being asked.
    """
    import socket
    import struct

    def read(conn: socket.socket, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            if not chunk:
                break
            data += chunk
        return data

    try:
        conn = socket.create_connection(host_port, timeout=timeout)
    except OSError as error:  # a refused connection is an answer at once; Dask would retry it for its timeout
        return " ".join(str(error).split())[:120] or type(error).__name__
    with conn:
        try:
            header = read(conn, 8)
        except TimeoutError:
            return f"it accepted the connection and said nothing in {timeout:g} s: not a scheduler's port"
        if len(header) < 8:
            return "it closed the connection without a handshake"
        (length,) = struct.unpack("Q", header)
        if not 16 <= length <= 1 << 20:
            return f"it answered {header!r}..., not a Dask handshake: another service's port"
        try:
            body = read(conn, length)
        except TimeoutError:
            return f"its first message stopped short in {timeout:g} s"
        (frames,) = struct.unpack_from("Q", body)
        sizes = struct.unpack_from(f"{frames}Q", body, 8) if 0 < frames <= 64 and len(body) >= 8 * (frames + 1) else ()
        if not sizes or 8 * (frames + 1) + sum(sizes) != length:
            return "its first message is not framed as Dask frames its messages: another service's port"
    return ""


def process_age() -> float:
    """Seconds since this process started: start-up cost that no timer inside could see.

    On Linux from /proc, to the hundredth (the process's start in clock ticks since boot, against
    the uptime); psutil elsewhere, whose start time rests on a boot time rounded to the second.
    """
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        import psutil

        return time.time() - psutil.Process().create_time()
