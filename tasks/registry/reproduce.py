"""Rebuild a registered version from its lineage in a folder of its own, and say whether it came out the same.

The recipe is what the version's run recorded: its dvc.lock (the hashes of the data and the
calibration set, every stage's params, code and outputs) and its git commit. The rebuild runs that
commit's own code, through `dvc repro`, on the restored data, so nothing of today's work tree takes
part. The verdict compares the new shipped model's md5 with the one registered, and when they
differ, the new dvc.lock with the recorded one, stage by stage, to name what differs: params, data,
code, or the bytes a stage wrote from the same inputs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tasks.bookkeeping.versioning import lock_outs, record_stage, restore_outputs
from tasks.errors import EdgecompressError
from tasks.registry.lineage import Build

log = logging.getLogger(__name__)

# The stage whose outputs are the inputs of a rebuild: restored from DVC, not made again.
INPUT_STAGE = "prepare"


class ReproduceError(EdgecompressError):
    """A rebuild cannot start (missing commit or data) or failed to run."""


@dataclass(frozen=True)
class Verdict:
    """Whether the rebuilt shipped model is the registered one, and what differs when it is not."""

    identical: bool
    shipped: str
    recorded_md5: str
    rebuilt_md5: str
    differences: list[str] = field(default_factory=list)


def shipped_path(lock: dict[str, Any]) -> str:
    """The shipped model's path in a dvc.lock: the out of the edgetpu stage's model dependency."""
    stages = lock.get("stages") or {}
    for dep in (stages.get("edgetpu") or {}).get("deps") or []:
        if dep["path"].endswith(".tflite"):
            return str(dep["path"])
    raise ReproduceError("the run's dvc.lock names no shipped .tflite (no edgetpu stage)")


def check_commit(root: Path, commit: str) -> None:
    """The commit must be in the project's git repository."""
    if not commit or commit == "unknown":
        raise ReproduceError("the version records no git commit; it cannot be rebuilt from its code")
    found = subprocess.run(
        ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=root, capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        raise ReproduceError(f"commit {commit[:12]} (the version's code) is not in this repository; `git fetch` it")


def prepare_folder(root: Path, build: Build, folder: Path) -> None:
    """A checkout of the version's commit in `folder`, its inputs restored, its params as recorded."""
    check_commit(root, build.commit)
    inputs = lock_outs({"stages": {INPUT_STAGE: build.lock["stages"][INPUT_STAGE]}})
    git = ["git", "-c", "advice.detachedHead=false"]
    subprocess.run([*git, "clone", "-q", "--no-checkout", "--shared", str(root), str(folder)], check=True)
    subprocess.run([*git, "checkout", "-q", build.commit], cwd=folder, check=True)
    restore_outputs(root, inputs, folder)
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(recorded_params(build.lock, yaml.safe_load(params_file.read_text()))))
    # The restored data are the rebuild's inputs: recorded as prepare's outputs (in the folder's own
    # DVC cache), so `dvc repro` starts from them rather than making them again from the source.
    record_stage(folder, INPUT_STAGE)


