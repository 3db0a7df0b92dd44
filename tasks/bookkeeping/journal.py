"""What a run leaves behind while it runs, so that the next one can clean up after a run that died.

Two files, both written while the project lock is held (tasks/bookkeeping/lock.py):
- `params.yaml.journal`, beside params.yaml, exists only while a run's `-S` overrides are
  unconfirmed: the file as it was before the overrides, and a hash of what the run wrote. Deleting
  it is the confirmation, the one moment after which the overrides are the project's settings: a
  run that succeeds deletes it once everything else is done, one that fails restores the original
  (unless params.yaml was edited since: then both stay, for the user to compare). If the process
  is killed, the next command finds the journal and restores the original, so a dead run's
  settings are never trained with, gated with or recorded again.
- `.dvc/tmp/edgecompress-run.json` names the running process and its MLflow run. Found by a later
  lock holder, it means that process died.

What a run registered stands only if its MLflow run FINISHED and its `-S` overrides, if it had
any, were confirmed. Otherwise the version is deleted ("voided"), by the run itself when it fails,
or by the next command when it was killed: it may lack its gate record, or have passed a gate that
the run's own overrides loosened and that params.yaml no longer holds. The run record goes only once
that is done; a tracking store that cannot be reached keeps it for the next command.
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

from tasks.errors import EdgecompressError, no_room, no_room_error

log = logging.getLogger(__name__)

PARAMS_JOURNAL = "params.yaml.journal"
RUN_RECORD = ".dvc/tmp/edgecompress-run.json"
# The registry's aliases (tasks/registry/register.py) that voiding a version must not leave dangling.
CHAMPION, PREVIOUS = "champion", "previous-champion"


class JournalError(EdgecompressError):
    """A leftover of a dead run that cannot be cleaned up without the user."""


def params_journal(root: Path) -> Path:
    return root / PARAMS_JOURNAL


def run_record(root: Path) -> Path:
    return root / RUN_RECORD


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    from tasks.fsutil import write_text

    write_text(path, json.dumps(payload, indent=2) + "\n")


def _read_json(path: Path, fields: dict[str, tuple[type, ...]], damaged: str) -> dict[str, Any]:
    """A file this module wrote, with `fields` of those types; JournalError(`damaged`) if it is not that."""
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        raise JournalError(damaged) from None
    if not isinstance(entry, dict) or any(not isinstance(entry.get(k), kinds) for k, kinds in fields.items()):
        raise JournalError(damaged)
    return entry


def _journal_entry(root: Path) -> dict[str, Any]:
    return _read_json(
        params_journal(root),
        {"pid": (int,), "mode": (int,), "written_sha256": (str,), "original": (str,)},
        f"{PARAMS_JOURNAL}: damaged (not what a run writes); a run that did not finish left it, and params.yaml "
        f"may still hold that run's -S overrides: check params.yaml (`git diff params.yaml`), then delete "
        f"{PARAMS_JOURNAL}",
    )


def _record_entry(root: Path) -> dict[str, Any]:
    damaged = (
        f"{RUN_RECORD}: damaged (not what a run writes); a run that did not finish left it, and its MLflow run "
        "may still show RUNNING and a version it registered may still stand: check `edgecompress history` and "
        f"the MLflow UI, then delete {RUN_RECORD}"
    )
    entry = _read_json(run_record(root), {"pid": (int,), "mlflow": (dict, type(None))}, damaged)
    mlflow_run = entry["mlflow"]
    if mlflow_run is not None and not all(isinstance(mlflow_run.get(k), str) for k in ("tracking_uri", "run_id")):
        raise JournalError(damaged)
    return entry


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
    """Write a run's -S overrides into params.yaml, the original kept in params.yaml.journal first.

    A disk that has no room for either file is one line, and params.yaml stays as it was.
    """
    from tasks.fsutil import write_text
    from tasks.params import check_overrides, render_overrides

    path = root / "params.yaml"
    check_overrides(path, overrides)
    if not overrides:
        return
    original = path.read_text()
    text = render_overrides(path, overrides)
    try:
        begin_overrides(root, original, path.stat().st_mode & 0o7777, text)
        write_text(path, text)
    except OSError as error:
        params_journal(root).unlink(missing_ok=True)  # params.yaml was not written: nothing to restore
        if no_room(error):
            raise no_room_error(error, "to write the -S overrides; params.yaml is unchanged") from None
        raise


def end_overrides(root: Path, keep: bool) -> None:
    """After the run: keep the overrides (success) or put the original back (failure).

    On failure, what the run registered under its overrides is voided by the run (tasks/bookkeeping/lock.py)
    whatever becomes of params.yaml. If params.yaml was edited during the run, the edit wins: it stays,
    and so does the journal, for the user to compare.
    """
    journal = params_journal(root)
    if not journal.is_file():
        return
    if keep:
        journal.unlink()  # the confirmation: from here on the overrides are the project's settings
        return
    entry = _journal_entry(root)
    try:
        _owe_voiding(root)
    except (OSError, JournalError) as error:
        # The journal stays: to the next command it means overrides never confirmed, which it undoes.
        log.warning("could not undo the -S overrides now (%s); the next command restores params.yaml", error)
        return
    if _edited(root, entry):
        log.warning(
            "params.yaml was edited during the run, so the original was not put back over your edit; the run's "
            "-S overrides may still be in it: compare it with %s (the file before the run), keep what you want "
            "in params.yaml and delete %s",
            PARAMS_JOURNAL,
            PARAMS_JOURNAL,
        )
        return
    try:
        _restore(root, entry)
    except OSError as error:
        if not no_room(error):
            raise
        log.warning("no room left on the disk to restore params.yaml; the next command restores it from %s", journal)
        return
    journal.unlink()


def _edited(root: Path, entry: dict[str, Any]) -> bool:
    """Whether params.yaml holds neither what the run wrote nor the original: someone edited it since."""
    path = root / "params.yaml"
    current = path.read_text() if path.is_file() else ""
    return _sha(current) != entry["written_sha256"] and current != entry["original"]


def _restore(root: Path, entry: dict[str, Any]) -> None:
    from tasks.fsutil import write_text

    params_file = root / "params.yaml"
    write_text(params_file, entry["original"])
    params_file.chmod(entry["mode"])


def begin_run(root: Path) -> None:
    """Record that this process is running the project (its MLflow run is noted once it exists)."""
    try:
        _write_json(run_record(root), {"pid": os.getpid(), "started": time.time(), "mlflow": None, "void": False})
    except OSError as error:
        if no_room(error):
            raise no_room_error(error, f"for {RUN_RECORD}") from None
        raise


def note_mlflow_run(root: Path, tracking_uri: str, run_id: str) -> None:
    """Remember the running MLflow run, so a killed process's run can be closed by the next one."""
    if run_record(root).is_file():
        entry = _record_entry(root)
        entry["mlflow"] = {"tracking_uri": tracking_uri, "run_id": run_id}
        _write_json(run_record(root), entry)


