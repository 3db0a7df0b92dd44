"""What a dead or failed command leaves, as the next command finds it: one line, nothing lost, nothing left over.

The kill -9 of real runs is tests/flows/test_faults.py; here the leftovers are laid down as a killed
run leaves them (tests/bookkeeping/test_journal.py does the same below the command line), and a full
disk is a real refusal of the file system: a file-size limit (`ulimit -f`), under which a write past
the limit fails with EFBIG as a full disk fails with ENOSPC.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.bookkeeping import journal
from tasks.layout import Layout
from tests.conftest import BIN, EDGECOMPRESS, TINY, cli_env, make_project

pytestmark = pytest.mark.slow

LEAKED = "train.epochs=7"


@pytest.fixture
def project(tmp_path: Path) -> Layout:
    return make_project(tmp_path / "project", overrides=TINY)


def file_size_limit(limit: int) -> Callable[[], None]:
    """For the child, before exec: writes past `limit` bytes fail with EFBIG (SIGXFSZ ignored, as a shell's
    `ulimit -f` with a trap would)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def command(
    root: Path, *args: str, limit: int | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EDGECOMPRESS, *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={**cli_env(), **(env or {})},
        preexec_fn=file_size_limit(limit) if limit else None,
        timeout=600,
    )


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout[-1000:] + result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return errors[0]


def leave_overrides(root: Path) -> str:
    """What `run -S` leaves when killed: the journal, and params.yaml with the override in it; the original."""
    from tasks.params import render_overrides

    original = (root / "params.yaml").read_text()
    written = render_overrides(root / "params.yaml", [LEAKED])
    journal.begin_overrides(root, original, 0o644, written)
    (root / "params.yaml").write_text(written)
    return original


@pytest.mark.parametrize("damaged", ["params.yaml.journal", ".dvc/tmp/edgecompress-run.json"])
def test_a_damaged_leftover_is_one_line_naming_it(project: Layout, damaged: str) -> None:
    (project.root / damaged).parent.mkdir(parents=True, exist_ok=True)
    (project.root / damaged).write_text('{"pid": 12')  # cut off mid-write, or edited by hand
    before = (project.root / "params.yaml").read_bytes()
    error = one_error(command(project.root, "run"))
    assert error.startswith(f"error: {damaged}: damaged") and error.endswith(f"then delete {damaged}")
    assert (project.root / "params.yaml").read_bytes() == before
    assert (project.root / damaged).exists()


def test_dvc_repro_after_a_killed_run_undoes_its_overrides_and_stops(project: Layout) -> None:
    original = leave_overrides(project.root)
    env = {**cli_env(), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"], cwd=project.root, capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode != 0, result.stdout[-2000:]
    output = result.stdout + result.stderr
    assert "error: params.yaml held the -S overrides of a run that did not finish" in output, output[-3000:]
    assert "run `dvc repro` again" in output
    assert (project.root / "params.yaml").read_text() == original
    assert not (project.root / "params.yaml.journal").exists()
    assert not (project.root / "data" / "raw").exists()  # no stage ran with the dead run's settings


def test_a_full_disk_at_the_journal_write_changes_nothing(project: Layout) -> None:
    before = (project.root / "params.yaml").read_bytes()
    limit = len(before) // 2  # the run record fits; the journal (all of params.yaml and more) does not
    error = one_error(command(project.root, "run", "-S", LEAKED, limit=limit))
    assert "no room left on the disk to write the -S overrides; params.yaml is unchanged" in error
    assert (project.root / "params.yaml").read_bytes() == before
    assert not (project.root / "params.yaml.journal").exists()
    assert not [p.name for p in project.root.iterdir() if p.name.startswith(".params")]  # no half-written file
    assert not journal.run_record(project.root).exists()


def test_a_full_disk_in_a_stage_is_one_line_and_leaves_no_temporary_files(project: Layout, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    assert command(project.root, "stage", "prepare").returncode == 0
    before = (project.root / "params.yaml").read_bytes()
    # train traces its input pipeline and its steps (TensorFlow writes a module per traced function into
    # the temporary folder), then finds no room for the model it trained.
    error = one_error(command(project.root, "stage", "train", limit=64 * 1024, env={"TMPDIR": str(tmp)}))
    assert "no room left on the disk in stage train (its previous outputs are kept)" in error
    assert not (project.root / "data" / "models").exists() or not any((project.root / "data" / "models").iterdir())
    assert (project.root / "params.yaml").read_bytes() == before
    assert not list(tmp.iterdir()), sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))[:20]
