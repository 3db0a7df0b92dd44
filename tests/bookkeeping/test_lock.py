"""The project lock: re-entrant in a process, exclusive between processes, nothing created outside a project."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.bookkeeping.lock import ProjectBusy, project_lock
from tests.conftest import REPO


def test_the_lock_is_reentrant_and_exclusive_between_processes(root: Path) -> None:
    import subprocess
    import sys

    hold = (
        "from pathlib import Path; from tasks.bookkeeping.lock import project_lock\n"
        f"with project_lock(Path({str(root)!r}), 0):\n    print('held', flush=True); input()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(ProjectBusy, match="already running"), project_lock(root, wait_s=0):
            pass
    finally:
        holder.communicate("\n", timeout=30)
    with project_lock(root, wait_s=0), project_lock(root, wait_s=0):
        pass


def test_outside_a_dvc_repository_nothing_is_created(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("x: 1\n")
    with pytest.raises(Exception, match="not a DVC repository"), project_lock(tmp_path, wait_s=0):
        pass
    assert [path.name for path in tmp_path.iterdir()] == ["params.yaml"]
