"""Write outputs beside their final place and swap them in whole, so failures leave no half-files.

And check a path from the settings before anything looks at it (check_path_length).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any


@cache
def _umask() -> int:
    """The process's umask, read once (by setting and restoring it: there is no other portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A fresh temporary folder next to `final`; removed on exit unless swapped in.

    mkdtemp makes it private (0700); it gets the permissions any new folder would have, since it
    becomes the output itself.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(staged: Path, final: Path) -> None:
    """Move a complete staged folder to `final`, replacing what was there."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staged.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staging_file(final: Path) -> Iterator[Path]:
    """A temporary path next to `final`, renamed onto it when the block succeeds.

    The file keeps the permissions of the one it replaces (a new one gets the umask's default),
    not mkstemp's private 0600.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=final.suffix, dir=final.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        mode = final.stat().st_mode & 0o7777 if final.exists() else 0o666 & ~_umask()
        tmp.chmod(mode)
        tmp.replace(final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(final: Path, text: str) -> None:
    """Write a text file all at once."""
    with staging_file(final) as tmp:
        tmp.write_text(text)


def write_json(final: Path, payload: dict[str, Any]) -> None:
    """A JSON report, keys sorted, written all at once."""
    write_text(final, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_csv(final: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """A table for `dvc plots` (csv, not a join: tensor names may hold commas); `columns` when empty."""
    buffer = io.StringIO()
    fields = list(rows[0]) if rows else columns or ["empty"]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(final, buffer.getvalue())


def check_path_length(setting: str, path: Path) -> Path:
    """`path`, or ParamsError naming the setting when the system refuses it as too long (ENAMETOOLONG).

    pathlib's exists() and is_dir() raise that error rather than answer False, so a 100 KB path in
    params.yaml would otherwise end in a traceback wherever it is first looked at.
    """
    import errno

    from tasks.errors import ParamsError, clip

    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            size, most = len(os.fsencode(path)), os.pathconf("/", "PC_PATH_MAX")
            why = f"{size:,} bytes, over {most - 1:,}" if size >= most else "a name in it is too long"
            raise ParamsError(f"{setting}: the path is too long for this system ({why}): {clip(path, 80)}") from None
    return path
