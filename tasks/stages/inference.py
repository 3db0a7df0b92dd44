"""TFLiteModel: call a .tflite file like a Keras classifier, on the LiteRT interpreter.

Two CPU kernel sets: `xnnpack` (LiteRT's default, with the XNNPACK delegate applied) and
`builtin` (the interpreter's own optimized kernels, no default delegate). Which is faster depends
on the variant and the CPU (dynamic-range models, for one, can be slower on XNNPACK), so both are
selectable; `python -m benchmarks.compression` measures every variant on both.

A model compiled by `edgetpu_compiler` holds its Edge TPU part as one custom operator,
`edgetpu-custom-op`, that only the Edge TPU runtime (libedgetpu) can run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tasks.errors import StageError

log = logging.getLogger(__name__)

OpResolver = Literal["xnnpack", "builtin"]
EdgeTPUMode = Literal["auto", "require", "off"]

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
# The Edge TPU runtime's shared library, as Coral's libedgetpu1-std (or -max) package installs it.
EDGETPU_LIBRARY = "libedgetpu.so.1"
EDGETPU_INSTALL_HINT = "install Coral's libedgetpu1-std package (https://coral.ai/software/#debian-packages)"

_OP_RESOLVERS = ("xnnpack", "builtin")
_EDGETPU_MODES = ("auto", "require", "off")


def custom_ops(data: bytes | bytearray, path: Path | str = "model") -> set[str]:
    """The custom operator names a .tflite flatbuffer declares; StageError if it is not a .tflite."""
    # LiteRT's generated schema bindings import in a fraction of a second and read only the
    # operator-code table, without unpacking the weights.
    from ai_edge_litert import schema_py_generated as schema

    buffer = bytearray(data)
    if len(buffer) < 8 or not schema.Model.ModelBufferHasIdentifier(buffer, 0):
        raise StageError(f"{path}: not a TensorFlow Lite model (no TFL3 flatbuffer identifier)")
    try:
        model = schema.Model.GetRootAs(buffer, 0)
        codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
        names = {code.CustomCode() for code in codes}
    except Exception as error:  # flatbuffers raises anything from IndexError to struct.error on bad bytes
        raise StageError(f"{path}: truncated or corrupt .tflite ({type(error).__name__}); re-export it") from None
    return {name.decode() if isinstance(name, bytes) else name for name in names if name}


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise StageError(f"{path}: no such .tflite file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise StageError(f"{path}: cannot read ({error.strerror or error})") from None


def is_edgetpu_model(path: Path | str) -> bool:
    """Whether the .tflite was compiled by edgetpu_compiler (holds the edgetpu-custom-op)."""
    path = Path(path)
    return EDGETPU_CUSTOM_OP in custom_ops(_read(path), path)


def edgetpu_delegate(path: Path | str) -> Any:
    """LiteRT's delegate for the Edge TPU runtime; StageError naming the fix when it cannot load."""
    import ctypes

    from ai_edge_litert.interpreter import load_delegate

    try:
        # Probe the library first: load_delegate lets ctypes' OSError through, and the half-made
        # Delegate it leaves behind prints an ignored AttributeError when collected.
        ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError:
        raise StageError(
            f"{path}: compiled for the Edge TPU, but libedgetpu (the Edge TPU runtime, {EDGETPU_LIBRARY}) "
            f"is not installed; {EDGETPU_INSTALL_HINT} - a compiled model cannot run without it"
        ) from None
    try:
        return load_delegate(EDGETPU_LIBRARY)
    except (ValueError, RuntimeError) as error:
        # The library loaded but made no delegate: in practice no Edge TPU is attached.
        reason = " ".join(str(error).split()) or "no reason given"
        raise StageError(
            f"{path}: libedgetpu is installed but found no usable Edge TPU ({reason}); "
            "plug in the Coral device or check its permissions"
        ) from None


