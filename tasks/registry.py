"""The MLflow model registry: register gated candidates, promote and roll back by alias, review lineage.

Aliases, not the deprecated stages: `candidate` (the newest version that passed the gate),
`champion` (what is deployed), `previous-champion` (what `rollback` returns to). Every version
carries tags saying why it exists: the gate verdict, key metrics, git commit, DVC hashes of the
data and calibration set, a hash of the params, and the run that made it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import EdgecompressError
from tasks.gate import GateResult
from tasks.layout import Layout
from tasks.params import Params

log = logging.getLogger(__name__)

CANDIDATE, CHAMPION, PREVIOUS = "candidate", "champion", "previous-champion"
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
# What an account needs on a tracking server with MLflow's basic auth to promote or roll back.
MOVE_ALIASES = "moving champion needs EDIT on the registered model"

# A registry call retries transient HTTP errors itself (MLflow's own backoff); these bound it so
# an unreachable server is reported in seconds rather than after MLflow's default ~2 minutes.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
# Reading a gate.json or dvc.lock back is instant; a progress bar per file is noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class RegistryError(EdgecompressError):
    """A registry request failed or was refused."""


@dataclass(frozen=True)
class Registered:
    """The version a candidate is registered as, and whether this run created it."""

    version: str
    new: bool


@dataclass(frozen=True)
class Moved:
    """What an alias change did."""

    model: str
    champion: str
    previous: str | None
    message: str


@contextmanager
def server_errors(uri: str, needs: str = "") -> Iterator[None]:
    """Turn MLflow's transport, permission and lookup failures into one-line RegistryErrors.

    `needs` says what a refused request would have needed (the permission to ask an admin for).
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        status = error.get_http_status_code()
        if status == 401:
            raise RegistryError(
                f"tracking server {uri} rejected the credentials; check MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials)"
            ) from None
        if status == 403:
            raise RegistryError(
                f"tracking server {uri} refused {_account()}: permission denied" + (f" ({needs})" if needs else "")
            ) from None
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "Max retries exceeded" in text or "Connection" in text or "connect" in text:
            raise RegistryError(f"tracking server {uri} is unreachable; check MLFLOW_TRACKING_URI") from None
        if "PERMISSION_DENIED" in text or "Permission denied" in text or "403" in text:
            raise RegistryError(f"tracking server {uri} refused: {text[:200]}") from None
        raise RegistryError(text[:300]) from None
    except Exception as error:
        # A file store that is not MLflow's (a corrupt mlflow.db) fails inside SQLAlchemy.
        if type(error).__module__.split(".")[0] == "sqlalchemy":
            reason = str(error).strip().splitlines()[0][:160]
            raise RegistryError(
                f"{uri}: not a usable MLflow store ({reason}); move the file aside to start a new one, "
                "or set MLFLOW_TRACKING_URI"
            ) from None
        raise


def _account() -> str:
    """Who the tracking server was told we are (MLflow's credential variables or file)."""
    from mlflow.utils.credentials import read_mlflow_creds

    username = read_mlflow_creds().username
    return f"user {username!r}" if username else "an anonymous client (no MLFLOW_TRACKING_USERNAME)"


