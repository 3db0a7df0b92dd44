"""Why a registered version exists: its lineage, the history of versions, what differs between two."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tasks.bookkeeping.tracking import server_errors
from tasks.registry.register import RegistryError, client, resolve

log = logging.getLogger(__name__)


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


# The shipped model's figures `diff` always shows side by side, changed or not: what the device holds
# and computes beside the download, and what it costs in accuracy.
SHIPPED_FIGURES = ("accuracy", "param_bytes", "macs", "gzip_bytes", "size_bytes")


def _shipped(record: dict[str, Any], figure: str) -> float | None:
    """A figure of the version's shipped .tflite from its run's metrics (None when the run did not record it)."""
    mode = record["params"].get("quantize.ptq_mode", "int8")
    return record["metrics"].get(f"evaluate.{mode}_tflite.{figure}")


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
        "shipped": {figure: [_shipped(a, figure), _shipped(b, figure)] for figure in SHIPPED_FIGURES},
        "params": changed(a["params"], b["params"]),
        # Stage timings differ on every run and say nothing about the model.
        "metrics": changed(
            {k: v for k, v in a["metrics"].items() if not k.startswith("seconds.")},
            {k: v for k, v in b["metrics"].items() if not k.startswith("seconds.")},
        ),
        "data": changed(a["data"], b["data"]),
        "code": changed(a["code"], b["code"]),
    }