class TFLiteModel:
    """A .tflite model with Keras-like predict and evaluate.

    Input is float, as for the Keras model; quantized models get it quantized with the
    input tensor's scale and zero point, and their output dequantized back to float.
    `edgetpu`: "auto" runs a compiled model on the Edge TPU delegate and a plain one on the CPU,
    "require" refuses a model that is not compiled, "off" never loads the delegate.
    """

    def __init__(
        self,
        path: Path | str,
        num_threads: int = 1,
        op_resolver: OpResolver = "xnnpack",
        edgetpu: EdgeTPUMode = "auto",
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.path = Path(path)
        if op_resolver not in _OP_RESOLVERS:
            raise StageError(f"op_resolver {op_resolver!r}: must be one of {', '.join(_OP_RESOLVERS)}")
        if edgetpu not in _EDGETPU_MODES:
            raise StageError(f"edgetpu {edgetpu!r}: must be one of {', '.join(_EDGETPU_MODES)}")
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise StageError(f"num_threads {num_threads!r}: must be an integer >= 1")
        self.num_threads = num_threads
        self.op_resolver: OpResolver = op_resolver
        compiled = EDGETPU_CUSTOM_OP in custom_ops(_read(self.path), self.path)
        if edgetpu == "require" and not compiled:
            raise StageError(
                f"{self.path}: not compiled for the Edge TPU (edgetpu='require'); "
                "run the edgetpu stage / edgetpu_compiler and load its _edgetpu.tflite"
            )
        if compiled and edgetpu == "off":
            raise StageError(
                f"{self.path}: compiled for the Edge TPU, which edgetpu='off' excludes; "
                "use edgetpu='auto' with libedgetpu, or the uncompiled .tflite on the CPU"
            )
        delegates = [edgetpu_delegate(self.path)] if compiled else []
        self.on_edgetpu = compiled
        resolver = OpResolverType.AUTO if op_resolver == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self._interpreter = Interpreter(
                model_path=str(self.path),
                num_threads=num_threads,
                experimental_op_resolver_type=resolver,
                experimental_delegates=delegates or None,
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            reason = " ".join(str(error).split())[:200]
            raise StageError(f"{self.path}: not a runnable .tflite model ({reason})") from None
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise StageError(
                f"{self.path}: {len(inputs)} inputs and {len(outputs)} outputs; "
                "TFLiteModel runs classifiers with one of each"
            )
        self._input, self._output = inputs[0], outputs[0]
        # Everything the hot loop needs, looked up once: the interpreter's detail calls build
        # dictionaries on every call.
        self._input_index = int(self._input["index"])
        self._output_index = int(self._output["index"])
        self._input_shape = tuple(int(d) for d in self._input["shape"])
        signature = self._input.get("shape_signature")
        batch_dim = int(signature[0]) if signature is not None and len(signature) else self._input_shape[0]
        # A batch dimension fixed in the graph (an Edge TPU model's always is) cannot be resized:
        # such a model is fed exactly that many samples at a time.
        self.fixed_batch: int | None = None if batch_dim == -1 else self._input_shape[0]
        self._batch = self._input_shape[0]
        self._in_scale, self._in_zero = _quantization(self._input)
        self._out_scale, self._out_zero = _quantization(self._output)
        log.debug(
            "%s: %s -> %s, %s kernels, %d threads%s",
            self.path.name,
            self.input_dtype.name,
            self.output_dtype.name,
            op_resolver,
            num_threads,
            ", Edge TPU" if compiled else "",
        )

    def __repr__(self) -> str:
        return (
            f"TFLiteModel({str(self.path)!r}, num_threads={self.num_threads}, op_resolver={self.op_resolver!r}, "
            f"on_edgetpu={self.on_edgetpu})"
        )

    @property
    def input_dtype(self) -> np.dtype[Any]:
        return np.dtype(self._input["dtype"])

    @property
    def output_dtype(self) -> np.dtype[Any]:
        return np.dtype(self._output["dtype"])

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """The input shape, batch dimension None when it is not fixed (as Keras' model.input_shape)."""
        return (self.fixed_batch, *self._input_shape[1:])

    def tensor_dtypes(self) -> list[np.dtype[Any]]:
        """The dtype of every tensor in the graph."""
        return [np.dtype(t["dtype"]) for t in self._interpreter.get_tensor_details()]

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            self._interpreter.resize_tensor_input(self._input_index, [batch, *self._input_shape[1:]])
            self._interpreter.allocate_tensors()
            self._batch = batch

    @property
    def input_quantization(self) -> tuple[float, int]:
        """(scale, zero point) of the input tensor; (0, 0) when it is not quantized."""
        return self._in_scale, self._in_zero

    @property
    def takes_frames(self) -> bool:
        """Whether a uint8 camera frame is the input tensor's value as it is (uint8, scale 1, zero point 0)."""
        return self.input_dtype == np.uint8 and self._in_scale == 1.0 and self._in_zero == 0

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Pixels as the model's input tensor takes them (quantized with its scale and zero point).

        Pixels are float or uint8 values from 0 to 255, as for the Keras model; a uint8 frame goes
        in untouched when the model takes frames as they are.
        """
        dtype = self.input_dtype
        if x.dtype == np.uint8 and self.takes_frames:
            return np.ascontiguousarray(x)
        if dtype.kind == "f" or self._in_scale == 0:
            return np.ascontiguousarray(x, dtype=dtype)
        info = np.iinfo(dtype)
        # One float32 buffer worked in place: on a small model this is a good part of predict's time.
        scaled = np.divide(x, np.float32(self._in_scale), dtype=np.float32)
        scaled += np.float32(self._in_zero)
        np.rint(scaled, out=scaled)
        np.clip(scaled, info.min, info.max, out=scaled)
        return scaled.astype(dtype)

    def dequantize_output(self, y: np.ndarray) -> np.ndarray:
        """The output tensor's values as float32 (dequantized with its scale and zero point)."""
        if self.output_dtype.kind == "f" or self._out_scale == 0:
            return np.asarray(y, dtype=np.float32)
        return (y.astype(np.float32) - np.float32(self._out_zero)) * np.float32(self._out_scale)

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim != len(self._input_shape) or tuple(x.shape[1:]) != self._input_shape[1:]:
            expected = ", ".join(str(d) for d in self._input_shape[1:])
            raise ValueError(f"{self.path.name}: input of shape {x.shape}, expected (N, {expected})")

    def predict(self, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Float outputs for pixels (float or uint8, 0 to 255), batch by batch, like keras.Model.predict."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        x = np.asarray(x)
        self._check_input(x)
        count = len(x)
        step = self.fixed_batch or batch_size
        quantized = self.quantize_input(x)  # the whole array in one vectorized pass
        interpreter, input_index, output_index = self._interpreter, self._input_index, self._output_index
        outputs = []
        for start in range(0, count, step):
            chunk = quantized[start : start + step]
            if self.fixed_batch is None:
                self._resize(len(chunk))
            elif len(chunk) < step:
                # A fixed batch takes exactly `step` samples: pad the last chunk, drop the extra rows.
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            interpreter.set_tensor(input_index, chunk)
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(output_index))
        if not outputs:
            return np.zeros((0, *self._output["shape"][1:]), dtype=np.float32)
        return self.dequantize_output(np.concatenate(outputs)[:count])

    def latency_ms(self, sample: np.ndarray, runs: int, warmup: int = 5) -> float:
        """Median milliseconds of one batch-1 invoke on `sample` (input setting included)."""
        import time

        batch = self.fixed_batch or 1
        if self.fixed_batch is None:
            self._resize(1)
        quantized = self.quantize_input(np.repeat(np.asarray(sample)[np.newaxis], batch, axis=0))
        interpreter, input_index = self._interpreter, self._input_index
        timings = []
        for run in range(warmup + runs):
            started = time.perf_counter()
            interpreter.set_tensor(input_index, quantized)
            interpreter.invoke()
            if run >= warmup:
                timings.append(time.perf_counter() - started)
        return float(np.median(timings) * 1000.0)

    def evaluate(self, x: Any, y: np.ndarray | None = None, batch_size: int = 32) -> tuple[float, float]:
        """(sparse categorical cross-entropy, accuracy), as keras.Model.evaluate returns them.

        `x` is an array of pixels with labels `y`, or, like Keras, an iterable of (pixels, labels)
        batches (a tf.data dataset: the split is then never in memory at once).
        """
        if y is not None:
            probabilities = self.predict(x, batch_size=batch_size)
            return sparse_categorical_crossentropy(probabilities, y), top1_accuracy(probabilities, y)
        batches = x.as_numpy_iterator() if hasattr(x, "as_numpy_iterator") else x
        count, loss, correct = 0, 0.0, 0
        for pixels, labels in batches:
            probabilities = self.predict(pixels, batch_size=len(pixels))
            loss += sparse_categorical_crossentropy(probabilities, labels) * len(labels)
            correct += int(np.sum(np.argmax(probabilities, axis=-1) == np.asarray(labels).reshape(-1)))
            count += len(labels)
        if count == 0:
            raise ValueError("evaluate: no batches")
        return loss / count, correct / count


def _quantization(details: dict[str, Any]) -> tuple[float, int]:
    """(scale, zero point) of a per-tensor quantized I/O tensor; (0, 0) when it is not quantized."""
    scale, zero_point = details["quantization"]
    return float(scale), int(zero_point)


def sparse_categorical_crossentropy(probabilities: np.ndarray, y: np.ndarray) -> float:
    """Mean -log p(true class), with Keras' clipping to [epsilon, 1 - epsilon]."""
    epsilon = 1e-7  # keras.backend.epsilon()
    labels = np.asarray(y).reshape(-1).astype(np.int64)
    picked = np.clip(probabilities[np.arange(len(labels)), labels], epsilon, 1.0 - epsilon)
    return float(-np.mean(np.log(picked)))


def top1_accuracy(probabilities: np.ndarray, y: np.ndarray) -> float:
    """Share of samples whose highest-probability class is the label."""
    labels = np.asarray(y).reshape(-1)
    return float(np.mean(np.argmax(probabilities, axis=-1) == labels))
