"""Write outputs beside their final place and swap them in whole, so failures leave no half-files."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A fresh temporary folder next to `final`; removed on exit unless swapped in."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
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
    """A temporary path next to `final`, renamed onto it when the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=final.suffix, dir=final.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        tmp.replace(final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(final: Path, text: str) -> None:
    """Write a text file all at once."""
    with staging_file(final) as tmp:
        tmp.write_text(text)
