"""The README's "Scaling out", run for real: deployment runs on workers, a PostgreSQL-backed registry, serving.

One story, in order: a first deployment run registers version 1; two runs at once make one
version; the release owner promotes and rolls back; the pipeline's account, which registers, may
not move champion; a reader reads but may not promote; the champion is served; the Prefect UI
shows the run and its gate; then each server goes away in the middle of a run, and the next run
after it is back registers normally.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.params import write_overrides
from tests.browser import chromium
from tests.integration import servers
from tests.integration.servers import TeamSetup

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "edgecompress-digits"
EDGECOMPRESS = str(servers.BIN / "edgecompress")
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# --- what the tests look at, each through the real interface ---


def edgecompress(team: TeamSetup, account: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The `edgecompress` command in the project, as one MLflow account."""
    return subprocess.run(
        [EDGECOMPRESS, *args], cwd=team.project, env=team.env(account), capture_output=True, text=True, timeout=300
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single `error: ...` line of a refused command (and no traceback)."""
    assert result.returncode == 1, result.stdout[-1500:] + result.stderr[-1500:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def versions(team: TeamSetup) -> list[int]:
    """Registered versions, read from the registry's own PostgreSQL tables."""
    rows = team.postgres.query("mlflow", f"select version from model_versions where name = '{MODEL}'")
    return sorted(int(row[0]) for row in rows)


def aliases(team: TeamSetup) -> dict[str, int]:
    rows = team.postgres.query("mlflow", f"select alias, version from registered_model_aliases where name = '{MODEL}'")
    return {alias: int(version) for alias, version in rows}


def mlflow_runs(team: TeamSetup, status: str) -> list[str]:
    """Top-level MLflow run ids in a status, newest first (nested quantization trials left out)."""
    rows = team.postgres.query(
        "mlflow",
        f"select r.run_uuid from runs r where r.status = '{status}' and not exists "
        "(select 1 from tags t where t.run_uuid = r.run_uuid and t.key = 'mlflow.parentRunId') "
        "order by r.start_time desc",
    )
    return [row[0] for row in rows]


@contextmanager
def as_account(team: TeamSetup, account: str) -> Iterator[None]:
    """MLflow's own credential variables for in-process client calls, restored after."""
    wanted = {k: v for k, v in team.env(account).items() if k.startswith("MLFLOW_")}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def deploy_run(team: TeamSetup, timeout: float = 600) -> dict[str, Any]:
    """`prefect deployment run` of the retrain deployment, waited for until its state is final."""
    started = time.monotonic()
    run = team.prefect.wait_final(servers.trigger(team.env()), timeout)
    servers.say(f"flow run {run['name']}: {run['state']['type']} in {time.monotonic() - started:.0f} s")
    return run


def subflow(team: TeamSetup, parent_id: str) -> dict[str, Any]:
    """The compress flow run a retrain started."""
    runs = servers.http_json(
        f"{team.prefect.api}/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent_id]}}}
    )
    assert len(runs) == 1, runs
    result: dict[str, Any] = runs[0]
    return result


def change_params(team: TeamSetup, *overrides: str) -> None:
    """What a team member does between runs: edit params.yaml and commit it."""
    write_overrides(team.project / "params.yaml", list(overrides))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "commit", "-qam", f"params: {' '.join(overrides)}"], cwd=team.project, check=True)


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")


def worker_logs(team: TeamSetup) -> str:
    return "\n".join(program.text() for program in team.workers.values())


def ui_check_runs() -> bool:
    """Whether the Prefect UI checks can run: chromium is there (missing: a failure, unless skipped on purpose)."""
    try:
        chromium()
    except pytest.skip.Exception:
        return False
    return True


def page_text(url: str, folder: Path) -> tuple[str, str]:
    """(DOM, visible text) of a page in headless Chromium, after its scripts have run."""
    import html
    import re

    result = subprocess.run(
        [
            "chromium",
            *CHROMIUM_FLAGS,
            f"--user-data-dir={folder}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = result.stdout
    text = re.sub(r"<style.*?</style>|<script.*?</script>", " ", dom, flags=re.S)
    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))
    return dom, text


