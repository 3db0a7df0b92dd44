"""The offline preflight: what edgetpu_compiler will map, operator by operator, and why not.

The preflight reads a .tflite with TensorFlow's own flatbuffer bindings and predicts, operator by
operator, what Coral's `edgetpu_compiler` (version 16, one Edge TPU subgraph by default) does with
it, in the compiler's own status wording. The rules are Coral's documented model requirements
(https://coral.ai/docs/edgetpu/models-intro/) plus what the real compiler logs in
`../shared/edgetpu-cases` show; `tests/test_edgetpu.py` measures the agreement on those cases.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from tasks.edgetpu.compiler import MAPPED, CompilerReport, OperatorRow, format_table
from tasks.edgetpu.errors import EdgeTPUError

log = logging.getLogger(__name__)

# The compiler's own per-operator statuses, as its .log and --show_operations print them.
UNSUPPORTED_OP = "Operation not supported"
UNSUPPORTED_TYPE = "Operation is working on an unsupported data type"
NOT_CONSTANT = "Filter, bias, or other param is not constant at compile-time"
UNSUPPORTED_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
ONE_SUBGRAPH = "More than one subgraph is not supported"
# What the compiler prints when it gives up on the whole model.
NOT_PARSED = "Model could not be parsed"
COMPILATION_FAILED = "Compilation failed"
DYNAMIC_TENSORS = (
    "Attempting to use a delegate that only supports static-sized tensors with a graph that has dynamic-sized tensors"
)

# edgetpu_compiler 16's default --min_runtime_version.
DEFAULT_RUNTIME = 14
COMPILER_VERSION = 16

# Coral's supported-operations table: operator -> Edge TPU runtime version it needs (0 = every runtime).
SUPPORTED: dict[str, int] = {
    "ADD": 0,
    "AVERAGE_POOL_2D": 0,
    "CONCATENATION": 0,
    "CONV_2D": 0,
    "DEPTHWISE_CONV_2D": 0,
    "EXPAND_DIMS": 13,
    "FULLY_CONNECTED": 0,
    "L2_NORMALIZATION": 0,
    "LOGISTIC": 0,
    "LSTM": 14,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 14,
    "MAXIMUM": 0,
    "MAX_POOL_2D": 0,
    "MEAN": 0,
    "MINIMUM": 0,
    "MUL": 0,
    "PACK": 13,
    "PAD": 0,
    "PRELU": 13,
    "QUANTIZE": 13,
    "REDUCE_MAX": 14,
    "REDUCE_MIN": 14,
    "RELU": 0,
    "RELU6": 0,
    "RELU_N1_TO_1": 0,
    "RESHAPE": 0,
    "RESIZE_BILINEAR": 0,
    "RESIZE_NEAREST_NEIGHBOR": 0,
    "RSQRT": 14,
    "SLICE": 0,
    "SOFTMAX": 0,
    "SPACE_TO_DEPTH": 0,
    "SPLIT": 0,
    "SQUARED_DIFFERENCE": 14,
    "SQUEEZE": 0,
    "STRIDED_SLICE": 0,
    "SUB": 0,
    "SUM": 13,
    "TANH": 0,
    "TRANSPOSE": 14,
    "TRANSPOSE_CONV": 13,
}

# Highest operator version the compiler's built-in TFLite (TF 2.5 era) registers: the last version
# tensorflow/lite/tools/versioning/runtime_version.cc dates at 2.5.0 or earlier. A newer version
# stops the compiler before it maps anything ("Didn't find op for builtin opcode 'CONV_2D' version
# '6'", "... 'QUANTIZE' version '3'", "... 'TRANSPOSE_CONV' version '4'" in google-coral/edgetpu issues).
COMPILER_MAX_VERSION: dict[str, int] = {
    "ADD": 3,
    "ARG_MAX": 2,
    "ARG_MIN": 2,
    "AVERAGE_POOL_2D": 3,
    "BATCH_MATMUL": 4,
    "CAST": 1,
    "CONCATENATION": 3,
    "CONV_2D": 5,
    "DEPTHWISE_CONV_2D": 6,
    "DEPTH_TO_SPACE": 2,
    "DEQUANTIZE": 4,
    "DIV": 2,
    "EXP": 1,
    "EXPAND_DIMS": 1,
    "FULLY_CONNECTED": 9,
    "GATHER": 5,
    "HARD_SWISH": 1,
    "L2_NORMALIZATION": 2,
    "LEAKY_RELU": 2,
    "LOGISTIC": 3,
    "LSTM": 4,
    "MAXIMUM": 4,
    "MAX_POOL_2D": 3,
    "MEAN": 3,
    "MINIMUM": 4,
    "MUL": 4,
    "PACK": 3,
    "PAD": 3,
    "PADV2": 3,
    "PRELU": 1,
    "QUANTIZE": 2,
    "REDUCE_MAX": 3,
    "REDUCE_MIN": 3,
    "RELU": 3,
    "RELU6": 3,
    "RELU_N1_TO_1": 1,
    "RESHAPE": 1,
    "RESIZE_BILINEAR": 4,
    "RESIZE_NEAREST_NEIGHBOR": 4,
    "RSQRT": 2,
    "SLICE": 5,
    "SOFTMAX": 3,
    "SPACE_TO_DEPTH": 2,
    "SPLIT": 4,
    "SPLIT_V": 2,
    "SQUARED_DIFFERENCE": 2,
    "SQUEEZE": 2,
    "STRIDED_SLICE": 5,
    "SUB": 5,
    "SUM": 2,
    "TANH": 3,
    "TILE": 2,
    "TRANSPOSE": 5,
    "TRANSPOSE_CONV": 3,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 3,
}

# Inputs that are parameters (weights, bias, shapes, axes) rather than data, by operator.
PARAM_INPUTS: dict[str, tuple[int, ...]] = {
    "CONV_2D": (1, 2),
    "DEPTHWISE_CONV_2D": (1, 2),
    "FULLY_CONNECTED": (1, 2),
    "TRANSPOSE_CONV": (0, 1, 3),
    "PAD": (1,),
    "PADV2": (1, 2),
    "RESHAPE": (1,),
    "TRANSPOSE": (1,),
    "STRIDED_SLICE": (1, 2, 3),
    "SLICE": (1, 2),
    "MEAN": (1,),
    "SUM": (1,),
    "REDUCE_MAX": (1,),
    "REDUCE_MIN": (1,),
    "RESIZE_BILINEAR": (1,),
    "RESIZE_NEAREST_NEIGHBOR": (1,),
    "EXPAND_DIMS": (1,),
    "SPLIT": (0,),
    "PRELU": (1,),
}
# Of those, the ones that set an output's size: computed at run time they make it dynamic-sized.
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "TRANSPOSE_CONV": (0,),
    "PAD": (1,),
    "PADV2": (1,),
    "RESHAPE": (1,),
    "TRANSPOSE": (1,),
    "STRIDED_SLICE": (1, 2, 3),
    "SLICE": (1, 2),
    "MEAN": (1,),
    "SUM": (1,),
    "REDUCE_MAX": (1,),
    "REDUCE_MIN": (1,),
    "RESIZE_BILINEAR": (1,),
    "RESIZE_NEAREST_NEIGHBOR": (1,),
    "EXPAND_DIMS": (1,),
    "SPLIT": (0,),
}
NO_FUSED_ACTIVATION = frozenset({"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"})
SOFTMAX_MAX_ELEMENTS = 16000
QUANTIZED_TYPES = frozenset({"INT8", "UINT8"})
PARAM_TYPES = frozenset({"INT8", "UINT8", "INT32", "INT64"})
FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64"})


@dataclass(frozen=True)
class OperatorVerdict:
    """One operator: will the compiler map it to the Edge TPU, and if not, why."""

    index: int
    name: str
    edgetpu: bool
    reason: str
    detail: str = ""
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "index": self.index,
            "name": self.name,
            "edgetpu": self.edgetpu,
            "reason": self.reason,
            "detail": self.detail,
            "version": self.version,
        }


@dataclass(frozen=True)
class Preflight:
    """The predicted compiler verdict on a model, without the compiler."""

    model: str
    operators: list[OperatorVerdict]
    subgraphs: int
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    min_runtime_version: int = DEFAULT_RUNTIME

    @property
    def total(self) -> int:
        return len(self.operators)

    @property
    def mapped(self) -> int:
        return sum(op.edgetpu for op in self.operators)

    @property
    def mapped_fraction(self) -> float:
        return self.mapped / self.total if self.operators else 0.0

    @property
    def first_fallback(self) -> OperatorVerdict | None:
        """The first operator, in execution order, that runs on the CPU."""
        return next((op for op in self.operators if not op.edgetpu), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; `source`, `mapped_fraction`, `subgraphs` and `off_chip_bytes` are what the gate reads."""
        fallback = self.first_fallback
        return {
            "source": "preflight",
            "model": self.model,
            "mapped_fraction": self.mapped_fraction,
            "mapped": self.mapped,
            "total": self.total,
            "subgraphs": self.subgraphs,
            "off_chip_bytes": None,  # only the compiler knows
            "error": self.error,
            "first_fallback": fallback.to_dict() if fallback else None,
            "warnings": list(self.warnings),
            "min_runtime_version": self.min_runtime_version,
            "operators": [op.to_dict() for op in self.operators],
        }

    def table(self) -> str:
        """The compiler's "Operator / Count / Status" table for this prediction."""
        counts = Counter((op.name, op.reason) for op in self.operators)
        return format_table([OperatorRow(name, count, status) for (name, status), count in counts.items()])


