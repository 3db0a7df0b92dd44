"""MLflow: one run per pipeline run, with params, per-variant metrics, artifacts and lineage tags."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.bookkeeping.plan import StageOutcome
from tasks.bookkeeping.timing import Timings
from tasks.bookkeeping.versioning import code_version, lock_out_hashes
from tasks.errors import EdgecompressError
from tasks.layout import Layout
from tasks.params import Params
from tasks.stages.gate import GateResult

log = logging.getLogger(__name__)

EXPERIMENT = "edgecompress"

# A call to the tracking server retries transient HTTP errors itself (MLflow's own backoff); these bound it so
# an unreachable server is reported in seconds rather than after MLflow's default ~2 minutes.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
# Reading a gate.json or dvc.lock back is instant; a progress bar per file is noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class TrackingError(EdgecompressError):
    """A request to the tracking server or store failed or was refused."""


# Stores MLflow keeps runs and a model registry in (its registry's list, less its folder store):
# a tracking server, a database (a "+driver" suffix allowed), Databricks.
USABLE_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")


def tracking_uri(root: Path) -> str:
    """MLFLOW_TRACKING_URI when set (and usable, else TrackingError), else a SQLite store in the project folder."""
    chosen = os.environ.get("MLFLOW_TRACKING_URI")
    if not chosen:
        return f"sqlite:///{(root / 'mlflow.db').resolve()}"
    check_uri(chosen)
    return chosen


def check_uri(uri: str) -> None:
    """TrackingError naming MLFLOW_TRACKING_URI when MLflow could not keep runs and models there.

    A value without a scheme is a folder to MLflow, and `file:` its folder store, which MLflow 3
    refuses with a paragraph about maintenance mode (unless MLFLOW_ALLOW_FILE_STORE=true, its
    own opt-out, which is respected here too).
    """
    from urllib.parse import urlsplit

    from tasks.errors import clip, echo

    parts = urlsplit(uri)
    scheme = parts.scheme.lower().split("+")[0]
    folder = scheme in ("", "file")
    if scheme in ("http", "https"):
        if parts.netloc:
            return
        why = "no host after the scheme"
    elif scheme in USABLE_SCHEMES:
        return
    elif folder:
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true"):
            return
        why = "a folder: MLflow's file store, which MLflow 3 refuses"
    else:
        why = f"unknown scheme {echo(parts.scheme)}"
    raise TrackingError(
        f"MLFLOW_TRACKING_URI={clip(uri)} is not a usable tracking store ({why}); use http(s)://HOST:PORT "
        "for a tracking server, sqlite:///PATH/mlflow.db for a file, postgresql://... for a database, or "
        "unset it for the project's own store"
    )


def configure(root: Path) -> str:
    """Point MLflow at the project's store and experiment; return the tracking URI."""
    import mlflow

    chosen = "MLFLOW_TRACKING_URI" in os.environ  # by the user, before MLflow's own export below
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    if not chosen:
        # set_tracking_uri also exports MLFLOW_TRACKING_URI. Left there, it would make the next
        # project configured in this process (a test, a notebook, a sweep's worker) take this
        # project's store for one the user chose.
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        # With the local default, artifacts sit beside mlflow.db rather than in the caller's cwd.
        location = None if chosen else (root / "mlartifacts").resolve().as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return uri


