"""train: an Edge TPU friendly CNN that learns the digits."""

from __future__ import annotations

import numpy as np

from tasks import data
from tasks.layout import Layout
from tasks.params import Params
from tasks.train import build_model, keras, load_model

# Layers with an Edge TPU int8 kernel (or that fold into one at conversion).
EDGETPU_FRIENDLY = {
    "InputLayer",
    "Rescaling",
    "Conv2D",
    "SeparableConv2D",
    "DepthwiseConv2D",
    "BatchNormalization",
    "ReLU",
    "MaxPooling2D",
    "AveragePooling2D",
    "Flatten",
    "Dense",
}


def test_model_uses_only_edgetpu_friendly_layers(params: Params) -> None:
    model = build_model((8, 8, 1), 10, params.train)
    assert {type(layer).__name__ for layer in model.layers} <= EDGETPU_FRIENDLY
    assert model.output_shape == (None, 10)


def test_build_is_seeded(params: Params) -> None:
    first = build_model((8, 8, 1), 10, params.train).get_weights()
    second = build_model((8, 8, 1), 10, params.train).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_trained_model_beats_chance_by_far(trained: tuple[Layout, Params]) -> None:
    layout, params = trained
    model = load_model(layout.float_model)
    test_x, test_y = data.load_test(layout, params.data).arrays()
    accuracy = float(np.mean(np.argmax(model.predict(test_x, verbose=0), axis=-1) == test_y))
    assert accuracy > 0.8  # chance is 0.1
    assert isinstance(model, keras().Model)
    assert model.optimizer is None  # saved without optimizer state


def test_cosine_schedule_ends_each_phase_at_a_rate_near_zero(trained: tuple[Layout, Params]) -> None:
    from tasks import models
    from tasks.train import train_model

    layout, params = trained
    fit, _ = data.load_fit_validation(layout, params.data)
    settings = params.train.model_copy(update={"epochs": 2, "lr_schedule": "cosine"})
    built = models.build(settings, fit.shape, len(fit.class_names), layout.root)
    train_model(built, fit, settings)
    optimizer = built.model.optimizer
    steps = 2 * -(-len(fit) // settings.batch_size)
    assert int(optimizer.iterations.numpy()) == steps
    schedule = optimizer.get_config()["learning_rate"]
    assert schedule["class_name"] == "CosineDecay" and schedule["config"]["decay_steps"] == steps
    assert float(optimizer.learning_rate) < 0.01 * settings.learning_rate  # the rate of the last step


def test_fit_traces_its_training_step_once(trained: tuple[Layout, Params]) -> None:
    # A first trace that creates variables (Adam's slots, the accuracy's counters) is traced a
    # second time; tracing is most of a short fit (tasks.train.compile_model).
    from tasks import models
    from tasks.train import train_model

    layout, params = trained
    fit, _ = data.load_fit_validation(layout, params.data)
    settings = params.train.model_copy(update={"epochs": 1})
    assert len(fit) % settings.batch_size, "a smaller last batch, which must not be traced again either"
    built = models.build(settings, fit.shape, len(fit.class_names), layout.root)
    train_model(built, fit, settings)
    assert built.model.train_function.experimental_get_tracing_count() == 1


def test_accuracy_traces_the_model_once(trained: tuple[Layout, Params]) -> None:
    from tasks.train import accuracy

    layout, params = trained
    model = load_model(layout.float_model)
    test = data.load_test(layout, params.data)
    assert len(test) % 256, "a smaller last batch"
    measured = accuracy(model, test, batch_size=256)
    assert model.predict_function.experimental_get_tracing_count() == 1
    x, y = test.arrays()
    assert measured == float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y))
