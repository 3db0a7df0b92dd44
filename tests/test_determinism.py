"""The same params on the same data give byte-identical models: float, pruned and int8."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import quantize
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def outputs(layout: Layout) -> dict[str, str]:
    return {
        name: md5(path)
        for name, path in (
            ("float.keras", layout.float_model),
            ("pruned.keras", layout.pruned_model),
            ("clustered.keras", layout.clustered_model),
            ("model_int8.tflite", layout.int8_tflite),
        )
    }


# The same stages again in a new Python process, as a second `make run` would: nothing is shared
# with this one but the files.
SECOND_RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import tasks
    from tasks.layout import Layout
    from tasks.stages import cluster, prepare, prune, quantize, train
    from tests.conftest import repo_params

    layout, params = Layout(Path(sys.argv[1])), repo_params()
    for stage in (prepare, train, prune, cluster, quantize):
        stage(layout, params)
    """
)


def test_two_runs_give_byte_identical_models(trained: tuple[Layout, Params], tmp_path: Path) -> None:
    layout, params = trained
    first = Layout(tmp_path / "first")
    shutil.copytree(layout.root / "data", first.root / "data")
    quantize(first, params)  # the shared folder's own int8 model may be rewritten by other tests

    second = Layout(tmp_path / "second")
    second.root.mkdir()
    subprocess.run([sys.executable, "-c", SECOND_RUN, str(second.root)], cwd=REPO, check=True, capture_output=True)

    assert outputs(second) == outputs(first)