class TrackedRun:
    """The MLflow run of one pipeline run; every call is timed under 'tracking'."""

    def __init__(self, run_id: str, experiment_id: str, timings: Timings, uri: str = "") -> None:
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.uri = uri
        self._timings = timings

    def link(self, uri: str) -> str:
        """Where to look at this run (a URL when the tracking server has a UI)."""
        from tasks.bookkeeping.summary import mlflow_link

        return mlflow_link(uri, self.experiment_id, self.run_id)

    def log_outcome(self, layout: Layout, outcomes: list[StageOutcome]) -> dict[str, Any]:
        """Log every stage's metrics and timing, the models, the reports and the data hashes.

        Metrics come from the reports on disk, not from what ran, so a run whose stages were
        all current still records the metrics of the outputs it stands for.
        """
        import mlflow

        with self._timings.measure("tracking"), server_errors(self.uri):
            metrics = read_reports(layout)
            flat: dict[str, float] = {}
            for stage, summary in metrics.items():
                flat.update(metric_items(stage, summary))
            flat.update({f"seconds.{o.name}": round(o.seconds, 3) for o in outcomes})
            mlflow.log_metrics(flat)
            mlflow.set_tags({f"stage.{o.name}": "ran" if o.ran else "skipped" for o in outcomes})
            hashes = lock_out_hashes(layout.root)
            mlflow.set_tags(
                {
                    "dvc.raw_md5": hashes.get("data/raw", ""),
                    "dvc.calibration_md5": hashes.get("data/calibration", ""),
                }
            )
            quantized = json.loads(layout.quantize_report.read_text())
            for path in (layout.float_tflite, layout.quantized_tflite(quantized["ptq_mode"])):
                mlflow.log_artifact(str(path), artifact_path="tflite")
            for path in (layout.quant_debug_csv, layout.quant_debug_plot):
                mlflow.log_artifact(str(path), artifact_path="reports")
            self._log_trials(quantized["trials"])
            for path in (
                layout.train_report,
                layout.prune_report,
                layout.cluster_report,
                layout.quantize_report,
                layout.metrics,
                layout.edgetpu_report,
            ):
                mlflow.log_artifact(str(path), artifact_path="reports")
            mlflow.log_artifacts(str(layout.edgetpu_dir), artifact_path="tflite/edgetpu")
            mlflow.log_artifact(str(layout.root / "dvc.lock"))
        return metrics

    @staticmethod
    def _log_trials(trials: list[dict[str, Any]]) -> None:
        """Each quantization attempt as a nested run: its metrics, and why it was kept or rejected."""
        import mlflow

        for trial in trials:
            with mlflow.start_run(run_name=f"quantize/{trial['name']}", nested=True):
                mlflow.log_metrics(
                    {k: float(trial[k]) for k in ("accuracy", "drop", "size_bytes", "sparsity") if trial[k] is not None}
                )
                tags = {"method": trial["method"], "kept": str(trial["kept"]).lower(), "reason": trial["reason"]}
                mlflow.set_tags({**tags, **({"scheme": trial["scheme"]} if trial.get("scheme") else {})})

    def log_gate(self, layout: Layout, result: GateResult) -> None:
        """The gate verdict as a tag, each check's observed value as a metric, gate.json as an artifact."""
        import mlflow

        with self._timings.measure("tracking"), server_errors(self.uri):
            mlflow.set_tag("gate.verdict", result.verdict)
            observed = {f"gate.{c.name}": c.observed for c in result.checks if c.observed is not None}
            mlflow.log_metrics({name: float(value) for name, value in observed.items()})
            mlflow.log_artifact(str(layout.gate_report), artifact_path="reports")


@contextmanager
def pipeline_run(root: Path, params: Params, timings: Timings) -> Iterator[TrackedRun]:
    """An MLflow run that ends FINISHED only when the block succeeds (FAILED otherwise).

    A tracking store that fails (unreachable server, unreadable mlflow.db) is a one-line
    TrackingError. When the block already failed, a store that cannot record the FAILED status
    is logged, not raised over the block's own error.
    """
    import mlflow
    import yaml

    from tasks.bookkeeping.journal import note_mlflow_run

    uri = tracking_uri(root)
    with timings.measure("tracking"), server_errors(uri):
        configure(root)
        code = code_version(root)
        run = mlflow.start_run()
    status = "FAILED"
    try:
        with timings.measure("tracking"), server_errors(uri):
            note_mlflow_run(root, uri, run.info.run_id)  # so a killed run's MLflow run is closed by the next one
            mlflow.log_params(params.flat())
            # The settings the run loaded, whole: what a reviewer (and `reproduce`) reads back.
            mlflow.log_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False), "params.yaml")
            mlflow.set_tags({"git.commit": code.commit, "git.dirty": str(code.dirty).lower()})
        yield TrackedRun(run.info.run_id, run.info.experiment_id, timings, uri)
        status = "FINISHED"
    finally:
        with timings.measure("tracking"):
            try:
                with server_errors(uri):
                    mlflow.end_run(status)
            except TrackingError as error:
                if status == "FINISHED":
                    raise
                log.warning("MLflow run %s could not be closed as FAILED: %s", run.info.run_id, error)