@dataclass(frozen=True)
class Agreement:
    """How far a preflight's per-operator prediction is from what a compiler log counts."""

    score: float
    mismatched: int
    total: int
    by_operator: dict[str, tuple[int, int]]  # name -> (predicted on the TPU, logged on the TPU)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "score": self.score,
            "mismatched": self.mismatched,
            "total": self.total,
            "by_operator": {name: list(pair) for name, pair in self.by_operator.items()},
        }


# --- reading a .tflite --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _enum_names() -> tuple[dict[int, str], dict[int, str]]:
    """BuiltinOperator and TensorType codes -> names, from TensorFlow's schema bindings."""
    from ai_edge_litert import schema_py_generated as schema

    def names(enum: type) -> dict[int, str]:
        return {value: key for key, value in vars(enum).items() if not key.startswith("_") and isinstance(value, int)}

    return names(schema.BuiltinOperator), names(schema.TensorType)


def read_tflite(path: Path | str) -> Any:
    """The model as the TFLite schema's flatbuffer object API (ModelT); EdgeTPUError if it is not one."""
    # LiteRT ships the same generated bindings of TFLite's schema.fbs as TensorFlow does, and
    # imports in a tenth of a second instead of TensorFlow's five.
    from ai_edge_litert import schema_py_generated as schema

    path = Path(path)
    try:
        data = bytearray(path.read_bytes())
    except FileNotFoundError:
        raise EdgeTPUError(f"{path}: no such .tflite file") from None
    except OSError as error:
        raise EdgeTPUError(f"{path}: cannot read ({error.strerror or error})") from None
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise EdgeTPUError(f"{path}: not a TensorFlow Lite model (no TFL3 flatbuffer identifier)")
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
        _check_structure(model)
    except Exception as error:  # flatbuffers raises anything from IndexError to struct.error on bad bytes
        raise EdgeTPUError(f"{path}: truncated or corrupt .tflite ({type(error).__name__})") from None
    return model


