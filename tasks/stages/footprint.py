"""What a model costs the device: the constant bytes it holds, its zero weights, its multiply-accumulates.

One place for both counters: `tflite_footprint` reads a .tflite's flatbuffer, `keras_macs` counts a
Keras model's layers the same way (a SeparableConv2D is the DEPTHWISE_CONV_2D and CONV_2D it
converts to), so a Keras variant's MACs and its .tflite's agree.

Two sizes are never confused here. The download is the file, gzipped (tasks/stages/evaluate.py
file_sizes): magnitude pruning and clustering shrink it, because zeros and repeated values
compress. What the device holds is every constant byte of the .tflite, dense: the Edge TPU caches
each int8 weight in its parameter memory and the CPU kernels (XNNPACK, the built-in ones) read and
multiply every one, zero or not. Only fewer channels (or a smaller model) shrink that; int8
shrinks it 4x against float32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import prod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tf_keras

# Operators whose work is multiply-accumulates over a weight tensor (their input 1).
WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


@dataclass(frozen=True)
class Footprint:
    """A .tflite's dense constant bytes, how many of its weight values are zero, and its MACs per image."""

    param_bytes: int  # every constant buffer an operator reads (weights, biases, shapes), as stored: once each
    weight_bytes: int  # the weight tensors of WEIGHTED operators alone
    zero_weights: int  # weight values equal to zero: held and multiplied all the same
    macs: int  # multiply-accumulates of one image (batch 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tflite_footprint(path: Path | str) -> Footprint:
    """The footprint of a .tflite file, read from its flatbuffer (no interpreter, no TensorFlow)."""
    from tasks.stages.edgetpu.graph import Graph, read_tflite

    g = Graph(read_tflite(path))
    param_bytes = weight_bytes = zeros = macs = 0
    counted: set[int] = set()  # buffers: the converter stores identical constants once
    for op in g.operators:
        weights = op.input_at(1)  # the weight tensor of every WEIGHTED operator
        for index in op.inputs:
            if g.tensors[index].buffer in counted or not g.constant(index):
                continue
            counted.add(g.tensors[index].buffer)
            data = g.model.buffers[g.tensors[index].buffer].data
            size = 0 if data is None else len(data)
            param_bytes += size
            if op.name in WEIGHTED and index == weights:
                weight_bytes += size
                zeros += _zeros(b"" if data is None else bytes(data), g.dtype(index))
        if op.name in WEIGHTED:
            macs += _macs(g, op)
    return Footprint(param_bytes=param_bytes, weight_bytes=weight_bytes, zero_weights=zeros, macs=macs)


def _zeros(data: bytes, dtype: str) -> int:
    """Values equal to zero in a weight buffer (int8/uint8/float32/float16; other types count none)."""
    numpy_type = {"INT8": np.int8, "UINT8": np.uint8, "FLOAT32": np.float32, "FLOAT16": np.float16}.get(dtype)
    return 0 if numpy_type is None else int(np.count_nonzero(np.frombuffer(data, dtype=numpy_type) == 0))


def _batch1(shape: list[int]) -> list[int]:
    """A shape with a dynamic or larger batch read as one image."""
    return [1, *shape[1:]] if shape else shape


def _macs(g: Any, op: Any) -> int:
    """Multiply-accumulates of one weighted operator for one image, from its tensor shapes."""
    out = op.outputs[0] if op.outputs else None
    weights = op.input_at(1)
    if out is None or weights is None:
        return 0
    w, o = g.shape(weights), _batch1(g.shape(out))
    if op.name == "CONV_2D" and len(w) == 4 and len(o) == 4:  # w: [Cout, kh, kw, Cin]
        return prod(o) * w[1] * w[2] * w[3]
    if op.name == "DEPTHWISE_CONV_2D" and len(w) == 4 and len(o) == 4:  # w: [1, kh, kw, Cin * multiplier]
        return prod(o) * w[1] * w[2]
    if op.name == "FULLY_CONNECTED" and len(w) == 2:  # w: [units, inputs]; o: [rows, units]
        return prod(o) * w[1]
    if op.name == "TRANSPOSE_CONV" and len(w) == 4:  # w: [Cout, kh, kw, Cin]; each input pixel spreads a kernel
        source = op.input_at(2)
        pixels = prod(_batch1(g.shape(source))[1:3]) if source is not None else 0
        return pixels * w[0] * w[1] * w[2] * w[3]
    return 0


