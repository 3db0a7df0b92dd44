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
from tasks import registry
from tasks.errors import DataError
from tasks.layout import Layout
from tasks.params import load_params, write_overrides
from tasks.stages.gate import GateFailed
from tests.conftest import LOOSE_GATE, TINY, dvc, edgecompress, make_project
from tests.stages.test_prepare import make_folder, tree_digest

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
        yield make_project(tmp_path_factory.mktemp("flow") / "project", overrides=TINY + LOOSE_GATE)


@pytest.fixture(scope="module")
def first(project: Layout) -> RunReport:
    return compress(project=str(project.root))


MODEL = "edgecompress-digits"


def first_experiment(report: RunReport) -> str:
    return str(mlflow.MlflowClient(tracking_uri=report.tracking_uri).get_run(report.run_id).info.experiment_id)


def versions(report: RunReport) -> list[str]:
    return sorted(str(v.version) for v in registry.client(report.tracking_uri).search_model_versions(f"name='{MODEL}'"))


def aliases(report: RunReport) -> dict[str, str]:
    model = registry.client(report.tracking_uri).get_registered_model(MODEL)
    return {alias: str(version) for alias, version in model.aliases.items()}


def test_first_run_runs_every_stage_and_leaves_dvc_clean(project: Layout, first: RunReport) -> None:
    assert ran(first) == ["prepare", "train", "prune", "cluster", "quantize", "evaluate", "edgetpu"]
    assert dvc_status(project) == {}


def test_edgetpu_stage_feeds_the_gate(project: Layout, first: RunReport) -> None:
    report = json.loads(project.edgetpu_report.read_text())
    assert report["source"] == "preflight" and report["compiled"] is False  # no compiler on this machine
    assert report["mapped_fraction"] == 1.0 and report["subgraphs"] == 1
    checks = {c.name: c for c in first.gate.checks}
    assert checks["edgetpu_mapped_fraction"].observed == 1.0
    assert first.metrics["edgetpu"]["mapped_fraction"] == 1.0
    # The default gate refuses parameters streamed off chip; the predicted figure for the digits CNN is 0.
    assert checks["edgetpu_off_chip_bytes"].verdict == "pass" and checks["edgetpu_off_chip_bytes"].observed == 0
    assert "from the preflight" in checks["edgetpu_off_chip_bytes"].note
    assert first.metrics["edgetpu"]["memory"]["on_chip_bytes"] == report["memory"]["on_chip_bytes"] > 0


def test_metrics_json_holds_every_variant(project: Layout, first: RunReport) -> None:
    metrics = json.loads(project.metrics.read_text())
    variants = metrics["variants"]
    for name in ("float_tflite", "int8_tflite"):
        assert {"accuracy", "size_bytes", "gzip_bytes"} <= set(variants[name])
    target = load_params(project.params_file).prune.final_sparsity
    assert variants["pruned"]["sparsity"] >= target - 0.01
    # int8 weights are a quarter of float32's; per-channel scales weigh more in a small model (0.36 measured)
    assert variants["int8_tflite"]["size_bytes"] <= 0.4 * variants["float_tflite"]["size_bytes"]
    assert variants["int8_tflite"]["input_dtype"] == "int8" == variants["int8_tflite"]["output_dtype"]
    # DVC's metrics are the shipped model's headline figures, flat: one row that fits a terminal.
    summary = json.loads(project.summary.read_text())
    assert summary["accuracy"] == variants["int8_tflite"]["accuracy"]
    assert summary["gzip_bytes"] == variants["int8_tflite"]["gzip_bytes"]
    shown = dvc("metrics", "show", cwd=project.root).stdout
    assert "data/reports/summary.json" in shown and "gzip_bytes" in shown, shown
    assert max(len(line) for line in shown.splitlines()) <= 120, shown