def _check_structure(model: Any) -> None:
    """Every index a subgraph holds points at something: a truncated file fails here, not later."""
    buffers, codes = len(model.buffers or []), len(model.operatorCodes or [])
    for subgraph in model.subgraphs or []:
        tensors = subgraph.tensors or []
        for tensor in tensors:
            if not 0 <= tensor.buffer < max(buffers, 1):
                raise IndexError("tensor buffer out of range")
        for op in subgraph.operators or []:
            if not 0 <= op.opcodeIndex < codes:
                raise IndexError("operator code out of range")
            for index in [*_indices(op.inputs), *_indices(op.outputs)]:
                if not -1 <= index < len(tensors):
                    raise IndexError("operator tensor out of range")


class _Graph:
    """Read-only view of a model's main subgraph, as the rules need it."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.subgraph = model.subgraphs[0]
        self.tensors = self.subgraph.tensors or []
        self.inputs = set(_indices(self.subgraph.inputs))
        self.outputs = set(_indices(self.subgraph.outputs))
        self.consumed = {i for op in self.subgraph.operators or [] for i in _indices(op.inputs)}
        self._ops, self._types = _enum_names()

    def op_name(self, op: Any) -> tuple[str, int]:
        code = self.model.operatorCodes[op.opcodeIndex]
        # Codes above 127 live only in builtinCode; older files set only the deprecated field.
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        return self._ops.get(builtin, f"BUILTIN_{builtin}"), int(code.version or 1)

    def custom_code(self, op: Any) -> str:
        code = self.model.operatorCodes[op.opcodeIndex].customCode
        return code.decode() if isinstance(code, bytes) else str(code or "")

    def dtype(self, index: int) -> str:
        return self._types.get(int(self.tensors[index].type), "UNKNOWN")

    def shape(self, index: int) -> list[int]:
        shape = self.tensors[index].shape
        return [int(d) for d in shape] if shape is not None else []

    def signature(self, index: int) -> list[int] | None:
        signature = self.tensors[index].shapeSignature
        return [int(d) for d in signature] if signature is not None and len(signature) else None

    def name(self, index: int) -> str:
        name = self.tensors[index].name
        return name.decode() if isinstance(name, bytes) else str(name)

    def constant(self, index: int) -> bool:
        tensor = self.tensors[index]
        if tensor.isVariable or tensor.buffer <= 0:
            return False
        buffer = self.model.buffers[tensor.buffer]
        return (buffer.data is not None and len(buffer.data) > 0) or bool(getattr(buffer, "size", 0))

    def ints(self, index: int) -> list[int] | None:
        """A constant integer tensor's values, flattened; None when not constant or not integer."""
        import numpy as np

        dtypes = {"INT32": "<i4", "INT64": "<i8", "INT8": "i1", "UINT8": "u1", "INT16": "<i2"}
        if not self.constant(index) or self.dtype(index) not in dtypes:
            return None
        data = self.model.buffers[self.tensors[index].buffer].data
        return [int(v) for v in np.frombuffer(bytes(data), dtype=dtypes[self.dtype(index)])]

    def per_channel(self, index: int) -> bool:
        quantization = self.tensors[index].quantization
        return quantization is not None and quantization.scale is not None and len(quantization.scale) > 1


