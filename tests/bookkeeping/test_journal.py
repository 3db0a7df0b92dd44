"""What a dead run leaves is cleaned up by the next run, before anything else happens.

The kill -9 of a real run, in every stage, is tests/flows/test_faults.py; these tests leave the files a
killed process would leave, and take the lock as the next command does.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import mlflow
import pytest

from tasks.bookkeeping import journal
from tasks.bookkeeping.journal import JournalError
from tasks.bookkeeping.lock import project_lock


def die_with_overrides(root: Path, text: str) -> str:
    """What `run -S` leaves when killed: the journal, and params.yaml with the overrides in it."""
    original = (root / "params.yaml").read_text()
    journal.begin_overrides(root, original, 0o644, text)
    (root / "params.yaml").write_text(text)
    return original


def test_the_next_run_restores_a_dead_runs_params(root: Path) -> None:
    original = die_with_overrides(root, (root / "params.yaml").read_text().replace("epochs: 30", "epochs: 40"))
    with project_lock(root, wait_s=0):
        assert (root / "params.yaml").read_text() == original
    assert not journal.params_journal(root).exists()
    assert (root / "params.yaml").stat().st_mode & 0o777 == 0o644


def test_params_edited_after_the_dead_run_stop_the_next_one(root: Path) -> None:
    die_with_overrides(root, (root / "params.yaml").read_text().replace("epochs: 30", "epochs: 40"))
    edited = (root / "params.yaml").read_text().replace("epochs: 40", "epochs: 50")
    (root / "params.yaml").write_text(edited)
    refused = r"params\.yaml has changed since.*delete params\.yaml\.journal$"
    with pytest.raises(JournalError, match=refused), project_lock(root, wait_s=0):
        pass
    assert (root / "params.yaml").read_text() == edited  # nothing of the user's is lost
    assert journal.params_journal(root).exists()


def test_a_failed_run_restores_and_a_successful_one_keeps(root: Path) -> None:
    original = die_with_overrides(root, "changed: true\n")
    journal.end_overrides(root, keep=False)
    assert (root / "params.yaml").read_text() == original
    die_with_overrides(root, "kept: true\n")
    journal.end_overrides(root, keep=True)
    assert (root / "params.yaml").read_text() == "kept: true\n"
    assert not journal.params_journal(root).exists()


def test_a_dead_runs_mlflow_run_is_marked_killed(root: Path, store: mlflow.MlflowClient) -> None:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("dead"))
    journal.begin_run(root)
    journal.note_mlflow_run(root, uri, run.info.run_id)  # then the process is killed
    with project_lock(root, wait_s=0):
        assert client.get_run(run.info.run_id).info.status == "KILLED"
        assert json.loads(journal.run_record(root).read_text())["mlflow"] is None  # this run's own record
    assert not journal.run_record(root).exists()


# --- what a run registered stands only if it finished with its overrides kept -------------------


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow store with its tables made, once: each test copies it (making them takes seconds)."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(root: Path, empty_store: Path) -> mlflow.MlflowClient:
    """The project's own MLflow store (mlflow.db), empty."""
    shutil.copy(empty_store, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def registered_by(root: Path, status: str | None) -> tuple[mlflow.MlflowClient, str]:
    """An MLflow run (left RUNNING, or ended with `status`) that registered version 1 of "m"; its client and id."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run(client.create_experiment("runs"))
    client.create_registered_model("m")
    client.create_model_version("m", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    if status:
        client.set_terminated(run.info.run_id, status=status)
    journal.note_mlflow_run(root, uri, run.info.run_id)
    return client, run.info.run_id


def versions(client: mlflow.MlflowClient) -> list[str]:
    return [str(v.version) for v in client.search_model_versions("name = 'm'")]


def test_a_version_registered_under_overrides_never_confirmed_is_voided(root: Path, store: mlflow.MlflowClient) -> None:
    # Killed after its MLflow run FINISHED, before the command kept its -S overrides: the version
    # was gated under settings that params.yaml is about to lose.
    journal.begin_run(root)
    die_with_overrides(root, (root / "params.yaml").read_text().replace("min_accuracy: 0.9", "min_accuracy: 0.5"))
    client, _ = registered_by(root, "FINISHED")
    with project_lock(root, wait_s=0) as recovered:
        assert recovered.params_restored and recovered.voided == ("m version 1",)
    assert versions(client) == []


def test_a_finished_run_without_overrides_keeps_its_version(root: Path, store: mlflow.MlflowClient) -> None:
    journal.begin_run(root)  # killed after everything that matters (its settings are the committed ones)
    client, _ = registered_by(root, "FINISHED")
    with project_lock(root, wait_s=0) as recovered:
        assert recovered.voided == ()
    assert versions(client) == ["1"]


def test_a_run_that_fails_after_registering_voids_its_version(root: Path, store: mlflow.MlflowClient) -> None:
    # Registered, then promotion or publishing raised: the MLflow run ended FAILED.
    with pytest.raises(RuntimeError), project_lock(root, wait_s=0):
        client, _ = registered_by(root, "FAILED")
        raise RuntimeError("promotion failed")
    assert versions(client) == []
    assert not journal.run_record(root).exists()


def test_a_failure_after_the_mlflow_run_finished_keeps_the_version(root: Path, store: mlflow.MlflowClient) -> None:
    # Registered and finished under the committed settings, then `dvc push` failed: the version stands.
    with pytest.raises(RuntimeError), project_lock(root, wait_s=0):
        client, _ = registered_by(root, "FINISHED")
        raise RuntimeError("dvc push failed")
    assert versions(client) == ["1"]


def test_a_failed_run_with_overrides_voids_its_version(root: Path, store: mlflow.MlflowClient) -> None:
    original = (root / "params.yaml").read_text()
    with pytest.raises(RuntimeError), project_lock(root, wait_s=0):
        die_with_overrides(root, original.replace("min_accuracy: 0.9", "min_accuracy: 0.5"))
        client, _ = registered_by(root, "FINISHED")
        try:
            raise RuntimeError("failed after its MLflow run ended")
        except RuntimeError:
            journal.end_overrides(root, keep=False)
            raise
    assert versions(client) == []
    assert (root / "params.yaml").read_text() == original


def test_a_voided_champion_hands_back_to_the_previous_one(root: Path, store: mlflow.MlflowClient) -> None:
    uri, client = f"sqlite:///{root / 'mlflow.db'}", store
    experiment = client.create_experiment("runs")
    client.create_registered_model("m")
    before = client.create_run(experiment).info.run_id
    client.create_model_version("m", "runs:/x/model", run_id=before)
    client.set_registered_model_alias("m", "previous-champion", "1")
    journal.begin_run(root)
    dead = client.create_run(experiment).info.run_id  # auto_promote made its version champion, then it died
    client.create_model_version("m", "runs:/y/model", run_id=dead)
    client.set_registered_model_alias("m", "champion", "2")
    journal.note_mlflow_run(root, uri, dead)
    with project_lock(root, wait_s=0):
        pass
    assert versions(client) == ["1"]
    assert str(client.get_model_version_by_alias("m", "champion").version) == "1"


def test_recovery_that_stops_on_the_journal_still_closes_the_dead_run(root: Path, store: mlflow.MlflowClient) -> None:
    journal.begin_run(root)
    die_with_overrides(root, (root / "params.yaml").read_text().replace("epochs: 30", "epochs: 40"))
    client, run_id = registered_by(root, None)  # still RUNNING when it was killed
    (root / "params.yaml").write_text((root / "params.yaml").read_text().replace("epochs: 40", "epochs: 50"))
    with pytest.raises(JournalError, match="has changed since"), project_lock(root, wait_s=0):
        pass
    assert client.get_run(run_id).info.status == "KILLED"
    assert versions(client) == []
    assert not journal.run_record(root).exists()  # done with: nothing of it is left to do
    assert journal.params_journal(root).exists()  # the user's to settle


def test_an_unreachable_tracking_store_keeps_the_dead_runs_record(root: Path) -> None:
    journal.begin_run(root)
    journal.note_mlflow_run(root, "http://127.0.0.1:9", "0" * 32)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        with pytest.raises(JournalError, match="could not close MLflow run"), project_lock(root, wait_s=0):
            pass
    assert journal.run_record(root).exists()  # the next command tries again


def test_a_failed_run_keeps_params_edited_during_it(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    die_with_overrides(root, (root / "params.yaml").read_text().replace("epochs: 30", "epochs: 40"))
    edited = (root / "params.yaml").read_text().replace("seed: 42", "seed: 7")
    (root / "params.yaml").write_text(edited)  # the user's edit, while the run ran
    journal.end_overrides(root, keep=False)
    assert (root / "params.yaml").read_text() == edited
    assert journal.params_journal(root).exists()  # the file before the run, to compare with
    # One warning. caplog once held its record twice in the full suite (after other tests had run in
    # the same worker and configured logging), so distinct messages are compared, not records.
    [warning] = {r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name.startswith("tasks.")}
    assert "edited during the run" in warning and "\n" not in warning


@pytest.mark.parametrize("damaged", ["params.yaml.journal", ".dvc/tmp/edgecompress-run.json"])
@pytest.mark.parametrize("content", ["{not json", '{"pid": "x"}', "[]", ""])
def test_a_damaged_leftover_is_named(root: Path, damaged: str, content: str) -> None:
    (root / damaged).parent.mkdir(parents=True, exist_ok=True)
    (root / damaged).write_text(content)
    refused = rf"^{re.escape(damaged)}: damaged .* delete {re.escape(damaged)}$"
    with pytest.raises(JournalError, match=refused), project_lock(root, wait_s=0):
        pass
    assert (root / damaged).read_text() == content  # left for the user, who is told what to check


def test_the_next_run_removes_a_dead_sweeps_scratch_folder(root: Path) -> None:
    scratch = root / ".dvc" / "tmp" / "sweep-dead"
    (scratch / "t01").mkdir(parents=True)
    # A float model the dead sweep was training, staged beside the cache; the cached ones stay.
    staging = root / ".dvc" / "tmp" / "float-models" / ".0123abcd-x1y2"
    cached = root / ".dvc" / "tmp" / "float-models" / "0123abcd"
    (staging / "data").mkdir(parents=True)
    (cached / "data").mkdir(parents=True)
    with project_lock(root, wait_s=0):
        assert not scratch.exists() and not staging.exists()
        assert cached.is_dir()
