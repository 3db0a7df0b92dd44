"""train: an Edge TPU friendly CNN that learns the digits, scored on validation every epoch; a model at chance stops."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tasks.errors import StageError
from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import STAGES, images, train
from tasks.stages.fit import accuracy, keras, load_model
from tests.conftest import repo_params


def test_trained_model_beats_chance_by_far(trained: tuple[Layout, Params]) -> None:
    layout, params = trained
    model = load_model(layout.float_model)
    test_x, test_y = images.load_test(layout, params.data).arrays()
    accuracy = float(np.mean(np.argmax(model.predict(test_x, verbose=0), axis=-1) == test_y))
    assert accuracy > 0.8  # chance is 0.1
    assert isinstance(model, keras().Model)
    assert model.optimizer is None  # saved without optimizer state


def test_cosine_schedule_ends_each_phase_at_a_rate_near_zero(trained: tuple[Layout, Params]) -> None:
    from tasks.stages import models
    from tasks.stages.train import train_model

    layout, params = trained
    fit, validation = images.load_fit_validation(layout, params.data)
    settings = params.train.model_copy(update={"epochs": 2, "lr_schedule": "cosine"})
    built = models.build(settings, fit.shape, len(fit.class_names), layout.root)
    train_model(built, fit, settings, validation)
    optimizer = built.model.optimizer
    steps = 2 * -(-len(fit) // settings.batch_size)
    assert int(optimizer.iterations.numpy()) == steps
    schedule = optimizer.get_config()["learning_rate"]
    assert schedule["class_name"] == "CosineDecay" and schedule["config"]["decay_steps"] == steps
    assert float(optimizer.learning_rate) < 0.01 * settings.learning_rate  # the rate of the last step


# --- validation accuracy, and a float model at chance -------------------------------------------


def test_training_reports_validation_accuracy_every_epoch(trained: tuple[Layout, Params]) -> None:
    layout, params = trained
    report = json.loads(layout.train_report.read_text())
    assert len(report["history"]["val_accuracy"]) == params.train.epochs
    assert report["validation_accuracy"] == pytest.approx(report["history"]["val_accuracy"][-1], abs=1e-6)
    fit, validation = images.load_fit_validation(layout, params.data)
    assert report["validation_images"] == len(validation)
    # What the model scores held out, measured again on the saved model: the same figure.
    assert report["validation_accuracy"] == pytest.approx(
        accuracy(load_model(layout.float_model), validation), abs=1e-6
    )
    assert report["chance"] == pytest.approx(train.chance_level(validation.labels, len(fit.class_names)), abs=1e-6)


def test_the_guess_bound_shrinks_with_the_validation_split() -> None:
    # A guesser on the digits' 144 validation images (10 classes) stays below 0.175 but for 1 in 1,000.
    assert train.guess_bound(0.1, 144) == pytest.approx(0.175)
    assert train.guess_bound(0.125, 240) == pytest.approx(0.189, abs=1e-3)
    assert train.guess_bound(0.125, 24_000) < 0.132
    assert train.guess_bound(0.5, 2) > 1.0  # two images tell nothing apart
    assert train.chance_level(np.array([0, 0, 0, 1]), 2) == 0.75  # the most common class, not 1/classes


def identical_images(root: Path, classes: int = 5, per_class: int = 20) -> Path:
    """A folder source whose images are all the same: its labels carry no information, so no model beats chance."""
    from PIL import Image

    for split in images.SPLITS:
        for label in range(classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True)
            for index in range(per_class):
                Image.new("L", (8, 8), 128).save(folder / f"{index}.png")
    return root


def test_a_float_model_at_chance_stops_the_run_after_train(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "project")
    source = identical_images(tmp_path / "same")
    params = repo_params([f"data.source=folder:{source}", "train.epochs=2", "data.calibration_size=10"])
    STAGES["prepare"](layout, params)
    with pytest.raises(
        StageError, match=r"scores 0\.200 on the validation split \(10 images\), at or near chance"
    ) as caught:
        STAGES["train"](layout, params)
    message = str(caught.value)
    assert "\n" not in message
    for cause in ("train.learning_rate (0.002)", "train.epochs (2)", "too little data (90 training images"):
        assert cause in message
    assert not layout.float_model.exists() and not layout.train_report.exists()  # nothing half-written
    # Switched off, the same model goes on (a test that is about something else may need it).
    STAGES["train"](
        layout, params.model_copy(update={"train": params.train.model_copy(update={"stop_near_chance": False})})
    )
    assert json.loads(layout.train_report.read_text())["validation_accuracy"] == 0.2


def constant_model(path: Path, input_shape: tuple[int, int, int], classes: int) -> Path:
    """A saved model whose output never depends on its input (zero kernels): it scores the share of one class."""
    import tf_keras as k

    inputs = k.Input(shape=input_shape)
    x = k.layers.Conv2D(4, 3, kernel_initializer="zeros", bias_initializer="zeros")(inputs)
    x = k.layers.GlobalAveragePooling2D()(x)
    model = k.Model(inputs, k.layers.Dense(classes, activation="softmax")(x))
    model.save(path)
    return path


def given(trained: tuple[Layout, Params], tmp_path: Path, overrides: list[str]) -> tuple[Layout, Params]:
    """A project with the trained folder's data and a constant model given as a file, compressed as it is."""
    source, _ = trained
    layout = Layout(tmp_path / "project")
    shutil.copytree(source.raw, layout.raw)
    model = constant_model(tmp_path / "constant.keras", (8, 8, 1), 10)
    return layout, repo_params([f"train.model=file:{model}", "train.epochs=0", "train.input_scale=unit", *overrides])


def test_a_given_model_at_chance_is_scored_before_any_training_and_names_the_input_scale(
    trained: tuple[Layout, Params], tmp_path: Path
) -> None:
    layout, params = given(trained, tmp_path, [])
    with pytest.raises(StageError, match=r"at or near chance") as caught:
        STAGES["train"](layout, params)
    assert "as given, before any training, so the likely cause is train.input_scale unit (0..1)" in str(caught.value)
    assert not layout.float_model.exists()


def test_a_given_model_below_the_gate_stops_before_compression(trained: tuple[Layout, Params], tmp_path: Path) -> None:
    layout, params = given(trained, tmp_path, ["train.stop_near_chance=false", "gate.min_accuracy=0.5"])
    STAGES["train"](layout, params)  # at chance, but asked to go on: train writes it
    with pytest.raises(StageError, match=r"below gate\.min_accuracy 0\.5, before any compression") as caught:
        train.check_given_model(layout, params)
    assert "train.input_scale unit (0..1)" in str(caught.value)
    train.check_given_model(
        layout, params.model_copy(update={"gate": params.gate.model_copy(update={"min_accuracy": None})})
    )


@pytest.mark.parametrize(
    ("rate", "advice"),
    [
        (0.05, "try a lower train.learning_rate, 0.002"),
        (1e-6, "try a higher train.learning_rate, 0.002"),
        (0.002, "the rate is in the usual range"),
    ],
)
def test_the_at_chance_advice_follows_the_rate_that_was_used(rate: float, advice: str) -> None:
    """Not 'try 0.002' to a model trained at 0.002: past the usual range the rate moves, inside it the epochs."""
    assert train.rate_advice(rate).startswith(advice)