# --- the story ---


@pytest.fixture(scope="module")
def first_run(team: TeamSetup) -> dict[str, Any]:
    """The first deployment run on a fresh project: it trains, gates and registers version 1."""
    return deploy_run(team)


def test_deployment_run_on_a_worker_registers_a_gated_version(team: TeamSetup, first_run: dict[str, Any]) -> None:
    assert first_run["state"]["type"] == "COMPLETED", first_run["state"]
    assert first_run["work_pool_name"] == servers.POOL
    assert subflow(team, first_run["id"])["state"]["type"] == "COMPLETED"
    assert versions(team) == [1]
    assert aliases(team) == {"candidate": 1}
    sql = f"select key, value from model_version_tags where name = '{MODEL}' and version = 1"
    tags = dict(team.postgres.query("mlflow", sql))
    assert tags["gate.verdict"] == "passed"
    shipped = team.project / "data" / "tflite" / "model_int8.tflite"
    assert tags["model.md5"] == hashlib.md5(shipped.read_bytes()).hexdigest()
    # The project's own log lines (loggers tasks.*) reach the Prefect UI and the worker's console.
    registered = f"registered {MODEL} version 1 as candidate"
    logged = team.prefect.logs(subflow(team, first_run["id"])["id"])
    assert any(registered in message for message in logged), logged[-20:]
    assert any("train: running" in message for message in logged), logged[-20:]
    assert registered in worker_logs(team)
    # How long registering through the basic-auth server took (it was about 1.5 minutes when MLflow's
    # log_model fetched every metric's history one request at a time): reported, not asserted.
    body = {
        "flow_runs": {"id": {"any_": [subflow(team, first_run["id"])["id"]]}},
        "task_runs": {"name": {"like_": "register"}},
    }
    run_id = team.postgres.query("mlflow", f"select run_id from model_versions where name = '{MODEL}'")[0][0]
    (count,) = team.postgres.query("mlflow", f"select count(distinct key) from metrics where run_uuid = '{run_id}'")[0]
    for task_run in servers.http_json(f"{team.prefect.api}/task_runs/filter", body):
        servers.say(f"task {task_run['name']}: {task_run['total_run_time']:.1f} s (the run has {count} metrics)")


def test_artifacts_are_proxied_and_download_through_the_server(
    team: TeamSetup, first_run: dict[str, Any], tmp_path: Path
) -> None:
    import mlflow

    run_id = team.postgres.query("mlflow", f"select run_id from model_versions where name = '{MODEL}'")[0][0]
    (artifact_uri,) = team.postgres.query("mlflow", f"select artifact_uri from runs where run_uuid = '{run_id}'")[0]
    assert artifact_uri.startswith("mlflow-artifacts:"), artifact_uri  # clients never see the folder
    assert any(team.mlflow.artifacts.rglob("model_int8.tflite"))  # the server stored it there
    with as_account(team, "reader"):
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/1", dst_path=str(tmp_path)))
    downloaded = next(local.rglob("model_int8.tflite"))
    shipped = team.project / "data" / "tflite" / "model_int8.tflite"
    assert downloaded.read_bytes() == shipped.read_bytes()


def test_two_runs_at_once_make_one_version(team: TeamSetup, first_run: dict[str, Any]) -> None:
    change_params(team, "prune.final_sparsity=0.8")  # prune and what follows re-run
    before = versions(team)
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(servers.trigger(team.env()))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 2
    runs = [team.prefect.wait_final(run_id, 600) for run_id in ids]
    states = [(run["state"]["type"], run["state"]["message"] or "") for run in runs]
    servers.say(f"two runs at once: {states}")
    # One retrains; the other waits for the deployment's slot and then finds nothing to do,
    # or is refused by the project lock. Never two retrains, never two versions.
    assert all(kind in FINAL for kind, _ in states), states
    assert versions(team) == [*before, before[-1] + 1], states
    skipped_or_refused = [
        message for kind, message in states if "skipped: no change" in message or "already running" in message
    ]
    assert len(skipped_or_refused) == 1, states
    assert sum(kind == "COMPLETED" for kind, _ in states) >= 1, states
    # Both runs are there for the UI, with their final states.
    listed = {run["id"]: run["state"]["type"] for run in team.prefect.flow_runs(runs[0]["deployment_id"])}
    assert all(listed[run_id] in FINAL for run_id in ids), listed
    used = {run["work_pool_name"] for run in runs}
    assert used == {servers.POOL}


