"""sweep: the grid, the Pareto front, the choice under the gate, and a real sweep on a local Dask cluster."""

from __future__ import annotations

import csv

import mlflow
import pytest

from tasks.errors import ParamsError
from tasks.layout import Layout
from tasks.params import load_params
from tasks.search import sweep
from tests.conftest import LOOSE_GATE, QUICK, REPO, TINY, edgecompress, make_project


def test_grid_values_are_yaml_lists() -> None:
    grid = sweep.parse_grid(["prune.final_sparsity=0.5,0.75", "quantize.method=ptq,qat", "cluster.enabled=true"])
    assert grid == {"prune.final_sparsity": [0.5, 0.75], "quantize.method": ["ptq", "qat"], "cluster.enabled": [True]}


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], r"no grid"),
        (["prune.final_sparsity="], r"prune\.final_sparsity: no values"),
        (["train.epochs=1,2"], r"trains the float model once, so train\.\* cannot vary"),
        (["prune.final_sparsity=0.5", "prune.final_sparsity=0.6"], r"given twice"),
        (["final_sparsity=0.5"], r"expected section\.key=value"),
    ],
)
def test_a_bad_grid_is_one_line(texts: list[str], message: str) -> None:
    with pytest.raises(ParamsError, match=message) as caught:
        sweep.parse_grid(texts)
    assert "\n" not in str(caught.value)


def test_every_grid_point_is_checked_before_any_runs() -> None:
    grid = {"prune.final_sparsity": [0.5, 0.9], "cluster.number_of_clusters": [8, 16]}
    trials = sweep.expand(REPO / "params.yaml", grid)
    assert [t.overrides for t in trials] == [  # the whole product, the first key slowest
        ("prune.final_sparsity=0.5", "cluster.number_of_clusters=8"),
        ("prune.final_sparsity=0.5", "cluster.number_of_clusters=16"),
        ("prune.final_sparsity=0.9", "cluster.number_of_clusters=8"),
        ("prune.final_sparsity=0.9", "cluster.number_of_clusters=16"),
    ]
    with pytest.raises(ParamsError, match=r"prune\.final_sparsity.*\(in grid point prune\.final_sparsity=1\.5\)"):
        sweep.expand(REPO / "params.yaml", {"prune.final_sparsity": [0.5, 1.5]})
    with pytest.raises(ParamsError, match=r"unknown key 'prune\.sparsity'"):
        sweep.expand(REPO / "params.yaml", {"prune.sparsity": [0.5]})


def test_pareto_front_keeps_only_undominated_points() -> None:
    # (cost, accuracy): b is dominated by a (costlier, no more accurate); c is cheaper; d ties a.
    points = [(10.0, 0.9), (12.0, 0.9), (5.0, 0.8), (10.0, 0.9)]
    assert sweep.pareto(points) == [True, False, True, True]


def outcome(name: str, gzip: int, accuracy: float, drop: float = 0.0) -> sweep.Outcome:
    variants = {
        "float_tflite": {"accuracy": accuracy + drop, "size_bytes": 4 * gzip},
        "int8_tflite": {"accuracy": accuracy, "size_bytes": gzip, "latency_ms": 0.1},
    }
    metrics = {
        "accuracy": accuracy,
        "gzip_bytes": gzip,
        "latency_ms_builtin": 0.1,
        "variants": variants,
        "shipped": "int8_tflite",
        "edgetpu": {"mapped_fraction": 1.0, "subgraphs": 1, "source": "preflight"},
    }
    return sweep.Outcome(sweep.Trial(name, (f"x.y={name}",)), "ok", metrics)


def test_the_best_is_the_smallest_that_passes_the_gate() -> None:
    params = load_params(REPO / "params.yaml")  # max_accuracy_drop 0.01
    smallest_but_failing = outcome("t1", 1_000, 0.95, drop=0.05)
    passing_small = outcome("t2", 2_000, 0.97)
    passing_large = outcome("t3", 3_000, 0.99)
    failed = sweep.Outcome(sweep.Trial("t4", ("x.y=4",)), "failed", error="boom")
    outcomes = [smallest_but_failing, passing_small, passing_large, failed]
    best = sweep.judge(outcomes, params, champion_accuracy=None)
    assert best is passing_small
    assert [o.gate for o in outcomes] == ["failed", "passed", "passed", ""]
    assert [o.pareto_size for o in outcomes[:3]] == [True, True, True]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return make_project(tmp_path_factory.mktemp("sweep") / "project", overrides=[*TINY, *LOOSE_GATE, *QUICK])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-S", "prune.no_such_knob=1,2"], "unknown key 'prune.no_such_knob'"),
        (["-S", "prune.final_sparsity="], "no values"),
        (["-S", "prune.final_sparsity=0.5,1.5"], "in grid point prune.final_sparsity=1.5"),
        (["-S", "prune.final_sparsity=0.5", "--dask-address", "tcp://127.0.0.1:9"], "no Dask scheduler answers"),
    ],
)
def test_bad_sweeps_stop_before_any_trial(project: Layout, args: list[str], message: str) -> None:
    result = edgecompress("sweep", *args, cwd=project.root)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (project.root / "data" / "raw").exists()  # nothing ran, not even prepare


@pytest.mark.slow
def test_a_sweep_on_local_dask_workers_answers_and_applies(project: Layout, prefect_api: str) -> None:
    before = load_params(project.params_file)
    result = edgecompress(
        "sweep",
        "-S",
        "prune.final_sparsity=0.5,0.8",
        "-S",
        "cluster.number_of_clusters=16",
        "--workers",
        "2",
        "--apply",
        cwd=project.root,
        prefect_api=prefect_api,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((project.reports / "sweep.csv").open()))
    assert [row["trial"] for row in rows] == ["t01", "t02"]
    assert all(row["status"] == "ok" for row in rows), rows
    assert any(row["pareto_size"] == "True" for row in rows)
    assert (project.reports / "pareto.png").read_bytes().startswith(b"\x89PNG")
    # One MLflow run for the sweep, a nested run per trial with its settings.
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project.root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("edgecompress")
    parent = client.search_runs([experiment.experiment_id], "tags.mlflow.runName = 'sweep'")[0]
    nested = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(run.data.tags["trial"] for run in nested) == ["t01", "t02"]
    assert all("prune.final_sparsity" in run.data.params for run in nested)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")} >= {"sweep/sweep.csv"}
    # --apply wrote the best passing trial's settings; the next run builds it through the gate.
    best = parent.data.tags["sweep.best"]
    chosen = next(row for row in rows if row["trial"] == best)
    after = load_params(project.params_file)
    for setting in chosen["settings"].split():
        key, value = setting.split("=")
        section, name = key.split(".")
        assert str(getattr(getattr(after, section), name)) == value
    assert after.train == before.train
    assert f"best that passes the gate: {best}" in result.stdout