def recorded_params(lock: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """`base` (the commit's params.yaml) with every value the lock's stages recorded laid over it."""
    merged = {section: dict(values or {}) for section, values in base.items()}
    for stage in (lock.get("stages") or {}).values():
        for key, value in ((stage.get("params") or {}).get("params.yaml") or {}).items():
            section, _, name = key.partition(".")
            if name:
                merged.setdefault(section, {})[name] = value
            else:
                merged.setdefault(section, {}).update(value)
    return merged


def rebuild(folder: Path, progress: Callable[[str], None]) -> None:
    """`dvc repro` in the folder with the folder's own code; progress gets each stage as it starts."""
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        # The commit's code, not the code of the installed edgecompress.
        "PYTHONPATH": str(folder),
        "DVC_NO_ANALYTICS": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        tail = [*tail[-30:], line.rstrip()]
        if line.startswith("Running stage"):
            progress(line.strip())
    if process.wait() != 0:
        errors = [line for line in tail if line.startswith(("error:", "ERROR"))] or tail[-1:]
        raise ReproduceError(f"the rebuild failed in {folder}: {errors[-1] if errors else 'dvc repro failed'}")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def compare(build: Build, folder: Path) -> Verdict:
    """The rebuilt shipped model against the registered one; what differs, stage by stage, when not equal."""
    shipped = shipped_path(build.lock)
    rebuilt = folder / shipped
    if not rebuilt.is_file():
        raise ReproduceError(f"the rebuild made no {shipped}")
    recorded_md5 = build.model_md5 or next(o["md5"] for o in lock_outs(build.lock) if o["path"] == shipped)
    rebuilt_md5 = md5(rebuilt)
    if rebuilt_md5 == recorded_md5:
        return Verdict(True, shipped, recorded_md5, rebuilt_md5)
    new_lock = yaml.safe_load((folder / "dvc.lock").read_text())
    return Verdict(False, shipped, recorded_md5, rebuilt_md5, differences(build, new_lock))


def _hashes(entries: list[dict[str, Any]] | None) -> dict[str, str]:
    return {entry["path"]: entry.get("md5", "") for entry in entries or []}


def _flat_params(stage: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in ((stage.get("params") or {}).get("params.yaml") or {}).items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            flat[key] = value
    return flat


def differences(build: Build, new_lock: dict[str, Any]) -> list[str]:
    """What the rebuild's dvc.lock has that the recorded one does not, stage by stage, in pipeline order."""
    found: list[str] = []
    recorded_stages = build.lock.get("stages") or {}
    new_stages = new_lock.get("stages") or {}
    for name, recorded in recorded_stages.items():
        new = new_stages.get(name)
        if new is None:
            found.append(f"stage {name}: not run by the rebuild")
            continue
        params = {
            key: (value, _flat_params(new).get(key))
            for key, value in _flat_params(recorded).items()
            if _flat_params(new).get(key) != value
        }
        old_deps, new_deps = _hashes(recorded.get("deps")), _hashes(new.get("deps"))
        changed_deps = [path for path in old_deps if new_deps.get(path) != old_deps[path]]
        code = [path for path in changed_deps if path.endswith(".py")]
        if params:
            found.append(f"params of {name}: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in params.items()))
        if code:
            why = " (the version's run had uncommitted changes)" if build.dirty else ""
            found.append(f"code of {name}: {', '.join(code)}{why}")
        # A stage whose only changed deps are an earlier stage's outputs inherits that stage's
        # difference, already named; a stage with every input equal and other outputs is the root.
        if not (params or changed_deps):
            old_outs, new_outs = _hashes(recorded.get("outs")), _hashes(new.get("outs"))
            moved = [path for path in old_outs if new_outs.get(path) != old_outs[path]]
            if moved:
                found.append(f"same inputs, different bytes: stage {name} wrote {', '.join(moved)}")
    return found or ["the shipped model differs, but every stage's inputs and outputs match the record"]


def reproduce(root: Path, build: Build, folder: Path, progress: Callable[[str], None], keep: bool) -> Verdict:
    """Rebuild `build` in `folder` and compare; the folder is removed afterwards unless `keep` (and on failure)."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ReproduceError(f"{folder}: exists and is not an empty folder; choose a new one with --into")
    succeeded = False
    try:
        prepare_folder(root, build, folder)
        rebuild(folder, progress)
        verdict = compare(build, folder)
        succeeded = True
        return verdict
    finally:
        if not (keep and succeeded):
            shutil.rmtree(folder, ignore_errors=True)


def new_folder(path: Path) -> None:
    """A folder that does not exist yet, or an empty one; else one line saying what is there."""
    if path.exists() and not path.is_dir():
        raise EdgecompressError(f"{path}: exists and is a file; choose a new folder with --into")
    if path.is_dir() and any(path.iterdir()):
        raise EdgecompressError(f"{path}: not empty; choose a new folder with --into")


def checkout(root: Path, uri: str, name: str, ref: str, into: Path | None) -> tuple[str, Path, list[str]]:
    """Restore the data/ outputs a version was made from into a new folder: (version, folder, restored paths)."""
    from tasks.registry.lineage import recorded_lock

    version, lock = recorded_lock(uri, name, ref)
    target = (into or Path(f"checkout-v{version}")).resolve()
    new_folder(target)
    return version, target, restore_outputs(root, lock_outs(lock), target)