def test_dvc_plots_draw_with_the_network_off(project: Layout, first: RunReport, tmp_path: Path) -> None:
    """`dvc plots show`'s page, opened in Chromium with no network, draws every plot; DVC's own draws none."""
    from dvc_render.html import PAGE_HTML

    from tests import browser

    plots = {"data_reports_confusion_csv", "data_reports_sparsity_csv", "data_reports_quant_debug_csv"}
    dvc("plots", "show", "-o", str(tmp_path / "offline"), cwd=project.root)  # .dvc/config names the template
    drawn = browser.drawn_marks(browser.dump_dom((tmp_path / "offline" / "index.html").as_uri(), offline=True), plots)
    assert all(count > 0 for count in drawn.values()), drawn
    # The same plots on DVC's own page (its libraries from a CDN): nothing drawn without the network.
    (tmp_path / "cdn.html").write_text(PAGE_HTML)
    dvc("plots", "show", "-o", str(tmp_path / "cdn"), "--html-template", str(tmp_path / "cdn.html"), cwd=project.root)
    assert browser.drawn_marks(browser.dump_dom((tmp_path / "cdn" / "index.html").as_uri(), offline=True), plots) == {
        plot: 0 for plot in plots
    }


def test_mlflow_run_has_metrics_artifacts_and_lineage_tags(project: Layout, first: RunReport) -> None:
    client = mlflow.MlflowClient(tracking_uri=first.tracking_uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert first.tracking_uri == f"sqlite:///{project.root / 'mlflow.db'}"
    assert run.data.metrics["evaluate.int8_tflite.accuracy"] == first.metrics["evaluate"]["int8_tflite"]["accuracy"]
    target = load_params(project.params_file).prune.final_sparsity
    assert run.data.metrics["prune.sparsity"] >= target - 0.01
    assert (
        run.data.metrics["edgetpu.memory.on_chip_bytes"] == run.data.metrics["edgetpu.memory.predicted.on_chip_bytes"]
    )
    assert run.data.metrics["edgetpu.memory.off_chip_bytes"] == 0 and run.data.metrics["edgetpu.memory.segments"] == 1
    assert run.data.params["prune.final_sparsity"] == str(target)
    assert run.data.tags["dvc.raw_md5"] == lock_hash(project, "data/raw")
    assert run.data.tags["dvc.calibration_md5"] == lock_hash(project, "data/calibration")
    assert len(run.data.tags["git.commit"]) == 40
    artifacts = {a.path for folder in ("tflite", "reports") for a in client.list_artifacts(first.run_id, folder)}
    assert {"tflite/model_int8.tflite", "tflite/model_float.tflite", "reports/metrics.json"} <= artifacts


def test_passing_run_registers_a_tagged_candidate(project: Layout, first: RunReport) -> None:
    assert first.gate.passed
    assert first.version == registry.Registered("1", new=True)
    assert aliases(first) == {"candidate": "1"}
    tags = registry.client(first.tracking_uri).get_model_version(MODEL, "1").tags
    assert tags["gate.verdict"] == "passed"
    assert tags["run_id"] == first.run_id
    assert tags["dvc.calibration_md5"] == lock_hash(project, "data/calibration")
    assert tags["git.commit"] == registry.client(first.tracking_uri).get_run(first.run_id).data.tags["git.commit"]
    gate = json.loads(project.gate_report.read_text())
    assert gate["verdict"] == "passed" and {c["name"] for c in gate["checks"]} >= {"accuracy", "accuracy_drop"}


def test_second_run_does_nothing_and_says_which_run_stands(project: Layout, first: RunReport) -> None:
    before = len(mlflow.MlflowClient(tracking_uri=first.tracking_uri).search_runs([first_experiment(first)]))
    second = compress(project=str(project.root))
    assert second.skipped and ran(second) == []
    assert second.run_id == first.run_id  # the run that still stands; no new MLflow run
    assert second.version == registry.Registered("1", new=False)
    assert len(mlflow.MlflowClient(tracking_uri=first.tracking_uri).search_runs([first_experiment(first)])) == before
    assert dvc_status(project) == {}


def test_a_changed_gate_threshold_gates_again_without_retraining(project: Layout, first: RunReport) -> None:
    write_overrides(project.params_file, ["gate.min_accuracy=0.6"])  # no stage reads it: only the gate
    report = compress(project=str(project.root))
    assert not report.skipped and ran(report) == []
    assert report.run_id != first.run_id
    assert report.version == registry.Registered("1", new=False)  # the same model, not registered again
    assert report.metrics["evaluate"] == first.metrics["evaluate"]


def test_changed_sparsity_reruns_prune_and_after_only(project: Layout, first: RunReport) -> None:
    write_overrides(project.params_file, ["prune.final_sparsity=0.6"])
    report = compress(project=str(project.root))
    assert ran(report) == ["prune", "cluster", "quantize", "evaluate", "edgetpu"]
    assert 0.59 <= report.metrics["prune"]["sparsity"] < 0.7
    assert dvc_status(project) == {}


def test_dvc_repro_runs_the_same_stages_without_prefect(project: Layout, first: RunReport) -> None:
    write_overrides(project.params_file, ["evaluate.batch_size=64"])
    output = dvc("repro", cwd=project.root).stdout
    assert "Running stage 'evaluate'" in output
    assert "Running stage 'train'" not in output
    assert dvc_status(project) == {}


def test_reproduce_rebuilds_the_champion_byte_for_byte(project: Layout, first: RunReport, prefect_api: str) -> None:
    registry.promote(first.tracking_uri, MODEL, "1")
    result = edgecompress("reproduce", "champion", cwd=project.root, prefect_api=prefect_api)
    assert result.returncode == 0, result.stderr[-3000:]
    md5 = registry.client(first.tracking_uri).get_model_version(MODEL, "1").tags["model.md5"]
    assert f"identical: data/tflite/model_int8.tflite md5 {md5} is version 1's" in result.stdout
    assert "Running stage 'train'" in result.stdout and "Running stage 'prepare'" not in result.stdout
    assert dvc_status(project) == {}  # the project itself is untouched


def test_unreachable_threshold_registers_nothing(project: Layout, first: RunReport) -> None:
    registry.promote(first.tracking_uri, MODEL, "1")
    before_versions, before_aliases = versions(first), aliases(first)
    saved = project.params_file.read_text()
    write_overrides(project.params_file, ["gate.min_accuracy=0.9999"])
    try:
        with pytest.raises(GateFailed, match=r"gate failed: accuracy [0-9.]+ >= 0.9999: fail"):
            compress(project=str(project.root))
    finally:
        project.params_file.write_text(saved)
    assert versions(first) == before_versions
    assert aliases(first) == before_aliases
    assert json.loads(project.gate_report.read_text())["verdict"] == "failed"


def test_candidate_worse_than_the_champion_fails_the_gate(project: Layout, first: RunReport) -> None:
    saved = project.params_file.read_text()
    # A model far weaker than the champion (one epoch at a tiny rate: near chance, which would stop the
    # run after train unless told to go on), with only the champion check switched on, and no
    # tolerance: the failure is forced, not a matter of noise.
    write_overrides(
        project.params_file,
        ["train.epochs=1", "train.learning_rate=0.0001", "train.stop_near_chance=false", "prune.enabled=false"]
        + ["gate.max_regression_vs_champion=0"]
        + [f"gate.{key}=null" for key in ("min_accuracy", "max_accuracy_drop")],
    )
    try:
        with pytest.raises(GateFailed) as caught:
            compress(project=str(project.root))
    finally:
        project.params_file.write_text(saved)
    assert "regression_vs_champion" in str(caught.value)
    failed = [c["name"] for c in json.loads(project.gate_report.read_text())["checks"] if c["verdict"] == "fail"]
    assert failed == ["regression_vs_champion"]
    assert aliases(first)["champion"] == "1"


def test_lineage_shows_the_calibration_hash_of_each_version(project: Layout, first: RunReport) -> None:
    old = registry.lineage(first.tracking_uri, MODEL, "1")
    write_overrides(project.params_file, ["data.calibration_size=40"])
    report = compress(project=str(project.root))
    assert report.version is not None and report.version.new
    new = registry.lineage(first.tracking_uri, MODEL, report.version.version)
    assert new["data"]["data/calibration"] == lock_hash(project, "data/calibration")
    assert new["data"]["data/calibration"] != old["data"]["data/calibration"]
    assert new["data"]["data/raw"] == old["data"]["data/raw"]
    assert old["run_id"] == first.run_id and old["gate"]["verdict"] == "passed"
    assert "champion" in old["aliases"]


def test_qat_run_reruns_from_quantize_and_logs_its_trials(project: Layout, first: RunReport) -> None:
    # Prune-preserving QAT: without clustering (tfmot's cluster-preserving QAT may lose zeros,
    # which the quantize stage refuses to ship; tests/stages/test_quantize.py covers that).
    write_overrides(project.params_file, ["quantize.method=qat", "quantize.qat_epochs=1", "cluster.enabled=false"])
    report = compress(project=str(project.root))
    assert ran(report) == ["cluster", "quantize", "evaluate", "edgetpu"]
    quantized = json.loads(project.quantize_report.read_text())
    assert quantized["method"] == "qat" and quantized["input_dtype"] == "int8"
    assert quantized["sparsity_after"] >= quantized["sparsity_before"] - 0.01
    client = registry.client(report.tracking_uri)
    experiment = client.get_run(report.run_id).info.experiment_id
    nested = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{report.run_id}'")
    assert [run.data.tags["method"] for run in nested] == ["qat"]
    assert nested[0].data.tags["kept"] == "true"
    if report.version is not None:
        assert client.get_model_version(MODEL, report.version.version).tags["quantize.method"] == "qat"


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


def test_channel_pruning_runs_through_clustering_qat_the_gate_and_the_registry(
    project: Layout, first: RunReport, prefect_api: str
) -> None:
    """prune.method: channels makes a smaller dense model every later step takes as any model, and
    `reproduce` rebuilds it byte for byte in another process (the distilled fine-tune included)."""
    saved = project.params_file.read_text()
    write_overrides(
        project.params_file,
        [
            "prune.method=channels",
            "prune.channel_fraction=0.5",
            "cluster.enabled=true",
            "quantize.method=qat",
            "quantize.qat_epochs=1",
        ],
    )
    try:
        report = compress(project=str(project.root))
    finally:
        project.params_file.write_text(saved)
    assert ran(report)[0] == "prune"
    assert json.loads(project.prune_report.read_text())["pruned_weights"] == []
    assert json.loads(project.cluster_report.read_text())["enabled"]
    quantized = json.loads(project.quantize_report.read_text())
    # Clustered but not sparse: tfmot's cluster-preserving scheme, which freezes no zeros.
    assert quantized["method"] == "qat" and quantized["trials"][0]["scheme"] == "cluster-preserving"
    shipped, before = report.metrics["evaluate"]["int8_tflite"], first.metrics["evaluate"]["int8_tflite"]
    assert shipped["param_bytes"] < 0.6 * before["param_bytes"] and shipped["macs"] < before["macs"]
    assert report.metrics["evaluate"]["pruned"]["macs"] == shipped["macs"] < report.metrics["evaluate"]["float"]["macs"]
    assert report.gate.passed and report.version is not None and report.version.new
    metrics = mlflow.MlflowClient(tracking_uri=report.tracking_uri).get_run(report.run_id).data.metrics
    assert metrics["prune.totals.int8_param_bytes.after"] < metrics["prune.totals.int8_param_bytes.before"]
    assert metrics["evaluate.int8_tflite.param_bytes"] == shipped["param_bytes"]
    assert metrics["evaluate.pruned.macs"] == shipped["macs"]
    changed = registry.diff(report.tracking_uri, MODEL, "1", report.version.version)
    assert changed["shipped"]["param_bytes"] == [before["param_bytes"], shipped["param_bytes"]]
    assert changed["params"]["prune.method"] == ["magnitude", "channels"]
    version = report.version.version
    result = edgecompress("reproduce", version, cwd=project.root, prefect_api=prefect_api)
    assert result.returncode == 0, result.stderr[-3000:]
    md5 = registry.client(report.tracking_uri).get_model_version(MODEL, version).tags["model.md5"]
    assert f"identical: data/tflite/model_int8.tflite md5 {md5} is version {version}'s" in result.stdout