def _indices(values: Any) -> list[int]:
    """A flatbuffer int vector (None, list or numpy array) as ints; -1 marks an omitted optional input."""
    return [] if values is None else [int(v) for v in values]


def _present(values: Any) -> list[int]:
    return [i for i in _indices(values) if i >= 0]


# --- the rules ----------------------------------------------------------------------------------


def _too_many_dims(shape: list[int]) -> bool:
    """Only the three innermost dimensions may be larger than 1."""
    return any(d > 1 for d in shape[:-3])


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _check_operator(g: _Graph, op: Any, name: str, runtime: int) -> tuple[str, str] | None:
    """(compiler status, detail) when the operator stays on the CPU by itself; None when it maps."""
    inputs, outputs = _present(op.inputs), _present(op.outputs)
    raw_inputs = _indices(op.inputs)
    params = {raw_inputs[i] for i in PARAM_INPUTS.get(name, ()) if i < len(raw_inputs) and raw_inputs[i] >= 0}

    # The real compiler leaves the float->int8 QUANTIZE at a float model input on the CPU with this
    # status (kapibara_model, nrf20_mnist4_float_io), and still maps what follows.
    if name == "QUANTIZE" and inputs and g.dtype(inputs[0]) in FLOAT_TYPES:
        return UNSPECIFIED, "quantizes a float tensor; the model's float input is converted on the CPU"

    for index in [*inputs, *outputs]:
        allowed = PARAM_TYPES if index in params else QUANTIZED_TYPES
        if g.dtype(index) not in allowed:
            return (
                UNSUPPORTED_TYPE,
                f"tensor '{g.name(index)}' is {g.dtype(index)}; the Edge TPU computes on int8/uint8",
            )

    if name not in SUPPORTED:
        label = f"CUSTOM '{g.custom_code(op)}'" if name == "CUSTOM" else name
        return UNSUPPORTED_OP, f"{label} is not in Coral's supported-operations list"
    if SUPPORTED[name] > runtime:
        return UNSUPPORTED_OP, f"{name} needs Edge TPU runtime {SUPPORTED[name]}+ (min_runtime_version is {runtime})"

    for index in sorted(params):
        if not g.constant(index):
            return NOT_CONSTANT, f"'{g.name(index)}' is computed at run time"

    for index in [*inputs, *outputs]:
        if index not in params and not g.constant(index) and _too_many_dims(g.shape(index)):
            return UNSUPPORTED_RANK, f"tensor '{g.name(index)}' has shape {g.shape(index)}"

    detail = _documented_limitation(g, op, name, inputs, outputs, runtime)
    return (UNSPECIFIED, detail) if detail else None