def test_release_owner_promotes_and_rolls_back_on_the_server(team: TeamSetup) -> None:
    first = edgecompress(team, "release", "promote", "--version", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "version 1 is now champion" in first.stdout
    second = edgecompress(team, "release", "promote")  # the candidate: version 2
    assert second.returncode == 0, second.stderr[-2000:]
    assert aliases(team) == {"candidate": 2, "champion": 2, "previous-champion": 1}
    back = edgecompress(team, "release", "rollback")
    assert back.returncode == 0, back.stderr[-2000:]
    assert aliases(team) == {"candidate": 2, "champion": 1, "previous-champion": 2}
    history = edgecompress(team, "release", "history", "--json")
    assert history.returncode == 0, history.stderr[-2000:]
    rows = {row["version"]: row for row in json.loads(history.stdout)}
    assert rows[1]["aliases"] == ["champion"] and rows[1]["gate"] == "passed"
    assert set(rows[2]["aliases"]) == {"candidate", "previous-champion"}


def test_pipeline_registers_but_may_not_move_champion(team: TeamSetup) -> None:
    """The workers' account (EDIT on the model) registered every version and moved `candidate` in the runs
    above; the server refuses it `champion` and `previous-champion` by every route that moves them."""
    before, registered = aliases(team), versions(team)
    assert before == {"candidate": 2, "champion": 1, "previous-champion": 2} and registered == [1, 2]
    for args in (["promote"], ["rollback"]):
        line = one_line_error(edgecompress(team, "pipeline", *args))
        assert team.mlflow.url in line and "'pipeline'" in line and "permission denied" in line, line
        assert f"MANAGE on registered model '{MODEL}'" in line, line
    assert aliases(team) == before
    # The REST routes MLflow's client and its UI (ajax-api) use, as any client could call them. The
    # release rule refuses what MLflow's EDIT allows: setting a release alias, renaming the model.
    pipeline = team.accounts.auth("pipeline")
    alias = "/mlflow/registered-models/alias"
    by_release_rule = [
        ("POST", f"/api/2.0{alias}", {"name": MODEL, "alias": "champion", "version": "2"}),
        ("POST", f"/ajax-api/2.0{alias}", {"name": MODEL, "alias": "Champion", "version": "2"}),
        ("POST", f"/api/2.0{alias}", {"name": MODEL, "alias": "previous-champion", "version": "1"}),
        # A rename would carry champion away and free the name for a model the pipeline creates (and manages).
        ("POST", "/api/2.0/mlflow/registered-models/rename", {"name": MODEL, "new_name": f"{MODEL}-moved"}),
    ]
    # MLflow's own rules already ask MANAGE for these: deleting the alias, the champion's version, the model.
    by_mlflow = [
        ("DELETE", f"/api/2.0{alias}", {"name": MODEL, "alias": "champion"}),
        ("DELETE", "/api/2.0/mlflow/model-versions/delete", {"name": MODEL, "version": "1"}),
        ("DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": MODEL}),
    ]
    for method, path, body in by_release_rule + by_mlflow:
        with pytest.raises(urllib.error.HTTPError) as refused:
            servers.http_json(f"{team.mlflow.url}{path}", body, auth=pipeline, method=method)
        assert refused.value.code == 403, (method, path, body)
        text = refused.value.read().decode()
        if (method, path, body) in by_release_rule:
            assert "needs MANAGE on registered model" in text, (method, path, text)
    assert aliases(team) == before and versions(team) == registered
    # EDIT still moves `candidate`, by the same route.
    for version in ("1", "2"):
        body = {"name": MODEL, "alias": "candidate", "version": version}
        servers.http_json(f"{team.mlflow.url}/api/2.0{alias}", body, auth=pipeline)
        assert aliases(team)["candidate"] == int(version)