def read_reports(layout: Layout) -> dict[str, dict[str, Any]]:
    """Each stage's report as {stage: values}; evaluate's variants are lifted to the top."""
    reports = {
        name: json.loads(path.read_text())
        for name, path in (
            ("train", layout.train_report),
            ("prune", layout.prune_report),
            ("cluster", layout.cluster_report),
            ("quantize", layout.quantize_report),
            ("evaluate", layout.metrics),
            ("edgetpu", layout.edgetpu_report),
        )
    }
    # The per-operator lists are for reading, not for plotting; keep the headline figures.
    tpu = reports["edgetpu"]
    reports["edgetpu"] = {key: tpu[key] for key in ("mapped_fraction", "subgraphs", "source", "note")}
    if tpu.get("memory"):
        reports["edgetpu"]["memory"] = memory_metrics(tpu["memory"])
    evaluation = reports["evaluate"]
    reports["evaluate"] = {
        **evaluation["variants"],
        **evaluation["summary"],
        "test_images": evaluation["test_images"],
        "shipped": evaluation["shipped"],
        "shipped_accuracy": evaluation["variants"][evaluation["shipped"]]["accuracy"],
    }
    quantized = reports["quantize"]
    reports["quantize"] = {k: v for k, v in quantized.items() if k != "trials"}
    return reports


def memory_metrics(memory: dict[str, Any]) -> dict[str, Any]:
    """The Edge TPU memory figures worth a metric: the gate's, and the prediction's beside the compiler's."""
    headline = ("on_chip_bytes", "off_chip_bytes", "capacity_bytes", "largest_activation_bytes", "segments")
    view: dict[str, Any] = {key: memory.get(key) for key in ("source", *headline)}
    for side in ("predicted", "compiler", "streams"):
        if memory.get(side):
            view[side] = {key: memory[side].get(key) for key in ("on_chip_bytes", "off_chip_bytes")}
    return view


def metric_items(stage: str, summary: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a stage summary as '<stage>.<path>' metrics (booleans and text left out)."""
    items: dict[str, float] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items.update(metric_items(stage, value, prefix=f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            items[f"{stage}.{name}"] = float(value)
    return items


@contextmanager
def server_errors(uri: str, needs: str = "") -> Iterator[None]:
    """Turn MLflow's transport, permission and lookup failures into one-line TrackingErrors.

    `needs` says what a refused request would have needed (the permission to ask an admin for).
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        status = error.get_http_status_code()
        if status == 401:
            raise TrackingError(
                f"tracking server {uri} rejected the credentials; check MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials)"
            ) from None
        if status == 403:
            raise TrackingError(
                f"tracking server {uri} refused {_account()}: permission denied" + (f" ({needs})" if needs else "")
            ) from None
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "Max retries exceeded" in text or "Connection" in text or "connect" in text:
            raise TrackingError(f"tracking server {uri} is unreachable; check MLFLOW_TRACKING_URI") from None
        if "PERMISSION_DENIED" in text or "Permission denied" in text or "403" in text:
            raise TrackingError(f"tracking server {uri} refused: {text[:200]}") from None
        raise TrackingError(text[:300]) from None
    except Exception as error:
        # A file store that is not MLflow's (a corrupt mlflow.db) fails inside SQLAlchemy.
        if type(error).__module__.split(".")[0] == "sqlalchemy":
            reason = str(error).strip().splitlines()[0][:160]
            raise TrackingError(
                f"{uri}: not a usable MLflow store ({reason}); move the file aside to start a new one, "
                "or set MLFLOW_TRACKING_URI"
            ) from None
        raise


def _account() -> str:
    """Who the tracking server was told we are (MLflow's credential variables or file)."""
    from mlflow.utils.credentials import read_mlflow_creds

    username = read_mlflow_creds().username
    return f"user {username!r}" if username else "an anonymous client (no MLFLOW_TRACKING_USERNAME)"
