"""Shared fixtures: the project's own params with tiny budgets, and throwaway git + DVC projects."""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import tasks  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from tasks.layout import Layout
from tasks.params import Params, apply_overrides, parse_params

REPO = Path(__file__).resolve().parent.parent

# Commands that start a Prefect server of their own keep its database in PREFECT_HOME: one of the
# test session's own (set before anything imports Prefect), not the developer's, and not one that
# another pytest process (a second worker, a second checkout) writes at the same time.
_PREFECT_HOME = tempfile.mkdtemp(prefix="edgecompress-tests-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)

# Small budgets: enough epochs to learn the digits, few enough for a unit test.
TINY = [
    "train.epochs=6",
    "prune.epochs=2",
    "prune.frequency=5",
    "cluster.epochs=1",
    "data.calibration_size=50",
    "data.min_images_per_class=2",  # the tests' own folders hold a handful of images per class
]

# Whole-project tests that do not read them skip the per-layer debugger's extra conversion and
# time 5 invocations per .tflite, not 200 (tests/flows/test_compress.py keeps both on: the default run).
QUICK = ["quantize.debug_layers=false", "evaluate.latency_runs=5"]

# A tracking server nothing answers at (a closed port on this machine's loopback), with no retries:
# the tests about it check the one-line message, not the back-off (about 7 s) before it.
UNREACHABLE_TRACKING = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}

# Whole-project tests check the machinery, not the tiny model's quality: thresholds it always meets,
# and no comparison with the champion, which would hinge on which of two nearly equal models
# training produced. (tests/stages/test_gate.py checks the thresholds themselves; the flow tests force
# the failures they are about explicitly.)
LOOSE_GATE = ["gate.min_accuracy=0.5", "gate.max_accuracy_drop=0.2", "gate.max_regression_vs_champion=null"]

# What a fresh clone holds that the pipeline needs; everything under data/ is generated.
PROJECT_FILES = ("params.yaml", "dvc.yaml", "pyproject.toml", ".dvcignore", ".gitignore", "tasks", "flows", ".dvc")


# `make test` runs each test file whole on one pytest-xdist worker, in the order collected: the
# longest files first (about 3 to 7 min of one worker each on 2 cores), so that none of them starts
# last while the other worker idles. Every other file keeps its place after them.
LONGEST_FIRST = (
    "integration/test_team_setup.py",
    "stages/test_models.py",
    "flows/test_compress.py",
    "flows/test_faults.py",
    "flows/test_retrain.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.relative_to(REPO / "tests").as_posix()
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a rank, the collected order


def repo_params(overrides: list[str] | None = None) -> Params:
    """The repository's params.yaml with the tiny budgets and any further overrides."""
    raw: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())
    return parse_params(apply_overrides(raw, [*TINY, *(overrides or [])]))


@pytest.fixture
def params() -> Params:
    return repo_params()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Layout, Params]:
    """A folder where prepare, train, prune and cluster have run once on the tiny budget (shared, read-only)."""
    from tasks.stages import STAGES

    layout = Layout(tmp_path_factory.mktemp("trained"))
    params = repo_params()
    for name in ("prepare", "train", "prune", "cluster"):
        STAGES[name](layout, params)
    return layout, params


BIN = Path(sys.executable).parent
EDGECOMPRESS = str(BIN / "edgecompress")


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The DVC command line of this environment, with its `edgecompress` on PATH for `dvc repro`."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )


def make_project(target: Path, overrides: list[str] | None = None) -> Layout:
    """A copy of the project as a fresh clone would have it, as its own git + DVC repository."""
    target.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, target / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache", "config.local")
            )
        else:
            shutil.copy2(source, target / name)
    if overrides is not None:
        from tasks.params import write_overrides

        write_overrides(target / "params.yaml", overrides)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    subprocess.run([*git, "add", "-A"], cwd=target, check=True)
    subprocess.run([*git, "commit", "-qm", "project"], cwd=target, check=True)
    # Keep DVC's remote for this copy inside the test's own folder: `dvc remote add --local -d`, through
    # DVC's own config API rather than a command that imports DVC again for every project.
    from dvc.config import Config

    remote = target.parent / f"{target.name}-dvcstore"
    with Config(dvc_dir=str(target / ".dvc")).edit("local") as config:
        config["remote"]["local"] = {"url": str(remote)}
        config["core"]["remote"] = "local"
    return Layout(target)


@pytest.fixture(scope="module", autouse=True)
def _tracking_store_stays_in_its_file() -> Iterator[None]:
    """mlflow.set_tracking_uri and set_experiment export these variables: a test file that sets a
    store must not hand it to the next file on the same pytest-xdist worker."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def clean_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use each project's own MLflow store, whatever the developer's shell has set."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect API for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    import flows  # noqa: F401  (Prefect settings for a small machine)

    # None: wait as long as PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS allows (slow on 2 cores).
    with prefect_test_harness(server_startup_timeout=None):
        yield
        gc.freeze()  # see flows.compress.flush_prefect_services: keeps the harness's drain from hanging


@pytest.fixture(scope="session")
def prefect_api(prefect_server: None) -> str:
    """The session's Prefect API URL, for `edgecompress` subprocesses to share.

    Without PREFECT_API_URL each command starts (and stops) a Prefect server of its own, as on a
    user's machine: about 8 s of a 2-core machine per command. The tests about that default path
    (kill -9, `serve`, a run with nothing to do) leave the variable out; the rest share this server.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "prefect_test_harness sets PREFECT_API_URL"
    return str(url)


def cli_env(prefect_api: str | None = None) -> dict[str, str]:
    """The environment of an `edgecompress` subprocess: each project's own MLflow store, and Prefect's API
    at `prefect_api` (None: the command starts a server of its own)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    return env


def edgecompress(
    *args: str, cwd: Path, prefect_api: str | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """`edgecompress ARGS` in `cwd` as a user runs it (cli_env), its output captured."""
    return subprocess.run(
        [EDGECOMPRESS, *args], cwd=cwd, capture_output=True, text=True, env=cli_env(prefect_api), timeout=timeout
    )