def test_a_model_the_pipeline_created_is_handed_over_by_revoke_then_grant(team: TeamSetup) -> None:
    """README "Scaling out", step 3: the pipeline ran before the admin created the model, so it holds MANAGE
    as its creator; a second grant is refused, the revoke and then the grant of EDIT take release from it."""
    model, url = f"{MODEL}-handover", team.mlflow.url
    pipeline, admin = team.accounts.auth("pipeline"), team.accounts.auth("admin")

    def held() -> str:
        query = f"username=pipeline&resource_type=registered_model&resource_id={model}"
        return servers.http_json(f"{url}/api/3.0/mlflow/users/permissions/get?{query}", auth=admin)["permission"]

    servers.http_json(f"{url}/api/2.0/mlflow/registered-models/create", {"name": model}, auth=pipeline)
    assert held() == "MANAGE"
    with pytest.raises(urllib.error.HTTPError) as twice:
        team.mlflow.grant_model(model, "pipeline", "EDIT")
    assert "RESOURCE_ALREADY_EXISTS" in twice.value.read().decode()
    grant = {"username": "pipeline", "resource_type": "registered_model", "resource_id": model}
    servers.http_json(f"{url}/api/3.0/mlflow/users/permissions/revoke", grant, auth=admin)
    team.mlflow.grant_model(model, "pipeline", "EDIT")
    assert held() == "EDIT"
    with pytest.raises(urllib.error.HTTPError) as refused:
        body = {"name": model, "alias": "champion", "version": "1"}
        servers.http_json(f"{url}/api/2.0/mlflow/registered-models/alias", body, auth=pipeline)
    assert refused.value.code == 403 and "needs MANAGE" in refused.value.read().decode()
    servers.http_json(f"{url}/api/2.0/mlflow/registered-models/delete", {"name": model}, auth=admin, method="DELETE")


def test_reader_reads_and_loads_but_may_not_move_champion(team: TeamSetup) -> None:
    import mlflow

    history = edgecompress(team, "reader", "history")
    assert history.returncode == 0, history.stderr[-2000:]
    lineage = edgecompress(team, "reader", "lineage", "champion", "--json")
    assert lineage.returncode == 0, lineage.stderr[-2000:]
    record = json.loads(lineage.stdout)
    assert record["version"] == "1" and record["gate"]["verdict"] == "passed"
    assert record["data"]["data/raw"]  # DVC hash from the run's dvc.lock, read through the server
    with as_account(team, "reader"):
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    assert model.metadata.get_input_schema() is not None
    before = aliases(team)
    for args in (["promote", "--version", "2"], ["rollback"]):
        line = one_line_error(edgecompress(team, "reader", *args))
        assert team.mlflow.url in line and "'reader'" in line and "permission denied" in line.lower(), line
    assert aliases(team) == before
    wrong = {**team.env("reader"), "MLFLOW_TRACKING_PASSWORD": "not-the-password"}
    result = subprocess.run(
        [EDGECOMPRESS, "history"], cwd=team.project, env=wrong, capture_output=True, text=True, timeout=300
    )
    assert "MLFLOW_TRACKING_PASSWORD" in one_line_error(result)


