"""The `edgecompress` command as a user runs it: one-line errors, non-zero exits, nothing written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tasks.layout import Layout
from tasks.params import load_params
from tests.conftest import LOOSE_GATE, QUICK, TINY, edgecompress, make_project


@pytest.fixture
def project(tmp_path: Path) -> Layout:
    return make_project(tmp_path / "project", overrides=TINY + LOOSE_GATE)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """One project for the two full runs: the second reruns only what its override changes."""
    return make_project(tmp_path_factory.mktemp("cli") / "project", overrides=TINY + LOOSE_GATE + QUICK)


def assert_refused(result: subprocess.CompletedProcess[str], *named: str) -> None:
    assert result.returncode != 0
    # One error line (Prefect may still log its server stopping after it, at exit).
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for text in named:
        assert text in errors[0]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("prune.final_sparsity=1.5", "prune.final_sparsity"),
        ("train.epochs=-1", "train.epochs"),
        ("prune.unknown_knob=3", "prune.unknown_knob"),
    ],
)
def test_bad_override_is_refused_before_anything_runs(project: Layout, override: str, named: str) -> None:
    before = project.params_file.read_bytes()
    assert_refused(edgecompress("run", "-S", override, cwd=project.root), named)
    assert project.params_file.read_bytes() == before
    assert not (project.root / "mlflow.db").exists()
    assert not (project.root / "data" / "raw").exists()


def test_unknown_key_in_params_file(project: Layout) -> None:
    text = project.params_file.read_text().replace("prune:\n", "prune:\n  sparsity_goal: 0.5\n")
    project.params_file.write_text(text)
    assert_refused(edgecompress("run", cwd=project.root), "prune.sparsity_goal")


def test_unknown_stage(project: Layout) -> None:
    assert_refused(edgecompress("stage", "distill", cwd=project.root), "distill")


def test_outside_a_project(tmp_path: Path) -> None:
    assert_refused(edgecompress("run", cwd=tmp_path), "params.yaml")


@pytest.mark.slow
def test_missing_data_folder_fails_cleanly(project: Layout, tmp_path: Path, prefect_api: str) -> None:
    before = project.params_file.read_bytes()
    override = f"data.source=folder:{tmp_path / 'absent'}"
    result = edgecompress("run", "-S", override, cwd=project.root, prefect_api=prefect_api)
    assert_refused(result, "absent does not exist")
    assert project.params_file.read_bytes() == before  # a failed run keeps no -S override
    assert not (project.root / "data" / "raw").exists()


@pytest.mark.slow
def test_run_prints_variants_and_where_the_time_went(ran: Layout, prefect_api: str) -> None:
    result = edgecompress("run", cwd=ran.root, prefect_api=prefect_api)
    assert result.returncode == 0, result.stderr[-2000:]
    for text in ("int8_tflite", "float_tflite", "pruned", "tracking (MLflow)", "start-up", "total"):
        assert text in result.stdout
    for stage in ("prepare", "train", "prune", "quantize", "evaluate", "edgetpu"):
        row = next(line for line in result.stdout.splitlines() if f" {stage} " in line and "│" in line)
        assert " ran " in row, row


@pytest.mark.slow
def test_auto_quantization_from_the_command_line(ran: Layout, prefect_api: str) -> None:
    result = edgecompress(
        "run",
        "-S",
        "quantize.method=auto",
        "-S",
        "quantize.qat_epochs=1",
        "-S",
        "quantize.max_trials=2",
        cwd=ran.root,
        prefect_api=prefect_api,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((ran.root / "data" / "reports" / "quantize.json").read_text())
    assert report["trials"][0]["name"] == "ptq_int8"
    assert sum(trial["kept"] for trial in report["trials"]) == 1
    assert load_params(ran.params_file).quantize.method == "auto"  # a successful -S stays, as with dvc exp run


@pytest.mark.slow
def test_a_failed_gate_prints_the_variants_it_judged(ran: Layout, prefect_api: str) -> None:
    # A size budget no model meets: the failure is forced (and after a run, no stage reads the gate's settings).
    result = edgecompress("run", "-S", "gate.max_size_bytes=1", cwd=ran.root, prefect_api=prefect_api)
    assert_refused(result, "gate failed:", "size_bytes")
    table = result.stdout[: result.stdout.index("gate: failed")]  # the variants come before the checks
    for variant in ("variants (test split", "parameter", "MACs", "float_tflite", "int8_tflite"):  # cells wrap at 80
        assert variant in table, result.stdout[-3000:]
