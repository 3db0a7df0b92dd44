"""The team setup's servers, each started as its real program on 127.0.0.1 and stopped again.

PostgreSQL (a throwaway cluster), `mlflow server` on it with proxied artifacts and the project's
basic-auth app (`--app-name edgecompress-auth`), `prefect server start` on it, a process work pool
with the retrain deployment, `prefect worker start`. The integration tests and `benchmarks/worker.py`
share these; every start and stop is
announced, so a log shows which server was up when.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
POOL = "edgecompress"
DEPLOYMENT = "retrain/nightly-retrain"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Where start/stop lines go; the integration conftest points it past pytest's output capture.
announce: Callable[[str], None] = _stderr


_STARTED = time.monotonic()


def say(message: str) -> None:
    announce(f"[team setup {time.monotonic() - _STARTED:6.1f} s] {message}")


def free_port() -> int:
    """A port nothing listens on right now, on loopback."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]), reverse=True
    )
    return Path(candidates[0]).parent if candidates else None


class ServerError(RuntimeError):
    """A server did not start or answer; the message holds the end of its log."""


class Program:
    """A started program: its own process group (so its children stop with it) and a log file."""

    def __init__(self, name: str, command: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> None:
        self.name, self.command, self.log, self.env, self.cwd = name, command, log, env, cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM to the program and everything it started, SIGKILL after `timeout`; its exit code."""
        import psutil

        if self.process is None:
            return None
        try:
            # Flow runs a worker started, uvicorn workers: whatever descends from this program.
            family = [*psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for child in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        return self.process.returncode

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""


def http_json(
    url: str, payload: Any = None, auth: tuple[str, str] | None = None, timeout: float = 30.0, method: str | None = None
) -> Any:
    """A JSON request with the standard library (no client library between the test and the server)."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    request.add_header("Content-Type", "application/json")
    if auth is not None:
        request.add_header("Authorization", "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


def wait_until_up(program: Program, url: str, timeout: float) -> None:
    """Poll `url` until it answers (any HTTP status counts: the server is listening)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if not program.running:
                raise ServerError(f"{program.name} exited while starting:\n{program.tail()}") from None
            if time.monotonic() > deadline:
                message = f"{program.name} did not answer {url} in {timeout:.0f} s:\n{program.tail()}"
                raise ServerError(message) from None
            time.sleep(0.5)


class Postgres:
    """A throwaway PostgreSQL cluster: initdb in a temporary folder, its own port, on loopback only.

    As on a real database host, every connection over TCP needs a role's password; only the
    superuser, over the cluster's Unix socket, needs none. `create_roles_and_databases` is step 1 of
    README "Scaling out", command for command.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        # Not under pytest's 0700 temp folders: when we are root, the cluster runs as `postgres`.
        self.folder = Path(tempfile.mkdtemp(prefix="edgecompress-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.user = "postgres"
        # The roles the MLflow and Prefect servers log in as.
        self.passwords = {role: secrets.token_urlsafe(18) for role in ("mlflow", "prefect")}

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / command[0]), *command[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        if result.returncode != 0:
            raise ServerError(f"{' '.join(command[:2])} failed: {(result.stderr or result.stdout)[-2000:]}")
        return result

    def _admin(self, *command: str) -> subprocess.CompletedProcess[str]:
        """A client command as the superuser, over the Unix socket (what `sudo -u postgres` does on a host)."""
        return self._run(command[0], "-h", str(self.folder), "-p", str(self.port), "-U", self.user, *command[1:])

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        say(f"PostgreSQL: initdb in {self.data}")
        auth = ("--auth-local=trust", "--auth-host=scram-sha-256")
        self._run("initdb", "-D", str(self.data), "-U", self.user, *auth, "-E", "UTF8", "--no-sync")
        options = f"-c listen_addresses={HOST} -p {self.port} -k {self.folder} -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "postgres.log"), "-o", options, "-w", "start")
        say(f"PostgreSQL: started on {HOST}:{self.port}")

    def create_roles_and_databases(self) -> None:
        """README "Scaling out", step 1: the two roles with their passwords, and the three databases they own."""
        mlflow, prefect = self.passwords["mlflow"], self.passwords["prefect"]
        self._admin(
            "psql",
            *("-v", "ON_ERROR_STOP=1"),
            *("-c", f"CREATE ROLE mlflow LOGIN PASSWORD '{mlflow}'"),
            *("-c", f"CREATE ROLE prefect LOGIN PASSWORD '{prefect}'"),
        )
        for database, owner in (("mlflow", "mlflow"), ("mlflow_auth", "mlflow"), ("prefect", "prefect")):
            self._admin("createdb", "-O", owner, database)
        say("PostgreSQL: roles mlflow, prefect and databases mlflow, mlflow_auth, prefect created")

    def query(self, database: str, sql: str) -> list[list[str]]:
        """Rows of a query, as psql prints them unaligned (to look into a store without its server)."""
        out = self._admin("psql", "-d", database, "-At", "-c", sql)
        return [line.split("|") for line in out.stdout.splitlines() if line]

    def url(self, database: str, driver: str, role: str) -> str:
        """The SQLAlchemy URL a server logs in with, as `role` with its password, over TCP."""
        return f"postgresql+{driver}://{role}:{self.passwords[role]}@{HOST}:{self.port}/{database}"

    def stop(self) -> None:
        if self.data.is_dir():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
                say(f"PostgreSQL: stopped ({HOST}:{self.port})")
            except ServerError as error:
                say(f"PostgreSQL: stop failed: {error}")
        shutil.rmtree(self.folder, ignore_errors=True)


class Accounts:
    """MLflow basic-auth accounts: an admin, the pipeline (registers), a release owner and a reader."""

    # README "Scaling out", step 3: what each account holds on the registered model (the admin
    # creates it; everyone reads by default_permission).
    GRANTS: ClassVar[dict[str, str]] = {"pipeline": "EDIT", "release": "MANAGE"}

    def __init__(self) -> None:
        self.passwords = {name: secrets.token_urlsafe(18) for name in ("admin", "pipeline", "release", "reader")}

    def env(self, name: str) -> dict[str, str]:
        """MLflow's own credential variables for one account."""
        return {"MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": self.passwords[name]}

    def auth(self, name: str) -> tuple[str, str]:
        return name, self.passwords[name]


class MlflowServer:
    """`mlflow server` on PostgreSQL with edgecompress's basic-auth app; artifacts proxied from a folder."""

    def __init__(self, postgres: Postgres, folder: Path, accounts: Accounts) -> None:
        self.postgres, self.folder, self.accounts = postgres, folder, accounts
        self.artifacts = folder / "artifacts"
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.config = folder / "basic_auth.ini"
        self.secret = secrets.token_hex(16)
        self.program: Program | None = None

    def prepare(self) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = {self.postgres.url('mlflow_auth', 'psycopg2', 'mlflow')}\n"
            "admin_username = admin\n"
            f"admin_password = {self.accounts.passwords['admin']}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 60\n"
        )

    def start(self, timeout: float = 120.0) -> None:
        command = [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            self.postgres.url("mlflow", "psycopg2", "mlflow"),
            "--artifacts-destination",
            str(self.artifacts),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--app-name",
            "edgecompress-auth",  # MLflow's basic auth; only MANAGE moves champion (tasks/registry/auth.py)
        ]
        env = {
            **os.environ,
            "MLFLOW_AUTH_CONFIG_PATH": str(self.config),
            # The auth app's CSRF protection signs with it; several server processes must share one.
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret,
            # MLflow's server-side job runner (GenAI jobs, trace roll-ups) starts seven more processes
            # that edgecompress never uses.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.pop(name, None)
        self.program = Program("mlflow server", command, self.folder / "mlflow-server.log", env)
        started = time.monotonic()
        self.program.start()
        wait_until_up(self.program, f"{self.url}/health", timeout)
        say(f"MLflow server: started on {self.url} in {time.monotonic() - started:.1f} s (PostgreSQL, basic auth)")

    def create_accounts(self, model: str) -> None:
        """README "Scaling out", step 3: the pipeline, release and reader accounts (READ for everyone by
        default), the registered model created by the admin, EDIT on it for the pipeline, MANAGE for release."""
        admin = self.accounts.auth("admin")
        for name in ("pipeline", "release", "reader"):
            http_json(
                f"{self.url}/api/2.0/mlflow/users/create",
                {"username": name, "password": self.accounts.passwords[name]},
                auth=admin,
            )
        http_json(f"{self.url}/api/2.0/mlflow/registered-models/create", {"name": model}, auth=admin)
        for name, permission in Accounts.GRANTS.items():
            self.grant_model(model, name, permission)
        grants = ", ".join(f"{name} {permission}" for name, permission in Accounts.GRANTS.items())
        say(f"MLflow server: accounts pipeline, release, reader; registered model {model} ({grants})")

    def grant_model(self, model: str, username: str, permission: str) -> None:
        http_json(
            f"{self.url}/api/3.0/mlflow/users/permissions/grant",
            {"username": username, "resource_type": "registered_model", "resource_id": model, "permission": permission},
            auth=self.accounts.auth("admin"),
        )

    def stop(self, timeout: float = 30.0) -> None:
        if self.program is not None and self.program.running:
            started = time.monotonic()
            self.program.stop(timeout)
            say(f"MLflow server: stopped ({self.url}) in {time.monotonic() - started:.1f} s")


class PrefectServer:
    """`prefect server start` with its database in PostgreSQL, on its own port, its UI told where the API is."""

    def __init__(self, postgres: Postgres, folder: Path) -> None:
        self.postgres, self.folder = postgres, folder
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.api = f"{self.url}/api"
        self.home = folder / "prefect-home"
        self.program: Program | None = None

    def env(self) -> dict[str, str]:
        """What every Prefect client here needs: the API, a home of its own, no analytics."""
        return {
            "PREFECT_API_URL": self.api,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }

    def start(self, timeout: float = 180.0) -> None:
        command = [str(BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(self.port)]
        env = {
            **os.environ,
            **self.env(),
            "PREFECT_API_DATABASE_CONNECTION_URL": self.postgres.url("prefect", "asyncpg", "prefect"),
            # The UI is a page in the browser: it must call this server's API, not the default port 4200.
            "PREFECT_UI_API_URL": self.api,
            # A run held back by the deployment's concurrency limit tries again after 5 s, not 30.
            "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "5",
        }
        self.program = Program("prefect server", command, self.folder / "prefect-server.log", env)
        started = time.monotonic()
        self.program.start()
        deadline = time.monotonic() + timeout
        while True:  # /api/health answers before the database is migrated; /api/ready waits for it
            try:
                http_json(f"{self.api}/ready", timeout=5)
                break
            except (OSError, ValueError):
                if not self.program.running:
                    raise ServerError(f"prefect server exited while starting:\n{self.program.tail()}") from None
                if time.monotonic() > deadline:
                    raise ServerError(f"prefect server not ready in {timeout:.0f} s:\n{self.program.tail()}") from None
                time.sleep(0.5)
        say(f"Prefect server: started on {self.url} in {time.monotonic() - started:.1f} s (PostgreSQL); UI {self.url}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.program is not None and self.program.running:
            started = time.monotonic()
            self.program.stop(timeout)
            say(f"Prefect server: stopped ({self.url}) in {time.monotonic() - started:.1f} s")

    # --- the REST API, read the way the UI reads it ---

    def flow_run(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"{self.api}/flow_runs/{run_id}")
        return result

    def flow_runs(self, deployment_id: str | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"sort": "EXPECTED_START_TIME_ASC"}
        if deployment_id is not None:
            body["deployments"] = {"id": {"any_": [deployment_id]}}
        result: list[dict[str, Any]] = http_json(f"{self.api}/flow_runs/filter", body)
        return result

    def artifacts(self, flow_run_id: str) -> list[dict[str, Any]]:
        body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
        result: list[dict[str, Any]] = http_json(f"{self.api}/artifacts/filter", body)
        return result

    def logs(self, flow_run_id: str) -> list[str]:
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
        return [entry["message"] for entry in http_json(f"{self.api}/logs/filter", body)]

    def wait_final(self, run_id: str, timeout: float) -> dict[str, Any]:
        """The flow run once its state is final (Completed, Failed, Crashed, Cancelled)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.flow_run(run_id)
            if run["state"] and run["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                return run
            if time.monotonic() > deadline:
                raise ServerError(f"flow run {run_id} still {run['state']['name']} after {timeout:.0f} s")
            time.sleep(1)


def prefect_cli(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 180.0) -> str:
    """A `prefect` command; its output, or ServerError with it."""
    result = subprocess.run(
        [str(BIN / "prefect"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise ServerError(f"prefect {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def trigger(env: dict[str, str], run_env: dict[str, str] | None = None) -> str:
    """`prefect deployment run` of the retrain deployment; the new flow run's id.

    `run_env`: environment variables for this flow run's process only (its `env` job variable).
    """
    options = ["--job-variable", f"env={json.dumps(run_env)}"] if run_env else []
    out = prefect_cli("deployment", "run", DEPLOYMENT, *options, env=env)
    for line in out.splitlines():
        if "UUID:" in line:
            return line.split("UUID:")[1].strip()
    raise ServerError(f"no flow run id in `prefect deployment run` output:\n{out}")


def spawn_worker(name: str, project: Path, env: dict[str, str], log: Path) -> Program:
    """`prefect worker start` for the pool, running flows inside `project` (the deployment's pull step)."""
    command = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", name]
    worker_env = {**env, "EDGECOMPRESS_PROJECT": str(project)}
    program = Program(f"Prefect worker {name}", command, log, worker_env, cwd=project)
    program.start()
    return program


def wait_worker(program: Program, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while "started!" not in program.text():
        if not program.running:
            raise ServerError(f"{program.name} exited while starting:\n{program.tail()}")
        if time.monotonic() > deadline:
            raise ServerError(f"{program.name} did not start in {timeout:.0f} s:\n{program.tail()}")
        time.sleep(0.5)
    say(f"{program.name}: started on pool {POOL}")


def stop_worker(program: Program, timeout: float = 10.0) -> None:
    """A worker asked to stop (Prefect's SIGTERM handling: no new runs), killed after `timeout`.

    A worker whose Prefect server was gone for a while ("Service exceeded error threshold" in its
    log) takes the signal but never finishes stopping; at teardown it has no run left to finish, so
    the grace is short.
    """
    if program.running:
        program.stop(timeout)
        say(f"{program.name}: stopped")


class TeamSetup:
    """What a team runs, on one machine: PostgreSQL, MLflow and Prefect servers, pool, deployment, workers.

    `project` is the checkout the workers run flows in (the deployment's pull step); it needs
    prefect.yaml beside params.yaml.
    """

    def __init__(self, folder: Path, project: Path, bin_dir: Path) -> None:
        from tasks.params import load_params

        self.folder, self.project = folder, project
        self.model = load_params(project / "params.yaml").registry.model_name
        self.postgres = Postgres(bin_dir)
        self.accounts = Accounts()
        self.mlflow = MlflowServer(self.postgres, folder, self.accounts)
        self.prefect = PrefectServer(self.postgres, folder)
        self.workers: dict[str, Program] = {}

    def env(self, account: str = "pipeline") -> dict[str, str]:
        """The environment of a client: the two servers' URLs and one MLflow account, nothing else inherited."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
        return {
            **base,
            **self.prefect.env(),
            **self.accounts.env(account),
            "MLFLOW_TRACKING_URI": self.mlflow.url,
            # `mlflow models serve` starts uvicorn by name; DVC's stages call `edgecompress`.
            "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1",
        }

    def start(self, workers: int = 1) -> None:
        """Servers first (MLflow and Prefect side by side), then the pool, the deployment and the workers."""
        self.postgres.start()
        self.postgres.create_roles_and_databases()
        self.mlflow.prepare()
        errors: list[BaseException] = []

        def start(server: MlflowServer | PrefectServer) -> None:
            try:
                server.start()
            except BaseException as error:
                errors.append(error)

        def accounts() -> None:
            try:
                self.mlflow.create_accounts(self.model)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=start, args=(server,)) for server in (self.mlflow, self.prefect)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        users = threading.Thread(target=accounts)  # beside the pool, the deployment and the workers
        users.start()
        env = self.env()
        prefect_cli("work-pool", "create", POOL, "--type", "process", env=env)
        say(f"Prefect: work pool {POOL} (process) created")
        prefect_cli("deploy", "--name", "nightly-retrain", env=env, cwd=self.project)
        say(f"Prefect: deployment {DEPLOYMENT} created from {self.project.name}/prefect.yaml")
        # Polling every 3 s instead of 10: runs start sooner, and the suite is shorter.
        worker_env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "3"}
        for number in range(1, workers + 1):
            name = f"worker-{number}"
            self.workers[name] = spawn_worker(name, self.project, worker_env, self.folder / f"{name}.log")
        for program in self.workers.values():
            wait_worker(program)
        users.join()
        if errors:
            raise errors[0]

    def stop(self) -> None:
        """Workers (side by side), then the servers, then the database; each stop announced."""
        stopping = [threading.Thread(target=stop_worker, args=(program,)) for program in self.workers.values()]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()
        self.prefect.stop()
        self.mlflow.stop()
        self.postgres.stop()
