"""quantize: full-integer int8 with integer I/O, no float operator, and a float reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks import data
from tasks.errors import StageError
from tasks.inference import TFLiteModel
from tasks.layout import Layout
from tasks.params import Params
from tasks.quantize import to_int8_tflite
from tasks.stages import quantize
from tasks.train import load_model
from tests.conftest import repo_params


@pytest.fixture(scope="module")
def quantized(trained: tuple[Layout, Params]) -> tuple[Layout, Params]:
    layout, params = trained
    quantize(layout, params)
    return layout, params


def test_int8_model_has_integer_io_and_no_float_tensor(quantized: tuple[Layout, Params]) -> None:
    layout, _ = quantized
    model = TFLiteModel(layout.int8_tflite)
    assert model.input_dtype == np.int8
    assert model.output_dtype == np.int8
    kinds = {dtype.kind for dtype in model.tensor_dtypes()}
    assert "f" not in kinds, "a float tensor means a float operator survived quantization"


def test_float_reference_is_float(quantized: tuple[Layout, Params]) -> None:
    layout, _ = quantized
    assert TFLiteModel(layout.float_tflite).input_dtype == np.float32


def test_int8_is_under_a_third_of_float(quantized: tuple[Layout, Params]) -> None:
    layout, _ = quantized
    assert layout.int8_tflite.stat().st_size <= 0.3 * layout.float_tflite.stat().st_size
    report = json.loads(layout.quantize_report.read_text())
    assert report["int8_bytes"] == layout.int8_tflite.stat().st_size


def test_int8_agrees_with_keras(quantized: tuple[Layout, Params]) -> None:
    layout, params = quantized
    test = data.load_split(layout.raw, "test", params.data.channels, params.data.image_size)
    keras_top = np.argmax(load_model(layout.pruned_model).predict(test.x, verbose=0), axis=-1)
    int8_top = np.argmax(TFLiteModel(layout.int8_tflite).predict(test.x), axis=-1)
    assert np.mean(keras_top == int8_top) >= 0.97


def test_uint8_io(quantized: tuple[Layout, Params], tmp_path) -> None:  # type: ignore[no-untyped-def]
    layout, _ = quantized
    params = repo_params(["quantize.io_dtype=uint8"])
    calibration = data.load_calibration(layout, params.data)
    path = tmp_path / "uint8.tflite"
    path.write_bytes(to_int8_tflite(load_model(layout.pruned_model), calibration, params.quantize))
    model = TFLiteModel(path)
    assert model.input_dtype == np.uint8 and model.output_dtype == np.uint8


def test_empty_calibration_set_is_refused(quantized: tuple[Layout, Params]) -> None:
    layout, params = quantized
    empty = np.zeros((0, 8, 8, 1), dtype=np.float32)
    with pytest.raises(StageError, match="calibration set has zero samples"):
        to_int8_tflite(load_model(layout.pruned_model), empty, params.quantize)
