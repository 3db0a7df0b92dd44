"""train: an Edge TPU friendly CNN that learns the digits."""

from __future__ import annotations

import numpy as np

from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import images
from tasks.stages.fit import keras, load_model


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
    fit, _ = images.load_fit_validation(layout, params.data)
    settings = params.train.model_copy(update={"epochs": 2, "lr_schedule": "cosine"})
    built = models.build(settings, fit.shape, len(fit.class_names), layout.root)
    train_model(built, fit, settings)
    optimizer = built.model.optimizer
    steps = 2 * -(-len(fit) // settings.batch_size)
    assert int(optimizer.iterations.numpy()) == steps
    schedule = optimizer.get_config()["learning_rate"]
    assert schedule["class_name"] == "CosineDecay" and schedule["config"]["decay_steps"] == steps
    assert float(optimizer.learning_rate) < 0.01 * settings.learning_rate  # the rate of the last step