def _owe_voiding(root: Path) -> None:
    """Mark the run record: what this run registered must go, even if the journal is gone by then."""
    if run_record(root).is_file():
        entry = _record_entry(root)
        entry["void"] = True
        _write_json(run_record(root), entry)


def end_run(root: Path, failed: bool = False) -> None:
    """This process is done with the project: its record goes, once a failed run has voided what it registered.

    A failed run whose MLflow run did not finish, or whose -S overrides were not kept, deletes the
    versions it registered. If the tracking store cannot be reached for that, the record stays, and
    the next command does it.
    """
    record = run_record(root)
    if failed and record.is_file() and _settle(root, _record_entry(root), dead=False) is None:
        return
    record.unlink(missing_ok=True)


@dataclass(frozen=True)
class Recovered:
    """What the lock holder cleaned up after a dead run."""

    params_restored: bool = False
    mlflow_killed: str | None = None
    voided: tuple[str, ...] = ()


def recover(root: Path) -> Recovered:
    """Clean up after a run that died holding the lock (call with the lock held: nobody else runs).

    The run record first: the dead run's MLflow run is closed and what it registered voided before
    anything can stop on the journal, so that nothing of it is forgotten. Then params.yaml.
    """
    from tasks.bookkeeping.scratch import clear_sweeps

    clear_sweeps(root)
    killed: str | None = None
    voided: tuple[str, ...] = ()
    record = run_record(root)
    if record.is_file():
        entry = _record_entry(root)
        unconfirmed = params_journal(root).is_file()  # the dead run's -S overrides, never confirmed
        settled = _settle(root, entry, dead=True, unconfirmed=unconfirmed)
        if settled is None:
            run = entry["mlflow"]
            raise JournalError(
                f"{RUN_RECORD}: could not close MLflow run {run['run_id']} of a run that did not finish in "
                f"{run['tracking_uri']}; run again when that tracking store answers (or delete {RUN_RECORD} to "
                "leave that run as it is)"
            )
        killed, voided = settled.killed, settled.voided
        record.unlink()
    restored = False
    journal = params_journal(root)
    if journal.is_file():
        entry = _journal_entry(root)
        if _edited(root, entry):
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
    return Recovered(restored, killed, voided)


