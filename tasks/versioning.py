"""DVC and git, asked through their own APIs: is a stage current, record it, what made the data."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import EdgecompressError

log = logging.getLogger(__name__)

# DVC phones home for usage analytics unless told not to; this machine may have no network.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@dataclass(frozen=True)
class CodeVersion:
    """The git commit the run's code came from, and whether the work tree differed from it."""

    commit: str
    dirty: bool


@contextmanager
def _repo(root: Path) -> Iterator[Any]:
    """DVC's Repo for the project, with the working directory inside it.

    DVC resolves stage paths against the process's working directory, not the repo root, so a
    caller elsewhere (a test, a Prefect worker) would otherwise have its outs taken as external.
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    # DVC announces every lock-file write at INFO; the flow reports what ran instead.
    logging.getLogger("dvc").setLevel(logging.WARNING)
    with chdir(root):
        try:
            repo = Repo(str(root))
        except NotDvcRepoError:
            raise EdgecompressError(
                f"{root}: not a DVC repository; run from the project folder (or `git init && dvc init` a copy)"
            ) from None
        with repo:
            yield repo


def changed_stages(root: Path, names: list[str]) -> dict[str, list[Any]]:
    """What DVC reports changed for each named stage (empty when the stage is up to date)."""
    with _repo(root) as repo:
        return {name: repo.status(targets=[name]).get(name, []) for name in names}


def record_stage(root: Path, name: str) -> None:
    """Hash the stage's deps, params and outs into dvc.lock and its outs into the DVC cache."""
    with _repo(root) as repo:
        repo.commit(name, force=True)


def lock_out_hashes(root: Path) -> dict[str, str]:
    """{out path: md5} for every stage out recorded in dvc.lock."""
    lock_file = root / "dvc.lock"
    if not lock_file.is_file():
        return {}
    lock = yaml.safe_load(lock_file.read_text()) or {}
    hashes = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            hashes[out["path"]] = out.get("md5", "")
    return hashes


def code_version(root: Path) -> CodeVersion:
    """HEAD's commit and whether tracked files differ from it ('unknown' outside git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return CodeVersion(commit="unknown", dirty=True)
    return CodeVersion(commit=commit, dirty=bool(status.strip()))
