"""sweep: constraints, the Pareto fronts, the best trial, the answer, and real sweeps on a local Dask cluster."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import pytest

from tasks.layout import Layout
from tasks.params import load_params
from tasks.search import answer, sweep
from tasks.search.space import Trial
from tests.conftest import LOOSE_GATE, QUICK, REPO, TINY, edgecompress, make_project


def test_pareto_front_keeps_only_undominated_points() -> None:
    # (cost, accuracy): b is dominated by a (costlier, no more accurate); c is cheaper; d ties a.
    points = [(10.0, 0.9), (12.0, 0.9), (5.0, 0.8), (10.0, 0.9)]
    assert sweep.pareto(points) == [True, False, True, True]


def outcome(name: str, param_bytes: int, accuracy: float, drop: float = 0.0, **metrics: object) -> sweep.Outcome:
    variants = {
        "float_tflite": {"accuracy": accuracy + drop, "size_bytes": 4 * param_bytes},
        "int8_tflite": {"accuracy": accuracy, "size_bytes": param_bytes, "latency_ms": 0.1},
    }
    values = {
        "accuracy": accuracy,
        "param_bytes": param_bytes,
        "gzip_bytes": param_bytes // 4,
        "latency_ms": 0.1,
        "mapped_fraction": 1.0,
        "off_chip_bytes": None,
        "variants": variants,
        "shipped": "int8_tflite",
        "edgetpu": {"mapped_fraction": 1.0, "subgraphs": 1, "source": "preflight"},
        **metrics,
    }
    return sweep.Outcome(Trial(name, (f"x.y={name}",)), "ok", values)


def test_the_best_is_the_most_accurate_that_passes_the_gate_and_meets_every_constraint() -> None:
    params = load_params(REPO / "params.yaml")  # max_accuracy_drop 0.01
    most_accurate_but_failing_the_gate = outcome("t1", 1_000, 0.99, drop=0.05)
    too_large = outcome("t2", 9_000, 0.98)
    passing = outcome("t3", 3_000, 0.97)
    passing_smaller_tie = outcome("t4", 2_000, 0.97)
    less_accurate = outcome("t5", 500, 0.95)
    failed = sweep.Outcome(Trial("t6", ("x.y=6",)), "failed", error="boom")
    outcomes = [most_accurate_but_failing_the_gate, too_large, passing, passing_smaller_tie, less_accurate, failed]
    best = sweep.judge(outcomes, params, None, sweep.Constraints(max_param_bytes=5_000))
    assert best is passing_smaller_tie and best.best and not passing.best
    assert [o.gate for o in outcomes] == ["failed", "passed", "passed", "passed", "passed", ""]
    assert too_large.unmet == ["parameter bytes 9,000 (not <= 5,000)"] and not too_large.feasible
    assert [o.pareto_params for o in outcomes[:5]] == [True, False, False, False, True]
    # No constraint: the most accurate that passes the gate.
    assert sweep.judge(outcomes, params, None) is too_large


def test_a_constraint_on_an_unknown_value_is_not_met() -> None:
    constraints = sweep.Constraints(max_off_chip_bytes=0, min_mapped_fraction=0.9, max_latency_ms=1.0)
    unknown = {"off_chip_bytes": None, "mapped_fraction": 0.5, "latency_ms": 0.5}
    assert constraints.unmet(unknown) == ["off-chip bytes unknown", "mapped fraction 0.5 (not >= 0.9)"]
    assert constraints.values(unknown) == {
        "off_chip_bytes": 1.0,
        "mapped_fraction": pytest.approx(0.4),
        "latency_ms": pytest.approx(-0.5),
    }
    assert constraints.unmet({"off_chip_bytes": 0, "mapped_fraction": 1.0, "latency_ms": 1.0}) == []
    assert sweep.Constraints().describe() == "none" and not sweep.Constraints().any()


def test_on_chip_and_off_chip_bytes_are_read_where_the_report_has_them() -> None:
    # Today's report: the gate view's off_chip_bytes (the compiler's, None from the preflight); no memory model.
    assert sweep.edgetpu_memory({"source": "preflight", "off_chip_bytes": None}) == {
        "on_chip_bytes": None,
        "off_chip_bytes": None,
    }
    # With the memory model's prediction.
    predicted = {"source": "preflight", "off_chip_bytes": None, "memory": {"on_chip_bytes": 900, "off_chip_bytes": 0}}
    assert sweep.edgetpu_memory(predicted) == {"on_chip_bytes": 900, "off_chip_bytes": 0}
    # The compiler's own figures beat a prediction.
    compiled = {**predicted, "source": "compiler", "off_chip_bytes": 12, "compiler": {"on_chip_bytes": 800}}
    assert sweep.edgetpu_memory(compiled) == {"on_chip_bytes": 800, "off_chip_bytes": 12}


def test_the_answer_names_the_best_and_marks_the_constraints(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    outcomes = [outcome("t1", 1_000, 0.95), outcome("t2", 9_000, 0.98, latency_ms=0.3), outcome("t3", 2_000, 0.90)]
    constraints = sweep.Constraints(max_param_bytes=5_000, max_latency_ms=0.2)
    best = sweep.judge(outcomes, params, None, constraints)
    assert best is outcomes[0]
    csv_path, plot = answer.write_answer(Layout(tmp_path), outcomes, ("x.y",), constraints, best)
    rows = list(csv.DictReader(csv_path.open()))
    assert [row["best"] for row in rows] == ["True", "False", "False"]
    assert rows[1]["constraints"] == "latency ms 0.3 (not <= 0.2); parameter bytes 9,000 (not <= 5,000)"
    assert rows[0]["x.y"] == "t1" and rows[0]["param_bytes"] == "1000" and rows[0]["off_chip_bytes"] == ""
    assert plot.read_bytes().startswith(b"\x89PNG")
    text = answer.markdown(outcomes, best, constraints, "Sweep")
    assert "**t1**" in text and "parameter bytes <= 5,000" in text


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return make_project(tmp_path_factory.mktemp("sweep") / "project", overrides=[*TINY, *LOOSE_GATE, *QUICK])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-S", "prune.no_such_knob=1,2"], "unknown key 'prune.no_such_knob'"),
        (["-S", "prune.method=magnitude,filters"], "in grid point prune.method=filters"),
        (["-S", "prune.final_sparsity="], "no values"),
        (["-S", "prune.channel_fraction=0.2:0.7", "--search", "optuna", "--trials", "2"], "no trial reads it"),
        (["-S", "prune.final_sparsity=0.5,1.5"], "in grid point prune.final_sparsity=1.5"),
        (["-S", "gate.min_accuracy=0.5,0.99"], "a sweep cannot vary gate.*"),
        (["-S", "prune.final_sparsity=0.5:0.9"], "a range is for a sampler"),
        (["-S", "prune.final_sparsity=0.5:0.9", "--search", "optuna"], "--search optuna needs --trials N"),
        (["-S", "prune.final_sparsity=0.5", "--trials", "3"], "--trials is for --search optuna or random"),
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
    assert not (project.root / sweep.FLOAT_CACHE).exists()


def test_a_sampled_point_with_settings_measured_before_reuses_the_measurement() -> None:
    """A sampler draws a magnitude trial again and again (it has no other key to vary): run once, told alike."""
    magnitude = ("prune.method=magnitude",)
    points = [
        Trial("t05", magnitude, number=4),
        Trial("t06", ("prune.method=channels", "prune.channel_fraction=0.3"), number=5),
        Trial("t07", ("prune.method=channels", "prune.channel_fraction=0.3"), number=6),
        Trial("t08", ("prune.method=channels", "prune.channel_fraction=0.5"), number=7),
    ]
    earlier = sweep.Outcome(Trial("t02", magnitude, number=1), "ok", {"accuracy": 0.99, "param_bytes": 30_896})
    earlier.gate = "passed"
    measured = {earlier.trial.overrides: earlier}
    fresh = sweep.unmeasured(points, measured)
    assert [point.name for point in fresh] == ["t06", "t08"]  # the first of each new setting
    ran = [
        sweep.Outcome(Trial("t06", fresh[0].overrides, number=5), "ok", {"accuracy": 0.98}, seconds=3.0),
        sweep.Outcome(Trial("t08", fresh[1].overrides, number=7), "failed", error="boom", seconds=1.0),
    ]
    outcomes = sweep.with_repeats(points, ran, measured)
    assert [o.trial.name for o in outcomes] == ["t05", "t06", "t07", "t08"]
    assert [o.same_as for o in outcomes] == ["t02", "", "t06", ""]
    assert outcomes[0].metrics == earlier.metrics and outcomes[0].gate == "passed" and outcomes[0].seconds == 0.0
    assert outcomes[0].metrics is not earlier.metrics  # a copy: judging one does not touch the other
    assert outcomes[2].metrics == {"accuracy": 0.98} and outcomes[2].trial.number == 6
    assert outcomes[3].status == "failed"
    row = outcomes[2].row(("prune.method",))
    assert row["same_as"] == "t06" and "same_as" in answer.columns(("prune.method",))


def test_the_float_cache_keeps_the_most_recently_used_and_every_one_this_sweep_used(tmp_path: Path) -> None:
    import os

    folder = tmp_path / sweep.FLOAT_CACHE
    for age, key in enumerate(["k0", "k1", "k2", "k3", "k4"]):  # k0 the newest
        (folder / key).mkdir(parents=True)
        os.utime(folder / key, (1_000_000 - age * 100, 1_000_000 - age * 100))
    (folder / ".k5-staging").mkdir()  # another process's float model in training: not the cache's to judge
    removed = sweep.prune_float_cache(tmp_path, used={"k4"}, keep=2)  # the newest two, and the one in use
    assert sorted(removed) == ["k2", "k3"]
    assert sorted(p.name for p in folder.iterdir()) == [".k5-staging", "k0", "k1", "k4"]
    assert sweep.prune_float_cache(tmp_path / "nowhere", used=set()) == []
    # Found in the cache is used: a lookup makes the oldest the newest.
    layout = Layout(folder / "k4")
    layout.float_model.parent.mkdir(parents=True)
    layout.float_model.write_bytes(b"model")
    layout.train_report.parent.mkdir(parents=True, exist_ok=True)
    layout.train_report.write_text("{}")
    os.utime(folder / "k4", (1, 1))
    spec = sweep.FloatSpec("k4", ())
    assert sweep.cached_float(tmp_path, spec) is not None
    assert sorted(sweep.prune_float_cache(tmp_path, used=set(), keep=1)) == ["k0", "k1"]


def float_models(project: Layout) -> list[str]:
    folder = project.root / sweep.FLOAT_CACHE
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


@pytest.mark.slow
def test_a_grid_trains_each_float_model_once_judges_under_constraints_and_applies(
    project: Layout, prefect_api: str
) -> None:
    result = edgecompress(
        "sweep",
        "-S",
        "train.dense_units=8,16",
        "-S",
        "quantize.io_dtype=int8,uint8,int8",
        "--workers",
        "2",
        "--max-off-chip-bytes",
        "0",
        "--max-latency-ms",
        "1000",
        "--apply",
        cwd=project.root,
        prefect_api=prefect_api,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "note: -S quantize.io_dtype: int8 given more than once" in result.stdout
    rows = list(csv.DictReader((project.reports / "sweep.csv").open()))
    assert [row["trial"] for row in rows] == ["t01", "t02", "t03", "t04"]
    assert all(row["status"] == "ok" for row in rows), rows
    for column in ("param_bytes", "macs", "on_chip_bytes", "off_chip_bytes", "mapped_fraction", "latency_ms"):
        assert column in rows[0]
    assert {row["train.dense_units"] for row in rows} == {"8", "16"} and rows[1]["quantize.io_dtype"] == "uint8"
    assert int(rows[2]["param_bytes"]) > int(rows[0]["param_bytes"])  # a wider model holds more bytes
    # Two float models, each trained once and shared by its two trials.
    assert len(float_models(project)) == 2
    assert len({row["float_model"] for row in rows}) == 2
    assert rows[0]["float_model"] == rows[1]["float_model"]
    assert (project.reports / "pareto.png").read_bytes().startswith(b"\x89PNG")
    # One MLflow run for the sweep, a nested run per trial with its settings and measurements.
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project.root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("edgecompress")
    parent = client.search_runs([experiment.experiment_id], "tags.mlflow.runName = 'sweep'")[0]
    nested = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(run.data.tags["trial"] for run in nested) == ["t01", "t02", "t03", "t04"]
    assert all({"param_bytes", "macs", "latency_ms_builtin"} <= set(run.data.metrics) for run in nested)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")} >= {"sweep/sweep.csv"}
    # Off-chip bytes are not predicted without the memory model or the compiler: unknown misses the constraint.
    if all(row["off_chip_bytes"] == "" for row in rows):
        assert all(row["best"] == "False" for row in rows)
        assert "no trial is best" in result.stdout
        assert load_params(project.params_file).train.dense_units == 128  # nothing applied
    else:
        best = next(row for row in rows if row["best"] == "True")
        assert load_params(project.params_file).train.dense_units == int(best["train.dense_units"])


@pytest.mark.slow
def test_an_optuna_study_runs_its_trials_and_applies_the_best(project: Layout, prefect_api: str) -> None:
    # Resuming a study is tests/search/test_study.py's; here, the command end to end, once.
    result = edgecompress(
        "sweep", "--search", "optuna", "--trials", "2", "--study", "s", "-S", "prune.final_sparsity=0.5:0.9",
        "-S", "train.dense_units=8", "--max-param-bytes", "100000000", "--apply",
        cwd=project.root, prefect_api=prefect_api, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "new study s" in result.stdout and "study s: 2 trial(s) complete, 0 failed" in result.stdout
    rows = list(csv.DictReader((project.reports / "sweep.csv").open()))
    assert [row["trial"] for row in rows] == ["t01", "t02"]
    assert all(0.5 <= float(row["prune.final_sparsity"]) <= 0.9 for row in rows)
    assert len({row["float_model"] for row in rows}) == 1  # one float model for both
    best = next(row for row in rows if row["best"] == "True")
    after = load_params(project.params_file)
    assert after.prune.final_sparsity == float(best["prune.final_sparsity"]) and after.train.dense_units == 8
    assert (project.root / "optuna.db").is_file()