def _documented_limitation(
    g: _Graph, op: Any, name: str, inputs: list[int], outputs: list[int], runtime: int
) -> str | None:
    """The "Known limitations" column of Coral's table, where a model can be checked against it."""
    options = op.builtinOptions
    activation = int(getattr(options, "fusedActivationFunction", 0) or 0)
    if name in NO_FUSED_ACTIVATION and activation:
        return f"{name} with a fused activation function"
    if name == "CONCATENATION":
        constants = [g.ints(i) for i in inputs if g.constant(i)]
        if constants and (len(inputs) != 2 or any(values is None or any(values) for values in constants)):
            return "a constant CONCATENATION input must be all zeros, with exactly 2 inputs"
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        w, h = getattr(options, "dilationWFactor", 1), getattr(options, "dilationHFactor", 1)
        if name == "DEPTHWISE_CONV_2D" and runtime <= 12 and (w, h) != (1, 1):
            return "dilated DEPTHWISE_CONV_2D needs Edge TPU runtime 13+"
        if w != h:
            return f"different dilation in x and y ({w}, {h})"
    if name == "FULLY_CONNECTED":
        if getattr(options, "weightsFormat", 0) != 0:
            return "only the default fully-connected weights format maps"
        if outputs and sum(d > 1 for d in g.shape(outputs[0])) > 1:
            return f"output {g.shape(outputs[0])} is not one-dimensional"
    if name == "SOFTMAX" and inputs:
        elements = 1
        for d in g.shape(inputs[0]):
            elements *= d
        if elements > SOFTMAX_MAX_ELEMENTS:
            return f"softmax over {elements} elements (at most {SOFTMAX_MAX_ELEMENTS})"
    if name == "STRIDED_SLICE" and len(inputs) >= 4:
        strides = g.ints(inputs[3]) or []
        if any(s != 1 for s in strides):
            return f"strides {strides} (only 1 maps)"
        if getattr(options, "ellipsisMask", 0) or getattr(options, "newAxisMask", 0):
            return "ellipsis or new-axis mask set"
    if name in ("PAD", "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "PACK", "SPLIT"):
        return _batch_limitation(g, op, name, inputs, runtime)
    if name == "PRELU" and len(inputs) >= 2 and sum(d > 1 for d in g.shape(inputs[1])) > 1:
        return "PRELU alpha must vary along the innermost dimension only"
    return None


def _batch_limitation(g: _Graph, op: Any, name: str, inputs: list[int], runtime: int) -> str | None:
    """No padding, reducing, packing or splitting along the batch dimension (and older runtimes' x/y-only rules)."""
    data = inputs[1] if name == "SPLIT" and len(inputs) > 1 else inputs[0]
    rank = len(g.shape(data))
    if name == "PACK":
        axis = _axis(int(getattr(op.builtinOptions, "axis", 0)), rank + 1)
        return "PACK along the batch dimension" if axis == 0 else None
    if name == "PAD":
        paddings = g.ints(inputs[1]) or []
        if paddings[:2] not in ([], [0, 0]):
            return "padding in the batch dimension"
        if runtime <= 12 and rank == 4 and paddings[6:8] not in ([], [0, 0]):
            return "padding in the channel dimension needs Edge TPU runtime 13+"
        return None
    axes = g.ints(inputs[0] if name == "SPLIT" else inputs[1]) or []
    axes = [_axis(a, rank) for a in axes]
    if rank >= 2 and 0 in axes:
        return f"{name} along the batch dimension"
    if name == "MEAN" and rank >= 3 and rank - 1 in axes:
        if runtime <= 12:
            return "MEAN along the channel dimension needs Edge TPU runtime 13+"
        if g.shape(data)[-1] % 4:
            return f"MEAN along a channel dimension of {g.shape(data)[-1]} (must be a multiple of 4)"
    return None


def _model_error(g: _Graph, ops: list[tuple[Any, str, int]]) -> tuple[str, str] | None:
    """(why the compiler stops before mapping anything, per-operator reason), or None."""
    for op, name, _ in ops:
        if name == "CUSTOM" and g.custom_code(op) == "edgetpu-custom-op":
            return "already compiled for the Edge TPU (it holds an edgetpu-custom-op)", NOT_PARSED
    for _, name, version in ops:
        known = COMPILER_MAX_VERSION.get(name)
        if known is not None and version > known:
            return (
                f"Didn't find op for builtin opcode '{name}' version '{version}': Edge TPU Compiler "
                f"{COMPILER_VERSION} reads {name} up to version {known} (a TensorFlow 2.5-era TFLite)",
                NOT_PARSED,
            )
    for op, name, _ in ops:
        raw = _indices(op.inputs)
        for position in SHAPE_INPUTS.get(name, ()):
            if position < len(raw) and raw[position] >= 0 and not g.constant(raw[position]):
                return (
                    f"{DYNAMIC_TENSORS} ({name} takes its shape from '{g.name(raw[position])}', computed at run time)",
                    COMPILATION_FAILED,
                )
    return None


def _warnings(g: _Graph, model: Any, ops: list[tuple[Any, str, int]]) -> list[str]:
    """Requirement issues the compiler tolerates but the user should know about."""
    notes = []
    dynamic = [i for i in sorted(g.inputs) if -1 in (g.signature(i) or [])]
    # Outputs are dynamic because inputs are; name them only when no input explains it.
    dynamic = dynamic or [i for i in sorted(g.outputs) if -1 in (g.signature(i) or [])]
    for index in dynamic:
        signature = g.signature(index)
        if signature is not None:
            kind = "input" if index in g.inputs else "output"
            notes.append(
                f"dynamic size: {kind} '{g.name(index)}' has shape_signature {signature}; Coral requires sizes "
                f"constant at compile time, so the compiler uses the static shape {g.shape(index)} and the Edge "
                "TPU runs only that size (set a fixed batch size of 1 before converting)"
            )
    for op, name, _ in ops:
        raw = _present(op.inputs)
        if name == "FULLY_CONNECTED" and len(raw) > 1 and g.per_channel(raw[1]):
            notes.append(
                f"FULLY_CONNECTED weights '{g.name(raw[1])}' are quantized per channel (the TFLite converter's "
                "default since TF 2.16); Edge TPU Compiler 16 predates per-channel fully-connected kernels, so "
                "the mapping is unverified: convert with "
                "converter._experimental_disable_per_channel_quantization_for_dense_layers = True"
            )
            break
    if len(model.subgraphs) > 1:
        notes.append(f"the model has {len(model.subgraphs)} subgraphs; only the main one is checked")
    return notes


def preflight_model(
    model: Any, name: str, *, min_runtime_version: int = DEFAULT_RUNTIME, multiple_subgraphs: bool = False
) -> Preflight:
    """Predict the compiler's verdict on a model read by read_tflite (pure: no file access)."""
    if not model.subgraphs or not model.subgraphs[0].operators:
        return Preflight(name, [], 0, error="the model has no operators", min_runtime_version=min_runtime_version)
    g = _Graph(model)
    ops = [(op, *g.op_name(op)) for op in g.subgraph.operators]
    verdicts, subgraphs = _map_operators(g, ops, min_runtime_version, multiple_subgraphs)
    problems = []
    fatal = _model_error(g, ops)
    if fatal:
        problems.append(fatal[0])
    if not any(v.edgetpu for v in verdicts):
        problems.append(_nothing_maps(g, verdicts))
    if fatal:
        # The compiler stops before its table; each operator keeps its own verdict as the detail,
        # so fixing the model-wide problem does not hide the next one.
        verdicts = [
            OperatorVerdict(v.index, v.name, False, fatal[1], "" if v.edgetpu else f"{v.reason}: {v.detail}", v.version)
            for v in verdicts
        ]
        subgraphs = 0
    error = "; ".join(problems) if problems else None
    return Preflight(name, verdicts, subgraphs, error, _warnings(g, model, ops), min_runtime_version)


def _map_operators(
    g: _Graph, ops: list[tuple[Any, str, int]], runtime: int, multiple_subgraphs: bool
) -> tuple[list[OperatorVerdict], int]:
    """Each operator's verdict in execution order, and the number of Edge TPU subgraphs they form."""
    verdicts: list[OperatorVerdict] = []
    cut, subgraphs, in_subgraph = False, 0, False
    for index, (op, op_name, version) in enumerate(ops):
        problem = _check_operator(g, op, op_name, runtime)
        if problem is None and (not cut or multiple_subgraphs):
            verdicts.append(OperatorVerdict(index, op_name, True, MAPPED, "", version))
            subgraphs += not in_subgraph
            in_subgraph = True
            continue
        reason, detail = problem or (ONE_SUBGRAPH, "follows an operator that runs on the CPU")
        verdicts.append(OperatorVerdict(index, op_name, False, reason, detail, version))
        # The float-boundary QUANTIZE/DEQUANTIZE run on the CPU around the Edge TPU subgraph without
        # splitting it (see the real logs); any other operator on the CPU ends the subgraph, and with
        # one subgraph allowed everything after it in execution order runs on the CPU too.
        if problem is not None and not _at_float_boundary(g, op, op_name):
            cut, in_subgraph = True, False
    return verdicts, subgraphs


def _nothing_maps(g: _Graph, verdicts: list[OperatorVerdict]) -> str:
    """Why no operator reaches the Edge TPU, in one line."""
    data_types = {g.dtype(i) for i in range(len(g.tensors)) if not g.constant(i)}
    if data_types and not data_types & QUANTIZED_TYPES:
        return (
            "Model not quantized: its operators compute on float tensors, so nothing maps to the Edge TPU "
            "(it needs full-integer int8/uint8 quantization)"
        )
    first = verdicts[0]
    return f"no operator maps to the Edge TPU: {first.name} #{first.index}: {first.reason}"


def _at_float_boundary(g: _Graph, op: Any, name: str) -> bool:
    """A QUANTIZE of a model input, or a DEQUANTIZE into a model output."""
    inputs, outputs = _present(op.inputs), _present(op.outputs)
    if name == "QUANTIZE":
        return bool(inputs) and inputs[0] in g.inputs
    if name == "DEQUANTIZE":
        return bool(outputs) and all(o in g.outputs and o not in g.consumed for o in outputs)
    return False


def preflight(
    path: Path | str, *, min_runtime_version: int = DEFAULT_RUNTIME, multiple_subgraphs: bool = False
) -> Preflight:
    """Predict, without the compiler, which operators of a .tflite the Edge TPU compiler maps."""
    path = Path(path)
    result = preflight_model(
        read_tflite(path), path.name, min_runtime_version=min_runtime_version, multiple_subgraphs=multiple_subgraphs
    )
    log.info("edgetpu preflight %s: %d/%d operators mapped", path.name, result.mapped, result.total)
    return result


def agreement(prediction: Preflight, report: CompilerReport) -> Agreement:
    """Per operator name, predicted vs logged Edge TPU counts; score = 1 - sum(|difference|) / operators."""
    if not report.rows:
        raise EdgeTPUError("the compiler report has no per-operator table to compare with")
    predicted: Counter[str] = Counter()
    for op in prediction.operators:
        predicted[op.name] += op.edgetpu
    logged = report.mapped_by_name()
    names = list(dict.fromkeys([op.name for op in prediction.operators] + list(logged)))
    by_operator = {name: (predicted.get(name, 0), logged.get(name, 0)) for name in names}
    mismatched = sum(abs(p - q) for p, q in by_operator.values())
    total = max(prediction.total, report.total or 0)
    return Agreement(1.0 - mismatched / total if total else 1.0, mismatched, total, by_operator)