@dataclass(frozen=True)
class _Settled:
    killed: str | None
    voided: tuple[str, ...]


def _settle(root: Path, entry: dict[str, Any], dead: bool, unconfirmed: bool = False) -> _Settled | None:
    """Close a run's MLflow run if it is still open, and void what it registered unless the run stands.

    A run stands when its MLflow run FINISHED and its -S overrides (if any) were confirmed. None when the
    tracking store could not be asked.
    """
    mlflow_run = entry.get("mlflow")
    if not mlflow_run:
        return _Settled(None, ())
    import mlflow

    uri, run_id = mlflow_run["tracking_uri"], mlflow_run["run_id"]
    killed = None
    try:
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        status = client.get_run(run_id).info.status
        if status == "RUNNING":
            client.set_terminated(run_id, status="KILLED" if dead else "FAILED")
            if dead:
                killed = run_id
                log.warning("marked MLflow run %s KILLED: the run that made it did not finish", run_id)
        if status != "FINISHED":
            why = "the run that registered it did not finish" if dead else "the run that registered it failed"
        elif unconfirmed or entry.get("void"):
            why = "it was gated under -S overrides that were not kept"
        else:
            return _Settled(killed, ())
        voided = void_versions(root, client, run_id, why)
    except Exception as error:  # MLflow's, the HTTP client's or SQLAlchemy's: the store could not be asked
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        log.warning("could not close MLflow run %s in %s: %s", run_id, uri, reason)
        return None
    return _Settled(killed, voided)


def void_versions(root: Path, client: Any, run_id: str, why: str) -> tuple[str, ...]:
    """Delete every model version the MLflow run registered; the champion alias goes back to the previous one.

    A last-successful-run record that names the run goes too: it no longer stands for anything.
    """
    voided = []
    for version in client.search_model_versions(f"run_id = '{run_id}'"):
        name, number = version.name, str(version.version)
        if CHAMPION in (client.get_model_version(name, number).aliases or []):
            _champion_back(client, name, number)
        client.delete_model_version(name, number)
        voided.append(f"{name} version {number}")
        log.warning("deleted %s version %s: %s", name, number, why)
    last = last_success(root)
    if last is not None and last.get("mlflow_run_id") == run_id:
        last_run_file(root).unlink(missing_ok=True)
    return tuple(voided)


def _champion_back(client: Any, name: str, voided: str) -> None:
    """Before the champion is voided: the previous champion becomes champion again, if there is one."""
    from mlflow.exceptions import MlflowException

    try:
        previous = str(client.get_model_version_by_alias(name, PREVIOUS).version)
    except MlflowException:
        previous = None
    if previous is None or previous == voided:
        log.warning("%s has no champion now: version %s was champion and is voided", name, voided)
        return
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS)
    log.warning("%s champion is version %s again (version %s is voided)", name, previous, voided)


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
