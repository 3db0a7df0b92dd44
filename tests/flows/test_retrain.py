"""Scheduled retraining as a user and a scheduler run it: skip, retrain on new data, overlap, serve, checkout."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tasks import registry
from tasks.layout import Layout
from tasks.params import write_overrides
from tests.conftest import EDGECOMPRESS, LOOSE_GATE, QUICK, TINY, cli_env, dvc, edgecompress, make_project

pytestmark = pytest.mark.slow

MODEL = "edgecompress-digits"


def versions(layout: Layout) -> list[str]:
    uri = f"sqlite:///{layout.root / 'mlflow.db'}"
    return sorted(str(v.version) for v in registry.client(uri).search_model_versions(f"name='{MODEL}'"))


def dvc_clean(layout: Layout) -> bool:
    return json.loads(dvc("status", "--json", cwd=layout.root).stdout or "{}") == {}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Layout:
    layout = make_project(tmp_path_factory.mktemp("retrain") / "project", overrides=TINY + LOOSE_GATE + QUICK)
    first = edgecompress("retrain", cwd=layout.root, prefect_api=prefect_api)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "changed: prepare" in first.stdout
    assert "dvc push:" in first.stdout
    return layout


def test_first_retrain_runs_registers_and_pushes(project: Layout) -> None:
    assert versions(project) == ["1"]
    assert dvc_clean(project)
    remote = project.root.parent / f"{project.root.name}-dvcstore"
    assert any(remote.rglob("*")), "outputs pushed to the DVC remote"
    assert json.loads(dvc("status", "--cloud", "--json", cwd=project.root).stdout or "{}") == {}


def test_no_change_is_skipped_and_registers_nothing(project: Layout) -> None:
    result = edgecompress("retrain", cwd=project.root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped: no change" in result.stdout
    # No Prefect server is configured: the skip is decided before one would be started.
    assert "not recorded in Prefect" in result.stdout
    assert versions(project) == ["1"]


def test_an_added_image_retrains_once_when_two_retrains_start_together(project: Layout, prefect_api: str) -> None:
    source = next((project.raw / "train" / "3").glob("*.png"))
    shutil.copy(source, project.raw / "train" / "3" / "added.png")
    before = versions(project)
    results: list[subprocess.CompletedProcess[str]] = []

    def retrain() -> None:
        results.append(edgecompress("retrain", cwd=project.root, prefect_api=prefect_api))

    threads = [threading.Thread(target=retrain) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.5)
    for thread in threads:
        thread.join()
    codes = sorted(result.returncode for result in results)
    assert codes == [0, 1], [r.stderr[-1500:] for r in results]
    done = next(result for result in results if result.returncode == 0)
    assert "prepare (changed outs: data/raw modified)" in done.stdout
    refused = next(result for result in results if result.returncode == 1)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "already running" in errors[0]
    assert versions(project) == [*before, str(len(before) + 1)]
    assert dvc_clean(project)
    assert (project.raw / "train" / "3" / "added.png").is_file()  # the user's image is kept


def test_checkout_restores_a_version_into_its_own_folder(project: Layout, tmp_path: Path) -> None:
    lock_before = (project.root / "dvc.lock").read_text()
    target = tmp_path / "v1"
    result = edgecompress("checkout", f"{MODEL}@1", "--into", str(target), cwd=project.root)
    assert result.returncode == 0, result.stderr[-2000:]
    uri = f"sqlite:///{project.root / 'mlflow.db'}"
    _, lock = registry.recorded_lock(uri, MODEL, "1")
    recorded = {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}
    model = target / "data" / "tflite" / "model_int8.tflite"
    assert hashlib.md5(model.read_bytes()).hexdigest() == recorded["data/tflite/model_int8.tflite"]
    assert not (target / "data" / "raw" / "train" / "3" / "added.png").exists()  # v1 predates that image
    assert not list(target.rglob("*.dvc"))
    assert (project.root / "dvc.lock").read_text() == lock_before  # the work tree is untouched
    assert dvc_clean(project)


def test_checkout_names_missing_objects(project: Layout, tmp_path: Path) -> None:
    uri = f"sqlite:///{project.root / 'mlflow.db'}"
    _, lock = registry.recorded_lock(uri, MODEL, "1")
    md5 = next(
        o["md5"] for s in lock["stages"].values() for o in s.get("outs", []) if o["path"] == "data/reports/train.json"
    )
    for store in (project.root / ".dvc" / "cache", project.root.parent / f"{project.root.name}-dvcstore"):
        for path in store.rglob(md5[2:]):
            path.unlink()
    result = edgecompress("checkout", "1", "--into", str(tmp_path / "gone"), cwd=project.root)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "data/reports/train.json" in errors[0]
    assert not (tmp_path / "gone").exists()


def test_serve_runs_on_schedule_shows_the_project_logs_and_stops_on_ctrl_c(project: Layout, tmp_path: Path) -> None:
    # A gate threshold changed: the first scheduled run gates again without retraining (the project's
    # own log lines say that every stage is skipped), and the runs after it have nothing to do.
    write_overrides(project.params_file, ["gate.min_accuracy=0.49"])
    server = subprocess.Popen(
        [EDGECOMPRESS, "serve", "--interval", "5"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),  # serve starts and owns its server, as on a user's machine
        start_new_session=True,  # a terminal's foreground process group of its own
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(server.stdout or []), daemon=True)
    reader.start()

    def hints() -> list[str]:
        return [line.split("from any shell: ", 1)[1].strip() for line in lines if "from any shell: " in line]

    # The command is printed before the deployment exists; the first run means it does.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (hints() and any("Beginning flow run" in line for line in lines)):
        time.sleep(1)
    # The command serve prints starts a run as printed, from a shell that knows nothing of serve's server.
    triggered, started = None, ""
    if hints():
        shell_env = {k: v for k, v in cli_env().items() if not k.startswith("PREFECT_API")}
        triggered = subprocess.run(
            ["bash", "-c", hints()[0]], cwd=tmp_path, env=shell_env, capture_output=True, text=True, timeout=120
        )
        created = re.search(r"Created flow run '([^']+)'", triggered.stdout)
        started = created.group(1) if created else ""

    def done() -> bool:  # a scheduled run found nothing to do, and the run started by hand has ended
        finished = not started or any(f"Flow run '{started}' - Finished" in line for line in lines)
        return finished and any("skipped: no change" in line for line in lines)

    while time.monotonic() < deadline + 120 and not done():
        time.sleep(0.2)  # Ctrl-C soon after a run ended, before the next scheduled one starts
    saw_run = done()
    # Ctrl-C in a terminal: SIGINT to the whole process group, the next scheduled run's process included.
    os.killpg(server.pid, signal.SIGINT)
    try:
        code: int | None = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.send_signal(signal.SIGUSR1)  # every thread's stack, into the output below
        time.sleep(2)
        code = None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        reader.join(timeout=10)
    assert saw_run, "".join(lines[-40:])
    assert code == 0, "".join(lines[-120:])
    assert not any("Traceback" in line for line in lines), "".join(lines[-80:])
    # The flow runs' own lines (loggers tasks.*), not only Prefect's, reach serve's console.
    assert any("tasks.bookkeeping.plan" in line and "train: up to date, skipped" in line for line in lines), "".join(
        lines[-80:]
    )
    assert triggered is not None, "".join(lines[:20])
    assert triggered.returncode == 0, triggered.stdout[-2000:] + triggered.stderr[-2000:]
    assert "Created flow run" in triggered.stdout, triggered.stdout[-2000:]


@pytest.mark.parametrize("remote", ["unreachable", "dangling"])
def test_a_failed_push_says_the_version_is_registered(
    project: Layout, prefect_api: str, tmp_path: Path, remote: str
) -> None:
    from dvc.config import Config

    (tmp_path / "dangling").symlink_to(tmp_path / "gone")  # a remote folder on a disk that went away
    url = {"unreachable": "http://127.0.0.1:9/store", "dangling": str(tmp_path / "dangling" / "store")}[remote]
    saved = project.params_file.read_text()
    with Config(dvc_dir=str(project.root / ".dvc")).edit("local") as config:
        config["remote"]["down"] = {"url": url}
        config["core"]["remote"] = "down"
    # A setting only the gate reads, at a value no other test uses (the module's tests share the
    # project, and serve's test leaves its own): the retrain gates again, re-registers nothing, pushes.
    threshold = {"unreachable": "0.46", "dangling": "0.47"}[remote]
    write_overrides(project.params_file, [f"gate.min_accuracy={threshold}"])
    assert project.params_file.read_text() != saved
    try:
        result = edgecompress("retrain", cwd=project.root, prefect_api=prefect_api)
    finally:
        project.params_file.write_text(saved)
        with Config(dvc_dir=str(project.root / ".dvc")).edit("local") as config:
            config["core"]["remote"] = "local"
            del config["remote"]["down"]
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert f"version {versions(project)[-1]} is registered" in errors[0] and "run `dvc push`" in errors[0]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(result.stderr.splitlines()) < 100, result.stderr[-3000:]  # not one line per file DVC tried
