"""What a run leaves behind while it runs, so that the next one can clean up after a run that died.

Two files, both written while the project lock is held (tasks/bookkeeping/lock.py):
- `params.yaml.journal`, beside params.yaml, exists only while a run with `-S` overrides is in
  flight: the file as it was before the overrides, and a hash of what the run wrote. A run that
  succeeds keeps its overrides and deletes the journal; one that fails restores the original. If the
  process is killed, the next command finds the journal and restores the original, so a dead run's
  settings are never trained with, gated with or recorded again.
- `.dvc/tmp/edgecompress-run.json` names the running process and its MLflow run. The next run
  finds it only if that process died; it then marks the MLflow run KILLED.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import EdgecompressError

log = logging.getLogger(__name__)

PARAMS_JOURNAL = "params.yaml.journal"


class JournalError(EdgecompressError):
    """A leftover of a dead run that cannot be cleaned up without the user."""


def params_journal(root: Path) -> Path:
    return root / PARAMS_JOURNAL


def run_record(root: Path) -> Path:
    return root / ".dvc" / "tmp" / "edgecompress-run.json"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    from tasks.fsutil import write_text

    write_text(path, json.dumps(payload, indent=2) + "\n")


def begin_overrides(root: Path, original: str, mode: int, written: str) -> None:
    """Journal params.yaml before a run writes its -S overrides into it."""
    _write_json(
        params_journal(root),
        {
            "pid": os.getpid(),
            "started": time.time(),
            "mode": mode,
            "written_sha256": _sha(written),
            "original": original,
        },
    )


def write_overrides(root: Path, overrides: list[str]) -> None:
    """Write a run's -S overrides into params.yaml, the original kept in params.yaml.journal first."""
    from tasks.fsutil import write_text
    from tasks.params import check_overrides, render_overrides

    path = root / "params.yaml"
    check_overrides(path, overrides)
    if not overrides:
        return
    original = path.read_text()
    text = render_overrides(path, overrides)
    begin_overrides(root, original, path.stat().st_mode & 0o7777, text)
    write_text(path, text)


def end_overrides(root: Path, keep: bool) -> None:
    """After the run: keep the overrides (success) or put the original back (failure)."""
    journal = params_journal(root)
    if not journal.is_file():
        return
    if not keep:
        _restore(root, json.loads(journal.read_text()))
    journal.unlink()


def _restore(root: Path, entry: dict[str, Any]) -> None:
    from tasks.fsutil import write_text

    params_file = root / "params.yaml"
    write_text(params_file, entry["original"])
    params_file.chmod(entry["mode"])


def begin_run(root: Path) -> None:
    """Record that this process is running the project (its MLflow run is noted once it exists)."""
    _write_json(run_record(root), {"pid": os.getpid(), "started": time.time(), "mlflow": None})


def note_mlflow_run(root: Path, tracking_uri: str, run_id: str) -> None:
    """Remember the running MLflow run, so a killed process's run can be closed by the next one."""
    record = run_record(root)
    if record.is_file():
        entry = json.loads(record.read_text())
        entry["mlflow"] = {"tracking_uri": tracking_uri, "run_id": run_id}
        _write_json(record, entry)


def end_run(root: Path) -> None:
    run_record(root).unlink(missing_ok=True)


@dataclass(frozen=True)
class Recovered:
    """What the lock holder cleaned up after a dead run."""

    params_restored: bool = False
    mlflow_killed: str | None = None


def recover(root: Path) -> Recovered:
    """Clean up after a run that died holding the lock (call with the lock held: nobody else runs)."""
    restored = False
    journal = params_journal(root)
    if journal.is_file():
        entry = json.loads(journal.read_text())
        current = (root / "params.yaml").read_text() if (root / "params.yaml").is_file() else ""
        if _sha(current) != entry["written_sha256"] and current != entry["original"]:
            raise JournalError(
                f"{PARAMS_JOURNAL}: a run that did not finish (pid {entry['pid']}) wrote -S overrides into "
                "params.yaml, and params.yaml has changed since; compare the two, keep what you want in "
                f"params.yaml and delete {PARAMS_JOURNAL}"
            )
        _restore(root, entry)
        journal.unlink()
        restored = True
        log.warning(
            "restored params.yaml: a run that did not finish (pid %s) had written -S overrides into it", entry["pid"]
        )
    killed = None
    record = run_record(root)
    if record.is_file():
        entry = json.loads(record.read_text())
        mlflow_run = entry.get("mlflow")
        if mlflow_run:
            killed = _mark_killed(mlflow_run["tracking_uri"], mlflow_run["run_id"])
        record.unlink()
    return Recovered(restored, killed)


def _mark_killed(uri: str, run_id: str) -> str | None:
    """Close a dead run's MLflow run as KILLED and void what it registered; its id, or None.

    A version the dead run registered is deleted: it may lack its gate record (killed between the
    registration and its tags), or have passed a gate loosened by the dead run's -S overrides,
    which params.yaml no longer holds. The next run registers the model again if it passes.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        if client.get_run(run_id).info.status != "RUNNING":
            return None
        client.set_terminated(run_id, status="KILLED")
        for version in client.search_model_versions(f"run_id = '{run_id}'"):
            client.delete_model_version(version.name, version.version)
            log.warning(
                "deleted %s version %s: the run that registered it did not finish", version.name, version.version
            )
    except MlflowException as error:
        log.warning("could not mark the dead run's MLflow run %s KILLED: %s", run_id, str(error).splitlines()[0])
        return None
    log.warning("marked MLflow run %s KILLED: the run that made it did not finish", run_id)
    return run_id


# --- the last successful run ---------------------------------------------------------------------


def _canonical(params: dict[str, Any]) -> dict[str, Any]:
    """Params as JSON reads them back (tuples become lists), so a record compares equal to itself."""
    return json.loads(json.dumps(params, default=str))


def last_run_file(root: Path) -> Path:
    return root / ".dvc" / "tmp" / "edgecompress-last-run.json"


def record_success(
    root: Path, params: dict[str, Any], tracking_uri: str, model: str, version: str, run_id: str
) -> None:
    """Remember what a successful run stood for: its settings, its dvc.lock, where it registered what."""
    lock = root / "dvc.lock"
    _write_json(
        last_run_file(root),
        {
            "finished": time.time(),
            "params": _canonical(params),
            "lock_sha256": _sha(lock.read_text()) if lock.is_file() else "",
            "tracking_uri": tracking_uri,
            "model": model,
            "version": version,
            "mlflow_run_id": run_id,
        },
    )


def last_success(root: Path) -> dict[str, Any] | None:
    """The record of the last successful run, or None."""
    path = last_run_file(root)
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def changed_since_success(root: Path, params: dict[str, Any], tracking_uri: str) -> str:
    """Why the last successful run does not stand for the project as it is now ('' when it does).

    DVC sees what the stages read; this sees the rest: settings no stage reads (the gate's
    thresholds, the registry), a dvc.lock changed by hand or by `dvc repro`, another tracking store.
    """
    last = last_success(root)
    if last is None:
        return "no successful run recorded"
    if last.get("tracking_uri") != tracking_uri:
        return f"the last successful run registered in {last.get('tracking_uri')}, not {tracking_uri}"
    before, now = last.get("params") or {}, _canonical(params)
    changed = sorted(key for key in set(before) | set(now) if before.get(key) != now.get(key))
    if changed:
        return "settings changed since the last successful run: " + ", ".join(changed)
    lock = root / "dvc.lock"
    if not lock.is_file() or _sha(lock.read_text()) != last.get("lock_sha256"):
        return "dvc.lock changed since the last successful run"
    return ""
