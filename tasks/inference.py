"""TFLiteModel: call a .tflite file like a Keras classifier, on the LiteRT interpreter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import StageError


class TFLiteModel:
    """A .tflite model with Keras-like predict and evaluate.

    Input is float, as for the Keras model; quantized models get it quantized with the
    input tensor's scale and zero point, and their output dequantized back to float.
    """

    def __init__(self, path: Path | str, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        if not self.path.is_file():
            raise StageError(f"{self.path}: no such .tflite file")
        try:
            self._interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
        except ValueError as error:
            raise StageError(f"{self.path}: not a readable .tflite model ({error})") from None
        self._batch = 0
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]

    @property
    def input_dtype(self) -> np.dtype[Any]:
        return np.dtype(self._input["dtype"])

    @property
    def output_dtype(self) -> np.dtype[Any]:
        return np.dtype(self._output["dtype"])

    def tensor_dtypes(self) -> list[np.dtype[Any]]:
        """The dtype of every tensor in the graph."""
        return [np.dtype(t["dtype"]) for t in self._interpreter.get_tensor_details()]

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            shape = [batch, *self._input["shape"][1:]]
            self._interpreter.resize_tensor_input(self._input["index"], shape)
            self._interpreter.allocate_tensors()
            self._input = self._interpreter.get_input_details()[0]
            self._output = self._interpreter.get_output_details()[0]
            self._batch = batch

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        scale, zero_point = self._input["quantization"]
        if self.input_dtype.kind == "f" or scale == 0:
            return x.astype(self.input_dtype)
        info = np.iinfo(self.input_dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(self.input_dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        scale, zero_point = self._output["quantization"]
        if self.output_dtype.kind == "f" or scale == 0:
            return y.astype(np.float32)
        return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def predict(self, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Float outputs for float inputs, batch by batch, like keras.Model.predict."""
        outputs = []
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            self._resize(len(chunk))
            self._interpreter.set_tensor(self._input["index"], self._quantize(chunk))
            self._interpreter.invoke()
            outputs.append(self._dequantize(self._interpreter.get_tensor(self._output["index"])))
        return np.concatenate(outputs)

    def latency_ms(self, sample: np.ndarray, runs: int, warmup: int = 5) -> float:
        """Median milliseconds of one batch-1 invoke on `sample` (input setting included)."""
        import time

        self._resize(1)
        quantized = self._quantize(sample[np.newaxis])
        timings = []
        for run in range(warmup + runs):
            started = time.perf_counter()
            self._interpreter.set_tensor(self._input["index"], quantized)
            self._interpreter.invoke()
            if run >= warmup:
                timings.append(time.perf_counter() - started)
        return float(np.median(timings) * 1000.0)

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 32) -> tuple[float, float]:
        """(sparse categorical cross-entropy, accuracy), as keras.Model.evaluate returns them."""
        probabilities = self.predict(x, batch_size=batch_size)
        picked = np.clip(probabilities[np.arange(len(y)), y], 1e-7, 1.0)
        return float(-np.mean(np.log(picked))), float(np.mean(np.argmax(probabilities, axis=-1) == y))
