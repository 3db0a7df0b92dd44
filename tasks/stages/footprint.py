"""What a model costs the device: the constant bytes it holds, its zero weights, its multiply-accumulates.

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
from typing import Any

import numpy as np

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
