"""The team setup, started once for the integration suite: real servers on 127.0.0.1, a project copy to run."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import LOOSE_GATE, QUICK, REPO, TINY, make_project
from tests.integration import servers


def pytest_configure(config: pytest.Config) -> None:
    """Start/stop lines reach the terminal as they happen, whatever pytest captures."""
    capture = config.pluginmanager.getplugin("capturemanager")

    def announce(message: str) -> None:
        import sys

        if capture is None:
            print(message, file=sys.stderr, flush=True)
            return
        with capture.global_and_fixture_disabled():
            print(f"\n{message}", file=sys.stderr, flush=True)

    servers.announce = announce


@pytest.fixture(scope="package")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.TeamSetup]:
    """PostgreSQL, `mlflow server`, `prefect server`, the work pool, the deployment and two workers."""
    bin_dir = servers.postgres_bin()
    if bin_dir is None:
        reason = (
            "team-setup integration suite needs PostgreSQL's initdb and pg_ctl "
            "(Debian: apt-get install postgresql; .ci/run installs it)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI installs it: a skip there would hide a broken setup
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("team")
    project = make_project(folder / "project", overrides=TINY + LOOSE_GATE + QUICK)
    shutil.copy(REPO / "prefect.yaml", project.root / "prefect.yaml")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "add", "prefect.yaml"], cwd=project.root, check=True)
    subprocess.run([*git, "commit", "-qm", "the retrain deployment"], cwd=project.root, check=True)
    setup = servers.TeamSetup(folder, project.root, bin_dir)
    try:
        setup.start(workers=2)
        yield setup
    finally:
        setup.stop()
