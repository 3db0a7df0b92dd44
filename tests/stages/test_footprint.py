"""footprint: the dense bytes a .tflite holds and the multiply-accumulates it computes, from its shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import STAGES
from tasks.stages.fit import keras
from tasks.stages.footprint import tflite_footprint
from tasks.stages.quantize import to_float_tflite


def test_macs_and_bytes_of_a_model_whose_arithmetic_is_known(tmp_path: Path) -> None:
    k = keras()
    k.utils.set_random_seed(0)
    # Distinct nonzero biases: the converter stores identical constants once (zero biases are identical).

    def bias(seed: int) -> object:
        return k.initializers.RandomUniform(0.1, 1.0, seed=seed)

    inputs = k.Input(shape=(6, 6, 2), batch_size=1)
    x = k.layers.Conv2D(4, 3, padding="same", bias_initializer=bias(1))(inputs)  # 6*6*4 outputs, 3*3*2 MACs each
    x = k.layers.DepthwiseConv2D(3, padding="valid", bias_initializer=bias(2))(x)  # 4*4*4 outputs, 3*3 MACs each
    x = k.layers.Flatten()(x)
    outputs = k.layers.Dense(5, bias_initializer=bias(3))(x)  # 5 outputs, 64 MACs each
    model = k.Model(inputs, outputs)
    path = tmp_path / "model.tflite"
    path.write_bytes(to_float_tflite(model, 1))
    found = tflite_footprint(path)
    assert found.macs == 6 * 6 * 4 * 18 + 4 * 4 * 4 * 9 + 5 * 64
    weights = 4 * 3 * 3 * 2 + 3 * 3 * 4 + 64 * 5
    assert found.weight_bytes == 4 * weights  # float32
    biases = 4 + 4 + 5
    assert found.param_bytes >= 4 * (weights + biases)  # and the shape constants the converter adds
    assert found.zero_weights == 0


def test_pruned_zeros_are_held_all_the_same(trained: tuple[Layout, Params], tmp_path: Path) -> None:
    layout, params = trained
    STAGES["quantize"](
        layout, params.model_copy(update={"quantize": params.quantize.model_copy(update={"debug_layers": False})})
    )
    found = tflite_footprint(layout.int8_tflite)
    # The pruned model's zeros are still weights the device stores and multiplies: a third or more of
    # them here, yet every one is counted in the bytes.
    assert found.zero_weights > found.weight_bytes // 3
    assert found.weight_bytes > found.zero_weights
    assert found.param_bytes > found.weight_bytes
    assert np.isclose(found.macs, tflite_footprint(layout.float_tflite).macs)


def test_keras_macs_agree_with_the_converted_model(tmp_path: Path) -> None:
    """keras_macs counts a Keras model as tflite_footprint counts its .tflite: strides, depthwise, separable."""
    from tasks.stages.footprint import keras_macs

    k = keras()
    inputs = k.Input(shape=(8, 8, 3))
    x = k.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = k.layers.BatchNormalization()(x)
    x = k.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)
    x = k.layers.SeparableConv2D(6, 3, padding="valid")(x)
    outputs = k.layers.Dense(3)(k.layers.Dense(5)(k.layers.Flatten()(x)))
    model = k.Model(inputs, outputs)
    path = tmp_path / "model.tflite"
    path.write_bytes(to_float_tflite(model, 1))
    assert keras_macs(model) == tflite_footprint(path).macs > 0


def test_keras_macs_count_only_the_models_own_calls_of_a_shared_layer() -> None:
    """tfmot's pruning wrappers call the original layers: those calls are another model's, not this one's."""
    from tasks.stages.footprint import keras_macs

    k = keras()
    inputs = k.Input(shape=(8, 8, 1))
    conv, dense = k.layers.Conv2D(4, 3, padding="same"), k.layers.Dense(3)
    model = k.Model(inputs, dense(k.layers.Flatten()(conv(inputs))))
    alone = keras_macs(model)
    assert alone == 8 * 8 * 4 * 9 + 8 * 8 * 4 * 3
    other = k.Input(shape=(8, 8, 1))
    k.Model(other, dense(k.layers.Flatten()(conv(other))))  # the same layers, called by another model
    assert keras_macs(model) == alone
    twice = k.Model(inputs, k.layers.Add()([conv(inputs), conv(inputs)]))  # a layer this model calls twice
    assert keras_macs(twice) == 2 * 8 * 8 * 4 * 9
