"""What the edgetpu tests share: a tiny model in each converted form, the pipeline's int8 model, the compiler double."""

from __future__ import annotations

import stat
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from tasks.layout import Layout
from tasks.params import Params
from tests.stages.edgetpu.cases import FAKE


def _tiny_keras(batch_size: int | None, leaky: bool) -> object:
    """Conv -> [LeakyReLU] -> Conv -> pool -> Dense -> softmax on 8x8x1, small enough to convert in a second."""
    from tasks.stages.fit import keras

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.Input(shape=(8, 8, 1), batch_size=batch_size)
    x = k.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    if leaky:
        x = k.layers.LeakyReLU(0.1)(x)  # not in Coral's supported operations; int8 in TFLite
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = k.layers.MaxPooling2D(2)(x)
    x = k.layers.Flatten()(x)
    outputs = k.layers.Dense(10, activation="softmax")(x)
    return k.Model(inputs, outputs)


def _convert(model: object, quantization: str) -> bytes:
    """float | dynamic_range | int8 (full-integer, int8 I/O, builtins only) | int8_per_tensor_dense."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization != "float":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization.startswith("int8"):
        samples = np.random.default_rng(0).random((8, 1, 8, 8, 1), dtype=np.float32)
        converter.representative_dataset = lambda: ([s] for s in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if quantization == "int8_per_tensor_dense":
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    with warnings.catch_warnings():
        # As in tasks.stages.quantize: the representative dataset is what supplies the input statistics.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return bytes(converter.convert())


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model in each form a test needs, converted once."""
    import tasks  # noqa: F401  (Keras 2 before TensorFlow loads)

    folder = tmp_path_factory.mktemp("converted")
    forms = {
        "static_int8": (1, False, "int8"),
        "dynamic_batch_int8": (None, False, "int8"),
        "leaky_int8": (1, True, "int8"),
        "per_tensor_dense_int8": (1, False, "int8_per_tensor_dense"),
        "dynamic_range": (1, False, "dynamic_range"),
        "float": (1, False, "float"),
    }
    paths = {}
    for name, (batch, leaky, quantization) in forms.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(_convert(_tiny_keras(batch, leaky), quantization))
    return paths


@pytest.fixture(scope="module")
def pipeline_int8(trained: tuple[Layout, Params]) -> Path:
    """The default pipeline's int8 model (quantize stage on the shared trained folder)."""
    from tasks.stages import STAGES

    layout, params = trained
    if not layout.int8_tflite.is_file():  # test_quantize may have written it already
        STAGES["quantize"](layout, params)
    return layout.int8_tflite


@pytest.fixture
def fake_compiler(tmp_path: Path) -> Path:
    """TEST DOUBLE: an executable `edgetpu_compiler` that runs tests/fake_edgetpu_compiler.py."""
    folder = tmp_path / "bin"
    folder.mkdir()
    wrapper = folder / "edgetpu_compiler"
    wrapper.write_text(f'#!/bin/sh\n# test double, not Coral\'s compiler\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper
