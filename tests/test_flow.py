"""The compression flow end to end: real Prefect, MLflow, DVC and TensorFlow on a project copy."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml

from flows.compress import RunReport, compress
from tasks.errors import DataError
from tasks.layout import Layout
from tasks.params import write_overrides
from tests.conftest import TINY, dvc, make_project
from tests.test_data import make_folder, tree_digest

pytestmark = pytest.mark.slow


def ran(report: RunReport) -> list[str]:
    return [outcome.name for outcome in report.stages if outcome.ran]


def dvc_status(layout: Layout) -> dict[str, object]:
    return json.loads(dvc("status", "--json", cwd=layout.root).stdout or "{}")


def lock_hash(layout: Layout, out: str) -> str:
    lock = yaml.safe_load((layout.root / "dvc.lock").read_text())
    return next(o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", []) if o["path"] == out)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Iterator[Layout]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield make_project(tmp_path_factory.mktemp("flow") / "project", overrides=TINY)


@pytest.fixture(scope="module")
def first(project: Layout) -> RunReport:
    return compress(project=str(project.root))


def test_first_run_runs_every_stage_and_leaves_dvc_clean(project: Layout, first: RunReport) -> None:
    assert ran(first) == ["prepare", "train", "prune", "quantize", "evaluate"]
    assert dvc_status(project) == {}


def test_metrics_json_holds_every_variant(project: Layout, first: RunReport) -> None:
    metrics = json.loads(project.metrics.read_text())
    variants = metrics["variants"]
    for name in ("float_tflite", "int8_tflite"):
        assert {"accuracy", "size_bytes", "gzip_bytes"} <= set(variants[name])
    assert variants["pruned"]["sparsity"] >= 0.79
    assert variants["int8_tflite"]["size_bytes"] <= 0.3 * variants["float_tflite"]["size_bytes"]
    assert variants["int8_tflite"]["input_dtype"] == "int8" == variants["int8_tflite"]["output_dtype"]
    assert dvc("metrics", "show", "--json", cwd=project.root).stdout  # DVC knows them as metrics


def test_mlflow_run_has_metrics_artifacts_and_lineage_tags(project: Layout, first: RunReport) -> None:
    client = mlflow.MlflowClient(tracking_uri=first.tracking_uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert first.tracking_uri == f"sqlite:///{project.root / 'mlflow.db'}"
    assert run.data.metrics["evaluate.int8_tflite.accuracy"] == first.metrics["evaluate"]["int8_tflite"]["accuracy"]
    assert run.data.metrics["prune.sparsity"] >= 0.79
    assert run.data.params["prune.final_sparsity"] == "0.8"
    assert run.data.tags["dvc.raw_md5"] == lock_hash(project, "data/raw")
    assert run.data.tags["dvc.calibration_md5"] == lock_hash(project, "data/calibration")
    assert len(run.data.tags["git.commit"]) == 40
    artifacts = {a.path for folder in ("tflite", "reports") for a in client.list_artifacts(first.run_id, folder)}
    assert {"tflite/model_int8.tflite", "tflite/model_float.tflite", "reports/metrics.json"} <= artifacts


def test_second_run_skips_everything(project: Layout, first: RunReport) -> None:
    second = compress(project=str(project.root))
    assert ran(second) == []
    assert second.run_id != first.run_id
    assert second.metrics["evaluate"] == first.metrics["evaluate"]
    assert dvc_status(project) == {}


def test_changed_sparsity_reruns_prune_and_after_only(project: Layout, first: RunReport) -> None:
    write_overrides(project.params_file, ["prune.final_sparsity=0.6"])
    report = compress(project=str(project.root))
    assert ran(report) == ["prune", "quantize", "evaluate"]
    assert 0.59 <= report.metrics["prune"]["sparsity"] < 0.7
    assert dvc_status(project) == {}


def test_dvc_repro_runs_the_same_stages_without_prefect(project: Layout, first: RunReport) -> None:
    write_overrides(project.params_file, ["evaluate.batch_size=64"])
    output = dvc("repro", cwd=project.root).stdout
    assert "Running stage 'evaluate'" in output
    assert "Running stage 'train'" not in output
    assert dvc_status(project) == {}


def test_failed_stage_marks_the_run_failed_and_keeps_outputs(project: Layout, first: RunReport, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "mine")
    (source / "test" / "class_0" / "0.png").write_bytes(b"not a png")
    before = tree_digest(project.raw)
    saved = project.params_file.read_text()
    write_overrides(project.params_file, [f"data.source=folder:{source}"])
    try:
        with pytest.raises(DataError, match="corrupt or unreadable image"):
            compress(project=str(project.root))
    finally:
        project.params_file.write_text(saved)
    assert tree_digest(project.raw) == before
    client = mlflow.MlflowClient(tracking_uri=first.tracking_uri)
    latest = client.search_runs([client.get_run(first.run_id).info.experiment_id], max_results=1)[0]
    assert latest.info.status == "FAILED"
    assert not any(p.name.endswith(".tmp") for p in project.raw.parent.iterdir())
    shutil.rmtree(source)