def test_served_champion_answers_like_tflitemodel(team: TeamSetup, tmp_path: Path) -> None:
    import mlflow

    from tasks.layout import Layout
    from tasks.params import load_params
    from tasks.stages.images import load_calibration
    from tasks.stages.inference import TFLiteModel

    layout = Layout(team.project)
    images = load_calibration(layout, load_params(layout.params_file).data).head(16).arrays()[0].astype(np.float32)
    with as_account(team, "reader"):
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion", dst_path=str(tmp_path)))
    expected = TFLiteModel(next(local.rglob("model_int8.tflite"))).predict(images)

    port = servers.free_port()
    command = [
        str(servers.BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{MODEL}@champion",
        "--env-manager",
        "local",  # the environment it runs in already has the model's requirements
        "-h",
        servers.HOST,
        "-p",
        str(port),
        "-w",
        "1",
    ]
    serving = servers.Program("mlflow models serve", command, tmp_path / "serve.log", team.env("reader"))
    serving.start()
    try:
        servers.wait_until_up(serving, f"http://{servers.HOST}:{port}/ping", timeout=180)
        servers.say(f"mlflow models serve: models:/{MODEL}@champion on port {port}")
        answer = servers.http_json(f"http://{servers.HOST}:{port}/invocations", {"inputs": images.tolist()})
    finally:
        serving.stop()
        servers.say("mlflow models serve: stopped")
    served = np.asarray(answer["predictions"], dtype=np.float32)
    assert served.shape == expected.shape
    np.testing.assert_allclose(served, expected, atol=1e-6)


def test_prefect_ui_shows_the_run_and_its_gate_table(team: TeamSetup, first_run: dict[str, Any]) -> None:
    chromium()  # a failure if missing, unless skipped on purpose (EDGECOMPRESS_SKIP_BROWSER_TESTS=1)
    assert team.prefect.port != 4200
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        _, run_page = page_text(f"{team.prefect.url}/runs/flow-run/{first_run['id']}", Path(profile))
    assert "Can't connect to Server API" not in run_page
    assert first_run["name"] in run_page and "Completed" in run_page and "nightly-retrain" in run_page, run_page[:2000]
    compress = subflow(team, first_run["id"])
    (gate,) = [a for a in team.prefect.artifacts(compress["id"]) if a["key"] == "gate"]
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        dom, artifact_page = page_text(f"{team.prefect.url}/artifacts/artifact/{gate['id']}", Path(profile))
    assert "<table" in dom, artifact_page[:2000]  # the markdown table, rendered
    for cell in ("check", "observed", "threshold", "verdict", "accuracy", "pass"):
        assert cell in artifact_page, artifact_page[:2000]


def test_serve_prints_a_ui_address_whose_ui_finds_its_api(team: TeamSetup) -> None:
    """`edgecompress serve` starts its own Prefect server on a free port; its UI must call that port."""
    look_at_ui = ui_check_runs()  # before serve starts: a missing chromium fails at once
    env = {k: v for k, v in team.env().items() if not k.startswith(("PREFECT_API_URL", "MLFLOW_"))}
    command = [EDGECOMPRESS, "serve", "--cron", "0 0 1 1 *"]  # a schedule that will not fire during the test
    serve = servers.Program("edgecompress serve", command, team.folder / "serve.log", env, cwd=team.project)
    serve.start()
    try:
        found = wait_for(lambda: re.search(r"Prefect UI: (http://[^\s;]+)", serve.text()), 240, "the UI address")
        ui = found.group(1).rstrip("/")
        settings = servers.http_json(f"{ui}/ui-settings")
        assert settings["api_url"] == f"{ui}/api"
        if look_at_ui:
            with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
                _, page = page_text(f"{ui}/runs", Path(profile))
            assert "Can't connect to Server API" not in page, page[:2000]
    finally:
        if serve.process is not None and serve.running:
            serve.process.send_signal(signal.SIGINT)  # Ctrl-C, as a user stops it
            try:
                serve.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                # Not what this test is about (tests/flows/test_retrain.py checks Ctrl-C), but worth a
                # report: every thread's stack, written into serve.log.
                serve.process.send_signal(signal.SIGUSR1)
                time.sleep(2)
                servers.say(f"edgecompress serve: still running 60 s after Ctrl-C; stacks in {serve.log}")
        serve.stop()
    assert "Traceback" not in serve.text()


def test_mlflow_server_lost_mid_run_fails_in_one_line_and_registers_nothing(team: TeamSetup) -> None:
    change_params(team, "prune.final_sparsity=0.75")
    before, named = versions(team), aliases(team)
    finished = set(mlflow_runs(team, "FINISHED"))
    running_before = set(mlflow_runs(team, "RUNNING"))
    run_id = servers.trigger(team.env())
    # The MLflow run exists from the start of compress; the stages run after it, without MLflow.
    started = wait_for(lambda: set(mlflow_runs(team, "RUNNING")) - running_before, 300, "the MLflow run")
    team.mlflow.stop(timeout=5)
    failed = team.prefect.wait_final(run_id, 300)
    servers.say(f"flow run {failed['name']}: {failed['state']['type']} ({failed['state']['message']})")
    assert failed["state"]["type"] == "FAILED", failed["state"]
    assert f"tracking server {team.mlflow.url} is unreachable" in failed["state"]["message"]
    logged = [line for line in worker_logs(team).splitlines() if f"tracking server {team.mlflow.url}" in line]
    assert logged and not any("Traceback" in line for line in logged)
    team.mlflow.start()
    # Nothing half-registered: no version, aliases as they were, the run not FINISHED.
    assert versions(team) == before and aliases(team) == named
    assert not (set(mlflow_runs(team, "FINISHED")) - finished) & started


def test_prefect_server_lost_mid_run_fails_in_one_line_and_registers_nothing(team: TeamSetup) -> None:
    change_params(team, "prune.final_sparsity=0.7")
    before = versions(team)
    running_before = set(mlflow_runs(team, "RUNNING"))
    # Prefect's client retries 5 times, 2 + 4 + ... + 32 s: about a minute before it gives up. This
    # run retries 4 times (about 30 s), still several times the server's restart (6 to 13 s here).
    run_id = servers.trigger(team.env(), run_env={"PREFECT_CLIENT_MAX_RETRIES": "4"})
    started = wait_for(lambda: set(mlflow_runs(team, "RUNNING")) - running_before, 300, "the MLflow run")
    team.prefect.stop(timeout=5)
    lost = f"Prefect server {team.prefect.api} is unreachable"
    wait_for(lambda: lost in worker_logs(team), 300, "the flow run to report the lost server", interval=1)
    servers.say("the flow run reported the lost Prefect server; starting it again")
    # Back within the client's retry window, the run's final state still reaches the server.
    team.prefect.start()
    failed = team.prefect.wait_final(run_id, 240)
    assert failed["state"]["type"] == "FAILED", failed["state"]
    assert lost in failed["state"]["message"], failed["state"]
    assert all(program.running for program in team.workers.values()), "a worker did not survive the outage"
    assert versions(team) == before
    assert set(mlflow_runs(team, "FAILED")) & started  # MLflow was there: the run is marked FAILED


def test_next_run_after_both_servers_are_back_registers_normally(team: TeamSetup) -> None:
    before = versions(team)
    after = deploy_run(team)
    assert after["state"]["type"] == "COMPLETED", after["state"]
    assert versions(team) == [*before, before[-1] + 1]
    assert aliases(team)["candidate"] == before[-1] + 1
    # The interrupted run had recorded its stages: this one gates and registers them, without retraining.
    compress = subflow(team, after["id"])
    (report,) = [a for a in team.prefect.artifacts(compress["id"]) if a["key"] == "run"]
    assert "| train | skipped |" in report["data"] and "| prune | skipped |" in report["data"], report["data"]


def test_no_password_reaches_a_log_or_the_project(team: TeamSetup) -> None:
    """Accounts travel in MLflow's credential variables only, database passwords in the servers' settings:
    not in params.yaml, not in any log."""
    logs = [program.text() for program in team.workers.values()]
    logs += [program.text() for program in (team.mlflow.program, team.prefect.program) if program is not None]
    logs += [(team.project / "params.yaml").read_text()]
    passwords = {**team.accounts.passwords, **{f"database role {r}": p for r, p in team.postgres.passwords.items()}}
    for name, password in passwords.items():
        assert not any(password in text for text in logs), f"{name}'s password was written somewhere"
