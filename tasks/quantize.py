"""quantize stage: the float .tflite reference and the full-integer int8 model."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tasks.errors import StageError
from tasks.params import QuantizeParams

if TYPE_CHECKING:
    import tf_keras

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizeResult:
    """Sizes and I/O types of the converted models."""

    float_bytes: int
    int8_bytes: int
    input_dtype: str
    output_dtype: str
    calibration_samples: int


def to_float_tflite(model: tf_keras.Model) -> bytes:
    """Convert without quantization: the reference the int8 model is measured against."""
    import tensorflow as tf

    return bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


def to_int8_tflite(model: tf_keras.Model, calibration: np.ndarray, params: QuantizeParams) -> bytes:
    """Full-integer post-training quantization calibrated on the representative set.

    Only TFLITE_BUILTINS_INT8 kernels are allowed, so conversion fails rather than leaving a
    float operator behind, and the model's input and output are integer as the Edge TPU needs.
    """
    import tensorflow as tf

    if len(calibration) == 0:
        raise StageError("quantize: the calibration set has zero samples; raise data.calibration_size")

    def representative() -> Iterator[list[np.ndarray]]:
        for sample in calibration:
            yield [sample[np.newaxis].astype(np.float32)]

    io_type = tf.int8 if params.io_dtype == "int8" else tf.uint8
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    # Per-tensor Dense weights: TF >= 2.16 quantizes them per channel by default, which the
    # Edge TPU compiler (16, 2021) predates; convolutions stay per channel, which it supports.
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    log.info("quantizing to int8 with %d calibration samples", len(calibration))
    with warnings.catch_warnings():
        # The converter warns that the float model carries no input statistics; the
        # representative dataset is what supplies them.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return bytes(converter.convert())
