"""What a dead run leaves is cleaned up by the next run, before anything else happens.

The kill -9 of a real run, in every stage, is tests/flows/test_faults.py; these tests leave the files a
killed process would leave, and take the lock as the next command does.
"""

from __future__ import annotations

import json
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


def test_a_dead_runs_mlflow_run_is_marked_killed(root: Path) -> None:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("dead"))
    journal.begin_run(root)
    journal.note_mlflow_run(root, uri, run.info.run_id)  # then the process is killed
    with project_lock(root, wait_s=0):
        assert client.get_run(run.info.run_id).info.status == "KILLED"
        assert json.loads(journal.run_record(root).read_text())["mlflow"] is None  # this run's own record
    assert not journal.run_record(root).exists()
