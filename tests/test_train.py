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
