"""A bare project folder for the bookkeeping tests: params.yaml and a .dvc folder, nothing run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").chmod(0o644)
    return tmp_path