def client(uri: str) -> Any:
    """An MlflowClient on the tracking and registry store at `uri`."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def params_hash(params: Params) -> str:
    """A short, stable hash of every setting: equal hashes mean equal params."""
    canonical = json.dumps(params.model_dump(), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def alias_version(mlflow_client: Any, name: str, alias: str) -> Any | None:
    """The version holding `alias`, or None (also when the model does not exist yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if getattr(error, "error_code", "") in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        # MLflow's basic-auth app answers 403, not 404, for an alias of a model that does not
        # exist yet; the model lookup tells the two apart (and raises for a real refusal).
        if getattr(error, "error_code", "") == "PERMISSION_DENIED" and not _model_exists(mlflow_client, name):
            return None
        raise


def _model_exists(mlflow_client: Any, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
    except MlflowException as error:
        if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def champion_accuracy(uri: str, name: str) -> float | None:
    """The champion's recorded int8 accuracy (None when there is no champion)."""
    with server_errors(uri):
        version = alias_version(client(uri), name, CHAMPION)
    if version is None:
        return None
    recorded = version.tags.get("metrics.int8_accuracy")
    return float(recorded) if recorded is not None else None


def register(uri: str, layout: Layout, params: Params, run_id: str, gate: GateResult) -> Registered:
    """Log the shipped model as a pyfunc in the run, register it, alias it `candidate`, tag it.

    A model already registered byte for byte (a run with nothing changed) is not registered again:
    its version becomes the candidate.
    """
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    from tasks import data
    from tasks.inference import TFLiteModel

    if not gate.passed:
        raise RegistryError("refusing to register a candidate that failed the gate")
    metrics = json.loads(layout.metrics.read_text())
    variants, shipped_model = metrics["variants"], layout.quantized_tflite(params.quantize.ptq_mode)
    name = params.registry.model_name
    digest = hashlib.md5(shipped_model.read_bytes()).hexdigest()
    with server_errors(uri):
        mlflow_client = client(uri)
        same = [
            v
            for v in mlflow_client.search_model_versions(f"name = '{name}'")
            if v.tags.get("model.md5") == digest and v.tags.get("gate.verdict") == "passed"
        ]
        if same:
            existing = str(max(int(v.version) for v in same))
            mlflow_client.set_registered_model_alias(name, CANDIDATE, existing)
            log.info("the same model is already %s version %s; not registered again", name, existing)
            return Registered(existing, new=False)
    # The signature names the input the model takes as it is: uint8 frames when the shipped model's
    # input is uint8 with scale 1 (quantize.io_dtype uint8), float32 pixel values otherwise.
    tflite = TFLiteModel(shipped_model)
    pixels = data.load_calibration(layout, params.data).head(2).arrays()[0]
    example = np.rint(pixels).astype(np.uint8) if tflite.takes_frames else pixels.astype(np.float32)
    signature = infer_signature(example, tflite.predict(example))
    artifacts = {
        "tflite": str(shipped_model),
        "metrics": str(layout.metrics),
        "gate": str(layout.gate_report),
        "edgetpu_report": str(layout.edgetpu_report),
    }
    # The compiled model and the compiler's log travel with the version when the compiler ran.
    artifacts.update({path.name: str(path) for path in sorted(layout.edgetpu_dir.glob("*_edgetpu.*"))})
    edgetpu = json.loads(layout.edgetpu_report.read_text())
    with server_errors(uri):
        run_tags = mlflow_client.get_run(run_id).data.tags
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts=artifacts,
            code_paths=[str(Path(__file__).parent)],
            signature=signature,
            input_example=example,
            # Stated, not inferred: inference would load the model and trace its imports.
            pip_requirements=[f"ai-edge-litert=={_version('ai-edge-litert')}", f"numpy=={np.__version__}"],
            registered_model_name=name,
        )
        version = str(info.registered_model_version)
        shipped = variants[metrics["shipped"]]
        quantized = json.loads(layout.quantize_report.read_text())
        tags = {
            "quantize.method": quantized["method"],
            "quantize.ptq_mode": quantized["ptq_mode"],
            "gate.verdict": gate.verdict,
            "metrics.int8_accuracy": shipped["accuracy"],
            "metrics.float_accuracy": variants["float_tflite"]["accuracy"],
            "metrics.int8_size_bytes": shipped["size_bytes"],
            "metrics.int8_gzip_bytes": shipped["gzip_bytes"],
            "metrics.sparsity": variants["pruned"].get("sparsity", ""),
            "git.commit": run_tags.get("git.commit", ""),
            "git.dirty": run_tags.get("git.dirty", ""),
            "dvc.raw_md5": run_tags.get("dvc.raw_md5", ""),
            "dvc.calibration_md5": run_tags.get("dvc.calibration_md5", ""),
            "params.hash": params_hash(params),
            "model.md5": digest,
            "edgetpu.mapped_fraction": edgetpu["mapped_fraction"],
            "edgetpu.subgraphs": edgetpu["subgraphs"],
            "edgetpu.source": edgetpu["source"],
            "edgetpu.compiled": str(edgetpu["compiled"]).lower(),
            "run_id": run_id,
        }
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(name, version, key, str(value))
        mlflow_client.set_registered_model_alias(name, CANDIDATE, version)
    log.info("registered %s version %s as %s", name, version, CANDIDATE)
    return Registered(version, new=True)


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def resolve(mlflow_client: Any, name: str, ref: str) -> Any:
    """A version from a number or an alias; RegistryError naming what does not exist."""
    from mlflow.exceptions import MlflowException

    ref = str(ref)  # MLflow hands out version numbers as ints
    try:
        if ref.isdigit():
            return mlflow_client.get_model_version(name, ref)
        return mlflow_client.get_model_version_by_alias(name, ref)
    except MlflowException as error:
        if getattr(error, "error_code", "") in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            kind = "version" if ref.isdigit() else "alias"
            raise RegistryError(f"model {name!r} has no {kind} {ref!r}; see `edgecompress history`") from None
        raise


def parse_ref(ref: str, default_model: str) -> tuple[str, str]:
    """'name@alias', 'name@3', '@champion', 'champion' or '3' -> (name, alias-or-version)."""
    name, at, which = ref.rpartition("@")
    if not at:
        return default_model, ref
    return name or default_model, which


def promote(uri: str, name: str, version: str | None = None) -> Moved:
    """Move `champion` to a gated version (default: the current candidate), keeping the old one as previous."""
    with server_errors(uri, needs=MOVE_ALIASES):
        mlflow_client = client(uri)
        target = resolve(mlflow_client, name, str(version) if version else CANDIDATE)
        number = str(target.version)
        verdict = target.tags.get("gate.verdict")
        if verdict != "passed":
            record = f"its gate {verdict}" if verdict else "it has no gate record"
            raise RegistryError(f"refusing to promote {name} version {number}: {record}")
        current = alias_version(mlflow_client, name, CHAMPION)
        previous = str(current.version) if current is not None else None
        if previous == number:
            return Moved(name, number, None, f"{name} version {number} is already {CHAMPION}")
        mlflow_client.set_registered_model_alias(name, CHAMPION, number)
        if previous is not None:
            mlflow_client.set_registered_model_alias(name, PREVIOUS, previous)
    was = f" (was {previous}, now {PREVIOUS})" if previous else ""
    return Moved(name, number, previous, f"{name} version {number} is now {CHAMPION}{was}")


def rollback(uri: str, name: str) -> Moved:
    """Swap `champion` and `previous-champion`, so a second rollback undoes the first."""
    with server_errors(uri, needs=MOVE_ALIASES):
        mlflow_client = client(uri)
        previous = alias_version(mlflow_client, name, PREVIOUS)
        if previous is None:
            raise RegistryError(f"{name} has no {PREVIOUS} to roll back to")
        current = alias_version(mlflow_client, name, CHAMPION)
        back_to = str(previous.version)
        was = str(current.version) if current is not None else None
        mlflow_client.set_registered_model_alias(name, CHAMPION, back_to)
        if was is not None:
            mlflow_client.set_registered_model_alias(name, PREVIOUS, was)
    return Moved(name, back_to, was, f"{name} rolled back: {CHAMPION} is version {back_to} (was {was})")


def beats_champion(uri: str, name: str, accuracy: float) -> bool:
    """True when there is no champion or the candidate is more accurate than it."""
    best = champion_accuracy(uri, name)
    return best is None or accuracy > best


def _artifact_json(mlflow_client: Any, run_id: str, path: str) -> Any:
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow_client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        return yaml.safe_load(Path(local).read_text())


def lineage(uri: str, name: str, ref: str) -> dict[str, Any]:
    """Version -> run -> params, metrics, gate checks -> data hashes (from the run's dvc.lock) and code."""
    with server_errors(uri):
        mlflow_client = client(uri)
        version = resolve(mlflow_client, name, ref)
        run = mlflow_client.get_run(version.run_id)
        gate = _artifact_json(mlflow_client, version.run_id, "reports/gate.json")
        lock = _artifact_json(mlflow_client, version.run_id, "dvc.lock") or {}
        aliases = list(getattr(version, "aliases", []) or [])
    outs = {
        out["path"]: out.get("md5", "")
        for stage in (lock.get("stages") or {}).values()
        for out in stage.get("outs") or []
    }
    return {
        "model": name,
        "version": str(version.version),
        "aliases": aliases,
        "created": version.creation_timestamp,
        "run_id": version.run_id,
        "params": dict(sorted(run.data.params.items())),
        "metrics": dict(sorted(run.data.metrics.items())),
        "gate": gate,
        "data": {
            "data/raw": outs.get("data/raw", version.tags.get("dvc.raw_md5", "")),
            "data/calibration": outs.get("data/calibration", version.tags.get("dvc.calibration_md5", "")),
        },
        "outputs": outs,
        "code": {"commit": run.data.tags.get("git.commit", ""), "dirty": run.data.tags.get("git.dirty", "")},
        "tags": dict(sorted(version.tags.items())),
    }


@dataclass(frozen=True)
class Build:
    """What made a registered version: its run's dvc.lock, the code's commit, the shipped model's md5."""

    model: str
    version: str
    run_id: str
    lock: dict[str, Any]
    commit: str
    dirty: bool
    model_md5: str


def recorded_build(uri: str, name: str, ref: str) -> Build:
    """The lineage of a version as needed to restore or rebuild it (its run must have logged dvc.lock)."""
    with server_errors(uri):
        mlflow_client = client(uri)
        version = resolve(mlflow_client, name, ref)
        lock = _artifact_json(mlflow_client, version.run_id, "dvc.lock")
    if not lock:
        raise RegistryError(f"{name} version {version.version}: its run logged no dvc.lock; nothing to restore")
    tags = version.tags
    return Build(
        model=name,
        version=str(version.version),
        run_id=version.run_id,
        lock=lock,
        commit=tags.get("git.commit", ""),
        dirty=tags.get("git.dirty", "") == "true",
        model_md5=tags.get("model.md5", ""),
    )


def recorded_lock(uri: str, name: str, ref: str) -> tuple[str, dict[str, Any]]:
    """(version, the dvc.lock logged with the run that made it)."""
    build = recorded_build(uri, name, ref)
    return build.version, build.lock


def history(uri: str, name: str) -> list[dict[str, Any]]:
    """Every version of the model, newest first, with its gate verdict, key metrics and aliases."""
    with server_errors(uri):
        mlflow_client = client(uri)
        versions = mlflow_client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise RegistryError(f"no registered model named {name!r} in {uri}; run `edgecompress run` first")
        aliases: dict[str, list[str]] = {}
        for alias, number in (mlflow_client.get_registered_model(name).aliases or {}).items():
            aliases.setdefault(str(number), []).append(alias)
    rows = [
        {
            "version": int(v.version),
            "aliases": sorted(aliases.get(str(v.version), [])),
            "gate": v.tags.get("gate.verdict", ""),
            "int8_accuracy": _number(v.tags.get("metrics.int8_accuracy")),
            "float_accuracy": _number(v.tags.get("metrics.float_accuracy")),
            "int8_size_bytes": _number(v.tags.get("metrics.int8_size_bytes")),
            "sparsity": _number(v.tags.get("metrics.sparsity")),
            "git_commit": v.tags.get("git.commit", "")[:12],
            "run_id": v.run_id,
            "created": v.creation_timestamp,
        }
        for v in versions
    ]
    return sorted(rows, key=lambda row: row["version"], reverse=True)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def diff(uri: str, name: str, ref_a: str, ref_b: str) -> dict[str, Any]:
    """What differs between two versions in params, metrics and data."""
    a, b = lineage(uri, name, ref_a), lineage(uri, name, ref_b)

    def changed(left: dict[str, Any], right: dict[str, Any]) -> dict[str, list[Any]]:
        return {
            key: [left.get(key), right.get(key)]
            for key in sorted(set(left) | set(right))
            if left.get(key) != right.get(key)
        }

    return {
        "model": name,
        "versions": [a["version"], b["version"]],
        "params": changed(a["params"], b["params"]),
        # Stage timings differ on every run and say nothing about the model.
        "metrics": changed(
            {k: v for k, v in a["metrics"].items() if not k.startswith("seconds.")},
            {k: v for k, v in b["metrics"].items() if not k.startswith("seconds.")},
        ),
        "data": changed(a["data"], b["data"]),
        "code": changed(a["code"], b["code"]),
    }
