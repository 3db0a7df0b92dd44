"""DVC and git, asked through their own APIs: is a stage current, record it, what made the data."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import chdir, contextmanager, suppress
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
    from dvc.exceptions import DvcException, NotDvcRepoError
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
            try:
                yield repo
            except DvcException as error:
                # A broken dvc.yaml or dvc.lock, a missing dependency: DVC's own words, on one line.
                reason = " ".join(str(error).split())[:240] or type(error).__name__
                raise EdgecompressError(f"dvc: {reason}") from None


def changed_stages(root: Path, names: list[str]) -> dict[str, list[Any]]:
    """What DVC reports changed for each named stage (empty when the stage is up to date), in one pass."""
    with _repo(root) as repo:
        status = repo.status(targets=names) if len(names) == 1 else repo.status()
    return {name: status.get(name, []) for name in names}


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
    """HEAD's commit and whether tracked files other than params.yaml and dvc.lock differ from it.

    params.yaml and dvc.lock change with every `-S` and every run, and the run records both
    itself, so they do not make the code "dirty"; any other tracked file does.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!params.yaml", ":!dvc.lock"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return CodeVersion(commit="unknown", dirty=True)
    return CodeVersion(commit=commit, dirty=bool(status.strip()))


def push(root: Path) -> int:
    """`dvc push` every stage out to the default remote; the number of files sent.

    Any failure is one EdgecompressError, raised promptly: a remote on the network is reached first
    (DVC would try, and log a traceback for, every file in turn), and DVC's own per-file errors are
    not logged.
    """
    with _repo(root) as repo:
        remote = repo.config["core"].get("remote")
        if not remote:
            raise EdgecompressError("dvc push: no default DVC remote; `dvc remote add -d NAME URL` (see README)")
        url = str(repo.config["remote"].get(remote, {}).get("url", ""))
        quiet = {name: logging.getLogger(name) for name in ("dvc", "dvc_data", "dvc_objects", "fsspec", "aiohttp")}
        levels = {name: logger.level for name, logger in quiet.items()}
        try:
            _reach(url)
            for logger in quiet.values():
                logger.setLevel(logging.CRITICAL)
            return int(repo.push())
        except Exception as error:  # DVC's, the file system's or the network's: the push did not happen
            reason = " ".join(str(error).split())[:240] or type(error).__name__
            raise EdgecompressError(f"dvc push to remote '{remote}' ({url}) failed: {reason}") from None
        finally:
            for name, logger in quiet.items():
                logger.setLevel(levels[name])


def _reach(url: str, timeout: float = 10.0) -> None:
    """Connect to a remote's host, if it has one: OSError when nothing answers there."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.hostname:
        return  # a local path: DVC reports what is wrong with it
    defaults = {"http": 80, "https": 443, "ssh": 22, "sftp": 22, "webdav": 80, "webdavs": 443}
    port = parts.port or defaults.get(parts.scheme)
    if port is None:
        return  # a cloud store (s3, gs, azure...) is reached through its SDK's own endpoints
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise OSError(f"cannot connect to {parts.hostname}:{port} ({error.strerror or error})") from None


def lock_outs(lock: dict[str, Any]) -> list[dict[str, Any]]:
    """Every out entry (path, md5, ...) a dvc.lock records, stage after stage."""
    return [out for stage in (lock.get("stages") or {}).values() for out in stage.get("outs") or []]


def restore_outputs(root: Path, outs: list[dict[str, Any]], into: Path) -> list[str]:
    """Materialise the given dvc.lock outs into `into`/<path>, from the DVC cache or remote.

    The project's work tree is not touched: a scratch DVC repository that shares the project's
    cache and remotes holds one .dvc file per out, and DVC's own checkout (then pull, for what the
    cache lacks) writes the files. Returns the restored paths; objects found in neither the cache
    nor the remote are reported by name, and then nothing is written into `into`.
    """
    import shutil
    import tempfile

    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    if not outs:
        raise EdgecompressError("the run's dvc.lock records no outputs to restore")
    if into.exists() and not into.is_dir():
        raise EdgecompressError(f"{into}: exists and is not a folder; choose a new folder")
    taken = [out["path"] for out in outs if (into / out["path"]).exists()]
    if taken:
        raise EdgecompressError(f"{into}: already holds {', '.join(taken)}; choose a new folder")
    with _repo(root) as project:
        cache = project.cache.local_cache_dir  # the cache root (.dvc/cache), not its files/md5 part
        remotes = {name: dict(section) for name, section in project.config["remote"].items()}
        default = project.config["core"].get("remote")
    scratch = Path(tempfile.mkdtemp(prefix=".restore-", dir=into.parent if into.parent.exists() else None))
    try:
        with chdir(scratch):
            Repo.init(str(scratch), no_scm=True)
            with Repo(str(scratch)) as repo, repo.config.edit() as config:
                config["cache"]["dir"] = cache
                for name, section in remotes.items():
                    config["remote"][name] = section
                if default:
                    config["core"]["remote"] = default
            for out in outs:
                entry = {key: value for key, value in out.items() if key != "path"}
                target = scratch / out["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                (target.parent / f"{target.name}.dvc").write_text(
                    yaml.safe_dump({"outs": [{**entry, "path": target.name}]})
                )
            with Repo(str(scratch)) as repo:
                logging.getLogger("dvc").setLevel(logging.ERROR)
                try:
                    repo.checkout(force=True)
                except DvcException:
                    # What the cache lacks may be on the remote; what is on neither is reported
                    # below, by name.
                    with suppress(DvcException):
                        repo.pull(force=True)
        missing = [f"{out['path']} ({out.get('md5', '?')})" for out in outs if not (scratch / out["path"]).exists()]
        if missing:
            where = f"the DVC cache or remote '{default}'" if default else "the DVC cache (no default remote)"
            raise EdgecompressError(f"not in {where}: {', '.join(missing)}")
        for out in outs:
            target = into / out["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(scratch / out["path"]), str(target))
        return [out["path"] for out in outs]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
