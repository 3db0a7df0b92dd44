"""The local tracking store: each project's own, with its artifacts beside it, whatever ran before."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest

from tasks.bookkeeping import tracking


def test_each_project_keeps_its_own_store_and_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_tracking_env: None
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # where MLflow's default artifact root (./mlruns) would land
    first, second = tmp_path / "first", tmp_path / "second"
    for root in (first, second):
        root.mkdir()
        uri = tracking.configure(root)
        # MLflow's set_tracking_uri exports the variable; the first project must not become the
        # store the user chose for the second.
        assert uri == f"sqlite:///{root / 'mlflow.db'}"
        assert "MLFLOW_TRACKING_URI" not in os.environ
        experiment = mlflow.get_experiment_by_name(tracking.EXPERIMENT)
        assert experiment is not None and experiment.artifact_location == (root / "mlartifacts").as_uri()
        with mlflow.start_run():
            mlflow.log_text("x", "note.txt")
        assert len(list((root / "mlartifacts").glob("*/artifacts/note.txt"))) == 1
    assert not any(elsewhere.iterdir())


def test_a_store_the_user_chose_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = f"sqlite:///{tmp_path / 'team.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", chosen)
    project = tmp_path / "project"
    project.mkdir()
    assert tracking.configure(project) == chosen
    assert os.environ["MLFLOW_TRACKING_URI"] == chosen
    assert not (project / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("garbage", "a folder"),  # MLflow takes a value without a scheme for a folder
        ("file:/tmp/mlruns", "a folder"),
        ("sqlte:///mlflow.db", "unknown scheme 'sqlte'"),
        ("http://", "no host"),
    ],
)
def test_a_tracking_uri_mlflow_cannot_use_is_named_with_what_would_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, why: str
) -> None:
    """Instead of MLflow's paragraph about its file store's maintenance mode, or its list of schemes."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(tracking.TrackingError) as caught:
        tracking.configure(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"MLFLOW_TRACKING_URI={uri} is not a usable tracking store ({why}"), message
    assert "http(s)://HOST:PORT" in message and "sqlite:///" in message and "\n" not in message


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:5000", "https://mlflow.example.com", "postgresql+psycopg2://u@127.0.0.1/mlflow"]
)
def test_usable_tracking_uris_pass_the_check(uri: str) -> None:
    tracking.check_uri(uri)
