"""The Prefect API a command talks to: PREFECT_API_URL when set, else a server this process starts and owns.

Prefect's own embedded server is a child process that outlives a killed parent (an orphan of about
200 MB). The server started here is the same program (Prefect's API app under uvicorn, no UI, no
background services), but it dies with the process that started it, however that process ends
(Linux's parent-death signal). `serve` starts `prefect server start` instead, for its scheduler and
UI, the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import TypeVar

from tasks.errors import EdgecompressError

T = TypeVar("T")


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def die_with_parent_process() -> None:
    """In a flow run that Prefect's runner started as a process of its own (`serve`): end with `serve`.

    The runner starts each scheduled run in a multiprocessing child, which a killed `serve` would
    leave running for minutes (the whole retrain, about 1 GB), holding the project lock. A daemon
    thread here watches the parent and, when it is gone, kills this process as `kill -9` killed
    `serve`, so the lock is free within a second and the next command cleans up after the run as
    after any killed run. Elsewhere (the command's own process, a worker's subprocess) a no-op.
    """
    import multiprocessing
    import threading

    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return

    def watch(pid: int) -> None:
        # The kernel gives an orphan a new parent: polling that needs nothing from multiprocessing's pipes.
        while os.getppid() == pid:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, args=(parent.pid,), name="die-with-serve", daemon=True).start()


def _free_port() -> int:
    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def configured_api() -> str | None:
    """PREFECT_API_URL from the environment, a .env or the active Prefect profile (imports Prefect).

    EdgecompressError for a value that is not an http(s) URL: without its scheme, urllib takes the
    host for a scheme ("127.0.0.1:4200/api") or raises ValueError ("localhost/api").
    """
    from urllib.parse import urlsplit

    from prefect.settings import PREFECT_API_URL

    from tasks.errors import clip

    url = PREFECT_API_URL.value() or None
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise EdgecompressError(
                f"PREFECT_API_URL={clip(url)} is not an http(s) URL; write it as http://HOST:PORT/api "
                "(e.g. http://127.0.0.1:4200/api), or unset it so that the command starts its own server"
            )
    return url


class OwnedServer:
    """A local Prefect server owned by this process.

    `scheduler=False` is what Prefect's embedded server is (the API only, no UI, no background
    services), for a single run; `scheduler=True` is `prefect server start` with its UI and
    services, which `serve` needs for schedules. `database` is the server's SQLite file (default:
    Prefect's own, in PREFECT_HOME).
    """

    def __init__(self, scheduler: bool = False, database: Path | None = None) -> None:
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.ui_url = f"http://127.0.0.1:{self.port}" if scheduler else None
        bin_dir = Path(sys.executable).parent
        if scheduler:
            command = [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
            # The UI calls the API at PREFECT_UI_API_URL, else at port 4200 whatever port serves it.
            env = {**os.environ, "PREFECT_UI_API_URL": self.api_url}
        else:
            spec = find_spec("prefect")
            assert spec is not None and spec.submodule_search_locations
            package_parent = str(Path(next(iter(spec.submodule_search_locations))).parent)
            command = [
                sys.executable,
                *("-m", "uvicorn", "--app-dir", package_parent, "--factory"),
                "prefect.server.api.server:create_app",
                *("--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"),
            ]
            # What Prefect's own embedded server sets: no UI, no background services.
            env = {
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
            }
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{database}"
        # A session of its own: Ctrl-C in a terminal signals the command's process group, and the
        # server must outlive the command's shutdown (a flow run's final state, a runner pausing its
        # schedules, are reported to it). The command stops it afterwards; a killed command takes it
        # along through the parent-death signal.
        self._process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def wait_ready(self, timeout: float) -> str:
        """Block until the API answers; its URL. EdgecompressError if it exits or does not answer in time."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2):
                    return self.api_url
            except OSError:
                if self._process.poll() is not None:
                    raise EdgecompressError(
                        f"the local Prefect server exited at start-up (code {self._process.returncode}); "
                        "run `prefect server start` to see why, or set PREFECT_API_URL"
                    ) from None
                if time.monotonic() > deadline:
                    self.stop()
                    raise EdgecompressError(
                        f"the local Prefect server did not answer within {timeout:g} s; raise "
                        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or set PREFECT_API_URL"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def check_reachable(api_url: str, timeout: float = 10.0) -> None:
    """A configured Prefect API that answers its health check, or one line naming it."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout):
            return
    except OSError as error:
        reason = getattr(error, "reason", None) or error
        raise EdgecompressError(
            f"Prefect server {api_url} is unreachable ({reason}); start it, or unset PREFECT_API_URL "
            "so that the command starts its own"
        ) from None


def startup_timeout() -> float:
    return float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))


@contextmanager
def prefect_api(
    scheduler: bool = False, database: Path | None = None, while_starting: Callable[[], object] | None = None
) -> Iterator[str]:
    """The API URL to use for the block: the configured one, else a server started here and stopped after.

    `while_starting` is work the block needs anyway (imports) done while a started server boots,
    on the core the server leaves idle; with a configured server it is not called.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = configured_api()
    if configured:
        check_reachable(configured)
        yield configured
        return
    server = OwnedServer(scheduler, database)
    try:
        if while_starting is not None:
            while_starting()
        url = server.wait_ready(startup_timeout())
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        server.stop()


def flush_prefect_services(timeout: float = 30.0) -> None:
    """Deliver Prefect's queued logs and events now, before the interpreter starts shutting down.

    Prefect 3.8 drops its last strong reference to a queue service's asyncio task when it drains
    the service. If the garbage collector runs in that window (likelier after a TensorFlow run
    has filled the heap), the task is finalised from the main thread, its wake-up never reaches
    the event loop, and the drain Prefect registers for interpreter exit waits forever. Freezing
    the objects alive now keeps the task reachable until it has finished.
    """
    import gc

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    gc.freeze()
    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)


def in_prefect(
    root: Path, call: Callable[[], T], scheduler: bool = False, while_starting: Callable[[], object] | None = None
) -> T:
    """Run a flow as every command does: a Prefect API, Prefect flushed after (each flow shows domain logs)."""
    # serve's own server keeps this project's schedule and history in the project (beside DVC's
    # tmp files), not in Prefect's home: runs that an earlier serve of another folder scheduled
    # there would otherwise reach this one, with that folder's path.
    database = root / ".dvc" / "tmp" / "edgecompress-prefect.db" if scheduler else None
    with prefect_api(scheduler=scheduler, database=database, while_starting=while_starting):
        try:
            return call()
        finally:
            flush_prefect_services()