# Weight names that carry a layer's multiply-accumulates; biases and BatchNorm statistics are
# never pruned by tfmot, so counting them would understate the sparsity that was asked for.
KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")


def short_name(weight_name: str) -> str:
    """'dense/kernel:0' -> 'kernel'."""
    return weight_name.split("/")[-1].split(":")[0]


def kernel_arrays(model: tf_keras.Model) -> list[tuple[str, np.ndarray]]:
    """Every kernel of a Keras model as ('layer/kernel', values)."""
    return [
        (f"{layer.name}/{short_name(weight.name)}", weight.numpy())
        for layer in model.layers
        for weight in layer.weights
        if short_name(weight.name) in KERNELS
    ]


def layer_sparsity(model: tf_keras.Model) -> dict[str, float]:
    """Fraction of exact zeros in each kernel, by 'layer/kernel' name."""
    return {name: round(float(np.mean(values == 0)), 6) for name, values in kernel_arrays(model)}


def overall_sparsity(model: tf_keras.Model, names: set[str] | None = None) -> float:
    """Fraction of exact zeros over the named kernels together (all kernels by default)."""
    kernels = [values for name, values in kernel_arrays(model) if names is None or name in names]
    total = sum(values.size for values in kernels)
    zeros = sum(int(np.sum(values == 0)) for values in kernels)
    return round(zeros / total, 6) if total else 0.0


def keras_macs(model: tf_keras.Model) -> int:
    """Multiply-accumulates of one image through a Keras model: Conv2D, DepthwiseConv2D, SeparableConv2D, Dense.

    BatchNormalization (folded into the convolution at conversion), pooling and element-wise layers
    are not counted, as tflite_footprint counts only weighted operators. Nested models are counted
    through; a layer called twice in the model computes twice. A call made by another model that
    shares the layer (tfmot's pruning wrappers call the original layers) is not this model's: only
    the nodes of this model's own graph count.
    """
    from tasks.stages.fit import keras

    k = keras()
    weighted = (k.layers.Conv2D, k.layers.SeparableConv2D, k.layers.DepthwiseConv2D, k.layers.Dense)
    own = getattr(model, "_network_nodes", None)  # tf_keras' keys of a functional model's nodes
    total = 0
    for layer in model.layers:
        if isinstance(layer, k.Model):
            total += keras_macs(layer)
        elif isinstance(layer, weighted):
            for index in range(len(layer._inbound_nodes)):
                if own is not None and f"{layer.name}_ib-{index}" not in own:
                    continue
                total += _layer_macs(layer, layer.get_input_shape_at(index), layer.get_output_shape_at(index))
    return total


def _layer_macs(layer: Any, in_shape: tuple[Any, ...], out_shape: tuple[Any, ...]) -> int:
    """One call's multiply-accumulates (batch 1), from its input and output shapes."""
    from tasks.stages.fit import keras

    layers = keras().layers
    positions = prod(int(d) for d in out_shape[1:-1])  # output pixels (or the leading axes of a Dense)
    cin, cout = int(in_shape[-1]), int(out_shape[-1])
    if isinstance(layer, layers.Conv2DTranspose):  # a subclass of Conv2D: each input pixel spreads a kernel
        return prod(int(d) for d in in_shape[1:-1]) * prod(layer.kernel_size) * cin * cout
    if isinstance(layer, layers.Dense):
        return positions * cin * cout
    window = prod(layer.kernel_size)
    if isinstance(layer, layers.DepthwiseConv2D):
        return positions * cout * window
    if isinstance(layer, layers.SeparableConv2D):
        middle = cin * layer.depth_multiplier
        return positions * middle * window + positions * middle * cout
    return positions * cout * window * cin // layer.groups
