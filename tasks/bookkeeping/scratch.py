"""Temporary files a command makes, and what a killed one left of them.

- The command's own temporary folder: everything that asks Python for a temporary file during the
  command (TensorFlow's SavedModels for the converter, AutoGraph's generated modules, MLflow's
  staging, Dask workers it starts) gets it inside `<temp dir>/edgecompress-tmp-<pid>-*`, which goes
  when the command ends, whichever way it ends (tasks/bookkeeping has no say over the exit path,
  so the command calls `remove_own_tmp` itself when it leaves by `os._exit`). A command killed
  with `kill -9` leaves its folder; the next command removes the folders of processes that are gone.
- A sweep's trials work in `.dvc/tmp/sweep-*` of the project, under the project lock: whoever takes
  the lock next finds only folders of sweeps that died, and removes them (tasks/bookkeeping/journal.py).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SWEEP_PREFIX = "sweep-"
# The folder of .dvc/tmp where sweeps keep float models (tasks/search/sweep.py FLOAT_CACHE).
FLOAT_MODELS = "float-models"
_OWN = "edgecompress-tmp-"
_own: Path | None = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def own_tmp() -> Path | None:
    """This process's temporary folder, made the temp dir of Python and of every process it starts.

    Folders that processes now gone left beside it are removed first. None (and the usual temp dir)
    when no folder can be made there: a full disk is for the command itself to report.
    """
    global _own
    if _own is not None:
        return _own
    parent = Path(tempfile.gettempdir())
    for folder in parent.glob(f"{_OWN}*-*"):
        found = re.fullmatch(rf"{_OWN}(\d+)-.*", folder.name)
        if found and folder.is_dir() and int(found.group(1)) != os.getpid() and not _alive(int(found.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
    try:
        _own = Path(tempfile.mkdtemp(prefix=f"{_OWN}{os.getpid()}-", dir=parent))
    except OSError:
        return None
    os.environ["TMPDIR"] = str(_own)
    tempfile.tempdir = str(_own)
    atexit.register(remove_own_tmp)
    return _own


def remove_own_tmp() -> None:
    """Remove this process's temporary folder (at exit; the command's `os._exit` path calls it itself)."""
    if _own is not None:
        shutil.rmtree(_own, ignore_errors=True)


def clear_sweeps(root: Path) -> None:
    """Remove what sweeps that died left (call with the project lock held: no sweep runs).

    Their scratch folders, and the staging folders of float models they were training: a float model
    is trained beside the cache (`.dvc/tmp/float-models/.<key>-*`) and renamed into it when complete.
    """
    tmp = root / ".dvc" / "tmp"
    for folder in tmp.glob(f"{SWEEP_PREFIX}*"):
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            log.warning("removed %s: the scratch folder of a sweep that did not finish", folder.name)
    for folder in (tmp / FLOAT_MODELS).glob(".*-*"):
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            log.warning("removed %s/%s: a float model a sweep did not finish training", FLOAT_MODELS, folder.name)
