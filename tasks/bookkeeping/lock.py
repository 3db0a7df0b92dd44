"""One run of a project at a time: a file lock held for the whole run, and the clean-up after a dead one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.bookkeeping import journal
from tasks.errors import EdgecompressError


class ProjectBusy(EdgecompressError):
    """Another run of the same project holds the lock."""


def lock_path(root: Path) -> Path:
    """Inside .dvc/tmp, which DVC already keeps out of git."""
    return root / ".dvc" / "tmp" / "edgecompress-run.lock"


@contextmanager
def project_lock(root: Path, wait_s: float) -> Iterator[journal.Recovered]:
    """Hold the project's run lock, waiting up to `wait_s` for another run to finish.

    The lock is a singleton per file and re-entrant, so a flow that holds it can call another
    that takes it too (retrain -> compress) in the same process. The operating system drops it
    if the process dies, so a crashed run never blocks the next one; whoever takes the lock first
    after that cleans up what the dead run left (tasks/bookkeeping/journal.py) before anything else happens,
    and the block gets what it cleaned up. A block that fails voids what its run registered, as the
    clean-up after a dead run would (journal.end_run).
    """
    from filelock import FileLock, Timeout

    path = lock_path(root)
    if not path.parent.parent.is_dir():
        raise EdgecompressError(
            f"{root}: not a DVC repository; run from the project folder (or `git init && dvc init` a copy)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # thread_local=False: Prefect may run a subflow on another thread of the same process.
    lock = FileLock(path, is_singleton=True, thread_local=False)
    try:
        lock.acquire(timeout=wait_s)
    except Timeout:
        raise ProjectBusy(
            f"another run of this project is already running (lock {path.relative_to(root)}); "
            f"waited {wait_s:g} s - try again when it ends, or raise retrain.wait_s"
        ) from None
    outermost = lock.lock_counter == 1
    began = False
    try:
        recovered = journal.recover(root) if outermost else journal.Recovered()
        if outermost:
            journal.begin_run(root)
            began = True
        yield recovered
    except BaseException:
        if began:
            journal.end_run(root, failed=True)
        raise
    else:
        if began:
            journal.end_run(root)
    finally:
        lock.release()
