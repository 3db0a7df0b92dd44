"""fit: the same params on the same data give byte-identical models; a fit and a scoring trace once."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import STAGES, images
from tasks.stages.fit import load_model
from tests.conftest import REPO


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
    from tasks.stages import STAGES
    from tests.conftest import repo_params

    layout, params = Layout(Path(sys.argv[1])), repo_params()
    for name in ("prepare", "train", "prune", "cluster", "quantize"):
        STAGES[name](layout, params)
    """
)


@pytest.mark.slow
def test_two_runs_give_byte_identical_models(trained: tuple[Layout, Params], tmp_path: Path) -> None:
    layout, params = trained
    first = Layout(tmp_path / "first")
    shutil.copytree(layout.root / "data", first.root / "data")
    STAGES["quantize"](first, params)  # the shared folder's own int8 model may be rewritten by other tests

    second = Layout(tmp_path / "second")
    second.root.mkdir()
    subprocess.run([sys.executable, "-c", SECOND_RUN, str(second.root)], cwd=REPO, check=True, capture_output=True)

    assert outputs(second) == outputs(first)


def test_fit_traces_its_training_step_once(trained: tuple[Layout, Params]) -> None:
    # A first trace that creates variables (Adam's slots, the accuracy's counters) is traced a
    # second time; tracing is most of a short fit (tasks.stages.fit.compile_model).
    from tasks.stages import models
    from tasks.stages.train import train_model

    layout, params = trained
    fit, validation = images.load_fit_validation(layout, params.data)
    settings = params.train.model_copy(update={"epochs": 1})
    assert len(fit) % settings.batch_size, "a smaller last batch, which must not be traced again either"
    built = models.build(settings, fit.shape, len(fit.class_names), layout.root)
    train_model(built, fit, settings, validation)
    assert built.model.train_function.experimental_get_tracing_count() == 1


def test_accuracy_traces_the_model_once(trained: tuple[Layout, Params]) -> None:
    from tasks.stages.fit import accuracy

    layout, params = trained
    model = load_model(layout.float_model)
    test = images.load_test(layout, params.data)
    assert len(test) % 256, "a smaller last batch"
    measured = accuracy(model, test, batch_size=256)
    assert model.predict_function.experimental_get_tracing_count() == 1
    x, y = test.arrays()
    assert measured == float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y))
