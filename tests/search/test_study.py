"""study: the Optuna study a sampled sweep asks and tells, its storage, constraints, failures and resumption."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import EdgecompressError, ParamsError
from tasks.search import space, study
from tasks.search.sweep import Constraints, Outcome
from tests.conftest import REPO


def test_the_storage_is_the_flag_then_the_variable_then_the_projects_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(study.STORAGE_ENV, raising=False)
    assert study.storage_url(tmp_path) == f"sqlite:///{tmp_path / 'optuna.db'}"
    monkeypatch.setenv(study.STORAGE_ENV, "postgresql+psycopg2://team:secret@db.internal/optuna")
    assert study.storage_url(tmp_path).startswith("postgresql")
    assert study.storage_url(tmp_path, "sqlite:///x.db") == "sqlite:///x.db"
    assert study.shown(study.storage_url(tmp_path)) == "postgresql+psycopg2://team:***@db.internal/optuna"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql+psycopg2://team:secret@127.0.0.1:9/optuna", r"study storage postgresql\+psycopg2://team:\*\*\*@"),
        ("not a url", r"--storage not a url: not a database URL Optuna can use"),
    ],
)
def test_a_storage_that_cannot_be_used_is_one_line(url: str, message: str) -> None:
    with pytest.raises(EdgecompressError, match=message) as caught:
        study.study_names(url)
    assert "\n" not in str(caught.value) and "secret" not in str(caught.value)


def measured(trial: space.Trial, accuracy: float, param_bytes: int, gate: str = "passed") -> Outcome:
    metrics = {"accuracy": accuracy, "param_bytes": param_bytes, "latency_ms": 0.2, "off_chip_bytes": None}
    outcome = Outcome(trial, "ok", metrics, float_key="f" * 16)
    outcome.gate = gate
    return outcome


def test_ask_and_tell_record_measurements_constraints_and_failures_and_a_second_sweep_continues(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searched = space.parse_space(["prune.final_sparsity=0.5:0.9", "train.dense_units=16,32"])
    raw = space.base_params(REPO / "params.yaml")
    constraints = Constraints(max_param_bytes=1_000)
    assert not study.check_resume(tmp_path, url, "s", searched, "param-bytes", "optuna")
    first = study.open_study(url, "s", searched, "param-bytes", "optuna", batch=3, seed=1)
    asked = study.ask(first, searched, 3, raw)
    assert [a.trial.name for a in asked] == ["t01", "t02", "t03"] and not any(a.error for a in asked)
    point = asked[0].trial
    sparsity = float(point.value("prune.final_sparsity"))
    assert 0.5 <= sparsity <= 0.9 and point.value("train.dense_units") in ("16", "32")
    assert point.float_overrides == (f"train.dense_units={point.value('train.dense_units')}",)
    outcomes = [
        measured(asked[0].trial, 0.95, 900),  # meets all
        measured(asked[1].trial, 0.99, 5_000),  # more accurate, too many bytes: infeasible
        Outcome(asked[2].trial, "failed", error="StageError: boom"),
    ]
    for a, outcome in zip(asked, outcomes, strict=True):
        outcome.unmet = constraints.unmet(outcome.metrics) if outcome.status == "ok" else []
        study.tell(first, a, outcome, "param-bytes", constraints)
    frozen = first.trials
    assert [t.state.name for t in frozen] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert frozen[0].values == [0.95, 900.0] and frozen[2].user_attrs["error"] == "StageError: boom"
    assert frozen[0].constraints == {"param_bytes": pytest.approx(-0.1), "gate": 0.0}
    assert frozen[1].constraints["param_bytes"] > 0
    assert [t.number for t in first.best_trials] == [0]  # the infeasible one loses, however accurate
    # The same study again: the same search continues where it stopped; another search is refused.
    assert study.check_resume(tmp_path, url, "s", searched, "param-bytes", "optuna")
    with pytest.raises(ParamsError, match=r"--study s: it searched objective 'param-bytes', not 'latency'"):
        study.check_resume(tmp_path, url, "s", searched, "latency", "optuna")
    second = study.open_study(url, "s", searched, "param-bytes", "optuna", batch=1, seed=1)
    assert [a.trial.name for a in study.ask(second, searched, 1, raw)] == ["t04"]
    again = study.open_study(url, "s", searched, "param-bytes", "optuna", batch=1, seed=1)
    assert again.trials[3].state.name == "FAIL"  # asked and never told: a killed sweep's trial
    earlier = study.earlier(again, told=set())
    assert [(o.trial.name, o.status) for o in earlier] == [
        ("t01", "ok"),
        ("t02", "ok"),
        ("t03", "failed"),
        ("t04", "failed"),
    ]
    assert earlier[0].metrics["param_bytes"] == 900 and earlier[0].gate == "passed"
    assert earlier[0].trial.overrides == asked[0].trial.overrides


def test_a_point_that_is_not_valid_fails_without_running(tmp_path: Path) -> None:
    # initial_sparsity must not exceed final_sparsity: most of this range cannot run.
    searched = space.parse_space(["prune.initial_sparsity=0.0:0.9", "prune.final_sparsity=0.1"])
    raw = space.base_params(REPO / "params.yaml")
    made = study.open_study(f"sqlite:///{tmp_path / 'o.db'}", "s", searched, "latency", "random", batch=8, seed=3)
    asked = study.ask(made, searched, 8, raw)
    bad = [a for a in asked if a.error]
    assert bad and all("must not exceed final_sparsity" in a.error for a in bad)
    paired = study.pair(asked, [measured(t, 0.9, 100) for t in study.runnable(asked)])
    assert [outcome.status == "failed" for _, outcome in paired] == [bool(a.error) for a in asked]


def test_batches_cover_the_budget() -> None:
    assert study.batches(5, 2) == [2, 2, 1]
    assert study.batches(4, 8) == [4]


def test_a_key_the_points_own_settings_ignore_is_not_sampled(tmp_path: Path) -> None:
    """A channel fraction drawn for a magnitude trial repeated one model under several values."""
    searched = space.parse_space(["prune.channel_fraction=0.2:0.7", "prune.method=magnitude,channels"])
    raw = space.base_params(REPO / "params.yaml")
    made = study.open_study(f"sqlite:///{tmp_path / 'o.db'}", "s", searched, "latency", "random", batch=12, seed=5)
    asked = study.ask(made, searched, 12, raw)
    methods = [a.trial.value("prune.method") for a in asked]
    assert set(methods) == {"magnitude", "channels"}  # both drawn in 12
    for point in asked:
        fraction = point.trial.value("prune.channel_fraction")
        if point.trial.value("prune.method") == "channels":
            assert fraction and 0.2 <= float(fraction) <= 0.7
            assert point.trial.overrides[0].startswith("prune.channel_fraction=")  # the order given
        else:
            assert fraction == "" and "prune.channel_fraction" not in point.handle.params
