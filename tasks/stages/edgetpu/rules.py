"""What keeps an operator off the Edge TPU, as a table: each rule with its condition, its evidence and its fix.

A rule names the evidence it rests on: a line of Coral's documentation (the "Model requirements" and
"Supported operations" sections of https://coral.ai/docs/edgetpu/models-intro/, quoted from the copies
found, since the page itself could not be read here) or a line a real `edgetpu_compiler` wrote (a case
in ../shared/edgetpu-cases, or a public issue). A rule whose limit is real but undocumented (the
compiler refuses large tensors without saying where the limit lies) is `documented=False`: its
verdict is "not documented: may fall back", counted apart from both the mapped and the CPU operators.

Rules are tried in the order of RULES; the first that applies is the operator's own verdict. What the
operators that depend on it do is the partitioner's business (partition.py), not a rule's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import NamedTuple

from tasks.stages.edgetpu.graph import Graph, Operator

# The compiler's own per-operator statuses, as its .log and --show_operations print them.
MAPPED = "Mapped to Edge TPU"
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

# --- where the evidence comes from ----------------------------------------------------------------

CORAL_MODELS = "https://coral.ai/docs/edgetpu/models-intro/"
# Coral's supported-operations table, in the two copies the search found: Axis reproduces the current
# one for its ARTPEC-7 DLPU (an Edge TPU, compiled with edgetpu_compiler); a 2020 course note in
# dgist-datalab/Datalab_Intern quotes the earlier one, which also has the rows the Axis copy cuts off.
CORAL_TABLE = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"
AXIS = "developer.axis.com/computer-vision/on-device/system-on-chip/artpec-7"
AXIS_TABLE = f"{CORAL_TABLE} (as reproduced at {AXIS}/supported-ops/)"
AXIS_TIPS = f"{AXIS}/optimization-tips/ (the Edge TPU's model requirements)"
EARLIER_TABLE = (
    f"{CORAL_TABLE}, earlier version (as quoted in github.com/dgist-datalab/Datalab_Intern, "
    "Edge_TPU/convert_model_for_Edge_TPU.md)"
)
CORAL_ISSUES = "https://github.com/google-coral/edgetpu/issues/"


@dataclass(frozen=True)
class Evidence:
    """Where a rule comes from: a document or a compiler's output, and the line that says it."""

    source: str  # a URL, or "compiler log: <case>" for a case in ../shared/edgetpu-cases
    quote: str  # as found (a log's column padding collapsed to single spaces)
    note: str = ""  # what the quote shows here, when the line alone does not say

    def __str__(self) -> str:
        return f'{self.source}: "{self.quote}"' + (f" ({self.note})" if self.note else "")


def _log(case: str, line: str, note: str = "") -> Evidence:
    return Evidence(f"compiler log: {case}", line, note)


class Hit(NamedTuple):
    """A rule applies: what in the model breaks it, in the user's terms, and the fix when it depends on that."""

    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Context:
    """What a rule's check sees: the graph, the operator, and the compiler settings."""

    g: Graph
    op: Operator
    runtime: int

    @property
    def params(self) -> set[int]:
        """Inputs that are parameters (weights, bias, shapes, axes) rather than data."""
        return {t for p in PARAM_INPUTS.get(self.op.name, ()) if (t := self.op.input_at(p)) is not None}

    @property
    def data(self) -> list[int]:
        """The tensors the operator computes on: its non-parameter inputs and its outputs."""
        return [t for t in (*self.op.inputs, *self.op.outputs) if t not in self.params]


@dataclass(frozen=True)
class Rule:
    """One reason an operator does not map, as data: a row of the table in docs/ARCHITECTURE.md."""

    id: str
    operators: tuple[str, ...]  # () means every operator
    condition: str  # when it applies, in words
    status: str  # what the compiler prints for it
    requirement: str  # the requirement the model breaks, in the user's terms
    fix: str  # the usual fix; "{op}" is replaced by the operator's name
    evidence: tuple[Evidence, ...]
    check: Callable[[Context], Hit | None]
    documented: bool = True  # False: the compiler's limit is real but not documented -> "may fall back"

    def applies_to(self, name: str) -> bool:
        return not self.operators or name in self.operators


# --- which operators exist for the Edge TPU ---------------------------------------------------------

# Operators in Coral's supported-operations table (the copies above, plus the issues named), with the
# Edge TPU runtime each needs where the evidence says so. A runtime of None: the table lists it for
# every runtime the compiler targets, or the runtime column was not in the copy found.
SUPPORTED: dict[str, int | None] = {
    "ADD": None,
    "AVERAGE_POOL_2D": None,
    "CONCATENATION": None,
    "CONV_2D": None,
    "DEPTHWISE_CONV_2D": None,
    "EXPAND_DIMS": None,
    "FULLY_CONNECTED": None,
    "L2_NORMALIZATION": None,
    "LOGISTIC": None,
    "LSTM": None,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": None,
    "MAXIMUM": None,
    "MAX_POOL_2D": None,
    "MEAN": None,
    "MINIMUM": None,
    "MUL": None,
    "PACK": None,
    "PAD": None,
    "PRELU": None,
    "QUANTIZE": None,
    "REDUCE_MAX": None,
    "REDUCE_MIN": None,
    "RELU": None,
    "RELU6": None,
    "RELU_N1_TO_1": None,
    "RESHAPE": None,
    "RESIZE_BILINEAR": None,
    "RESIZE_NEAREST_NEIGHBOR": None,
    "SLICE": None,
    "SOFTMAX": None,
    "SPACE_TO_DEPTH": None,
    "SPLIT": None,
    "SQUEEZE": None,
    "STRIDED_SLICE": None,
    "SUB": None,
    "TANH": None,
    # "Compiler version 16 supports 'Transpose' operations" (a Coral maintainer, issue 193); the
    # default runtime of compiler 16 is 14.
    "TRANSPOSE": 14,
    "TRANSPOSE_CONV": None,  # "EdgeTPU Supported operations tabel says it support Conv2DTranspose" (issue 684)
}
# Operators the preflight has seen claimed for the Edge TPU but whose table row was not in any copy
# found: their fate is reported as not documented.
UNLISTED = frozenset({"RSQRT", "SQUARED_DIFFERENCE", "SUM"})

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
QUANTIZED_TYPES = frozenset({"INT8", "UINT8"})
PARAM_TYPES = frozenset({"INT8", "UINT8", "INT32", "INT64"})
FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64"})

# Size limits the compiler has but does not document, bounded by what real logs show (yolov8n_full_int_quant):
# the largest two-innermost-dimension block an operator was left to the compiler's own checks with
# (SOFTMAX and CONV_2D on [1, 4, 8400, 16]: "More than one subgraph is not supported", not a limit of
# their own), against the smallest it refused ([1, 144, 1600], RESHAPE: "unspecified limitation").
LARGE_ROW = 8400 * 16  # 134,400 values
# TRANSPOSE moves whole tensors: it mapped [1, 20, 20, 144] (57,600 elements) and refused 230,400 and more.
LARGE_TRANSPOSE = 20 * 20 * 144
# RESIZE_*: "Depending on input/output size, this operation may not be mapped ... to avoid loss in
# precision". A nearest-neighbor upscale by whole factors loses none, and real logs map it
# (retinanet, yolov8n); for bilinear the largest output seen mapped is [1, 128, 128, 32] (issue 31,
# where the same layer at 512x512 was refused).
BILINEAR_SEEN_MAPPED = 128 * 128 * 32
SOFTMAX_MAX_ELEMENTS = 16000


# --- the checks -------------------------------------------------------------------------------------


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _float_input(c: Context) -> Hit | None:
    source = c.op.input_at(0)
    if c.op.name == "QUANTIZE" and source is not None and c.g.dtype(source) in FLOAT_TYPES:
        return Hit(f"quantizes the float tensor {c.g.describe(source)}")
    return None


def _data_type(c: Context) -> Hit | None:
    for index in (*c.op.inputs, *c.op.outputs):
        allowed = PARAM_TYPES if index in c.params else QUANTIZED_TYPES
        if c.g.dtype(index) not in allowed:
            fix = ""
            if c.op.name == "DEQUANTIZE" and all(o in c.g.outputs for o in c.op.outputs):
                fix = "float output: use quantize.io_dtype int8/uint8 (converter.inference_output_type)"
            return Hit(f"tensor {c.g.describe(index)} is not int8/uint8", fix)
    return None


def _not_in_table(c: Context) -> Hit | None:
    if c.op.name in SUPPORTED or c.op.name in UNLISTED:
        return None
    label = c.op.label.split(" ", 1)[1]
    return Hit(f"{label} is not in Coral's supported-operations table")


def _unlisted(c: Context) -> Hit | None:
    return Hit(f"{c.op.name}: no row of Coral's table found for it") if c.op.name in UNLISTED else None


def _runtime(c: Context) -> Hit | None:
    needed = SUPPORTED.get(c.op.name)
    if needed is not None and needed > c.runtime:
        return Hit(f"{c.op.name} needs Edge TPU runtime {needed}+ (min_runtime_version is {c.runtime})")
    return None


def _not_constant(c: Context) -> Hit | None:
    for index in sorted(c.params):
        if not c.g.constant(index):
            return Hit(f"parameter {c.g.describe(index)} is computed at run time")
    return None


def _rank(c: Context) -> Hit | None:
    for index in c.data:
        shape = c.g.shape(index)
        if not c.g.constant(index) and any(d > 1 for d in shape[:-3]):
            big = sum(d > 1 for d in shape)
            return Hit(
                f"tensor {c.g.describe(index)} has {big} dimensions larger than 1",
                f"rank-{len(shape)} tensor: reshape so at most 3 dimensions exceed 1 (only the 3 innermost may)",
            )
    return None


def _fused_activation(c: Context) -> Hit | None:
    if c.op.option("fusedActivationFunction"):
        return Hit(f"{c.op.name} has a fused activation function")
    return None


def _concat_constant(c: Context) -> Hit | None:
    constants = [i for i in c.op.inputs if c.g.constant(i)]
    if not constants:
        return None
    zeros = all((values := c.g.ints(i)) is not None and not any(values) for i in constants)
    if len(c.op.inputs) != 2 or not zeros:
        return Hit(f"{len(c.op.inputs)} inputs, {len(constants)} of them constant, not a single all-zero block")
    return None


def _fc_format(c: Context) -> Hit | None:
    return Hit("weights in a non-default format") if c.op.option("weightsFormat") else None


def _fc_output(c: Context) -> Hit | None:
    out = c.op.outputs[0] if c.op.outputs else None
    if out is not None and sum(d > 1 for d in c.g.shape(out)) > 1:
        return Hit(f"output {c.g.describe(out)} is not one-dimensional")
    return None


def _softmax(c: Context) -> Hit | None:
    source = c.op.input_at(0)
    if source is not None and c.g.shape(source) and c.g.shape(source)[-1] > SOFTMAX_MAX_ELEMENTS:
        return Hit(f"softmax over {c.g.shape(source)[-1]} elements ({c.g.describe(source)})")
    return None


def _strided_slice(c: Context) -> Hit | None:
    strides_tensor = c.op.input_at(3)
    strides = (c.g.ints(strides_tensor) or []) if strides_tensor is not None else []
    if any(s != 1 for s in strides):
        return Hit(f"strides {strides}")
    if c.op.option("ellipsisMask") or c.op.option("newAxisMask"):
        return Hit("an ellipsis or new-axis mask is set")
    return None


def _reduced_axes(c: Context) -> tuple[list[int], int] | None:
    """(axes, rank of the data) of a PAD/MEAN/REDUCE/SPLIT, or None when they cannot be read."""
    data = c.op.input_at(1 if c.op.name == "SPLIT" else 0)
    axes_tensor = c.op.input_at(0 if c.op.name == "SPLIT" else 1)
    if data is None or axes_tensor is None:
        return None
    values = c.g.ints(axes_tensor)
    if values is None:
        return None
    rank = len(c.g.shape(data))
    return [_axis(a, rank) for a in values], rank


def _batch(c: Context) -> Hit | None:
    source = c.op.input_at(0)
    if source is None:
        return None
    if c.op.name == "PACK":
        axis = _axis(c.op.option("axis"), len(c.g.shape(source)) + 1)
        return Hit(f"packs along the batch dimension of {c.g.describe(source)}") if axis == 0 else None
    if c.op.name == "PAD":
        paddings_tensor = c.op.input_at(1)
        paddings = (c.g.ints(paddings_tensor) or []) if paddings_tensor is not None else []
        return Hit(f"pads the batch dimension of {c.g.describe(source)}") if any(paddings[:2]) else None
    read = _reduced_axes(c)
    if read is not None and read[1] >= 2 and 0 in read[0]:
        return Hit(f"{c.op.name} along the batch dimension (axes {read[0]})")
    return None


def _mean_channels(c: Context) -> Hit | None:
    read = _reduced_axes(c)
    source = c.op.input_at(0)
    if read is None or source is None:
        return None
    axes, rank = read
    channels = c.g.shape(source)[-1] if rank else 0
    if rank >= 3 and rank - 1 in axes and channels % 4:
        return Hit(f"reduces a channel (z) dimension of {channels}, not a multiple of 4")
    return None


def _prelu(c: Context) -> Hit | None:
    alpha = c.op.input_at(1)
    if alpha is not None and sum(d > 1 for d in c.g.shape(alpha)) > 1:
        return Hit(f"alpha {c.g.describe(alpha)} varies along more than the innermost dimension")
    return None


def _old_runtime_xy_only(c: Context) -> Hit | None:
    if c.runtime > 12:
        return None
    source = c.op.input_at(0)
    if source is None or len(c.g.shape(source)) != 4:
        return None
    if c.op.name == "PAD":
        paddings_tensor = c.op.input_at(1)
        paddings = (c.g.ints(paddings_tensor) or []) if paddings_tensor is not None else []
        return Hit("pads the channel dimension") if any(paddings[6:8]) else None
    read = _reduced_axes(c)
    return Hit("reduces the channel dimension") if read is not None and 3 in read[0] else None


def _split_batch(c: Context) -> Hit | None:
    read = _reduced_axes(c)
    return Hit(f"splits along the batch dimension (axis {read[0]})") if read and read[1] >= 2 and 0 in read[0] else None


def _squeeze_relayout(c: Context) -> Hit | None:
    source = c.op.input_at(0)
    if source is None:
        return None
    shape = c.g.shape(source)
    first_big = next((i for i, d in enumerate(shape) if d > 1), len(shape))
    squeezed = [_axis(a, len(shape)) for a in getattr(c.op.options, "squeezeDims", None) or []]
    squeezed = squeezed or [i for i, d in enumerate(shape) if d == 1]
    if any(axis > first_big for axis in squeezed):
        return Hit(f"removes a size-1 dimension after a larger one in {c.g.describe(source)} (a relayout)")
    return None


def _resize_size(c: Context) -> Hit | None:
    out = c.op.outputs[0] if c.op.outputs else None
    if out is None:
        return None
    source = c.op.input_at(0)
    if c.op.name == "RESIZE_NEAREST_NEIGHBOR" and source is not None:
        before, after = c.g.shape(source), c.g.shape(out)
        if len(before) == len(after) == 4 and any(b and a % b for a, b in zip(after[1:3], before[1:3], strict=True)):
            return Hit(f"{c.g.describe(source)} -> {c.g.describe(out)} is not an integer upscale")
        return None
    if prod(c.g.shape(out)[-3:]) > BILINEAR_SEEN_MAPPED:
        return Hit(f"output {c.g.describe(out)} is larger than any seen mapped ({BILINEAR_SEEN_MAPPED:,} values)")
    return None


def _large_row(c: Context) -> Hit | None:
    for index in c.data:
        if c.g.constant(index):
            continue
        row = prod(c.g.shape(index)[-2:])
        if row > LARGE_ROW:
            return Hit(f"tensor {c.g.describe(index)} holds {row:,} values in its two innermost dimensions")
    return None


def _large_transpose(c: Context) -> Hit | None:
    for index in c.data:
        size = prod(c.g.shape(index)[-3:])
        if size > LARGE_TRANSPOSE:
            return Hit(f"transposes {c.g.describe(index)} ({size:,} values)")
    return None


# --- the table ----------------------------------------------------------------------------------------

_UNSPECIFIED_LOG = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
_YOLO = "yolov8n_full_int_quant"

RULES: tuple[Rule, ...] = (
    Rule(
        id="float-input",
        operators=("QUANTIZE",),
        condition="QUANTIZE of a float tensor (a float model input)",
        status=UNSPECIFIED,
        requirement="the Edge TPU computes on 8-bit tensors, so a float input is quantized on the CPU "
        "before the Edge TPU subgraph starts (what follows still maps)",
        fix="float input: use quantize.io_dtype int8/uint8 (converter.inference_input_type = tf.int8 or tf.uint8)",
        evidence=(
            _log("kapibara_model", f"QUANTIZE 1 {_UNSPECIFIED_LOG}"),
            _log("nrf20_mnist4_float_io", f"QUANTIZE 1 {_UNSPECIFIED_LOG}"),
        ),
        check=_float_input,
    ),
    Rule(
        id="data-type",
        operators=(),
        condition="a data tensor that is not int8/uint8 (parameters may also be int32/int64)",
        status=UNSUPPORTED_TYPE,
        requirement="the model must be fully 8-bit quantized",
        fix="quantize the whole model to int8 (full-integer quantization with a representative dataset, "
        "TFLITE_BUILTINS_INT8 only)",
        evidence=(
            Evidence(
                CORAL_MODELS,
                "It supports only TensorFlow Lite models that are fully 8-bit quantized and then compiled "
                "specifically for the Edge TPU.",
            ),
            Evidence(
                AXIS_TIPS,
                "The model needs to be int8/uint8 quantized. Operators that take in other types are not supported",
            ),
            _log("cifar10_float_unsupported_dtype", f"CONV_2D 2 {UNSUPPORTED_TYPE}"),
            _log("kapibara_model", f"DEQUANTIZE 1 {UNSUPPORTED_TYPE}"),
        ),
        check=_data_type,
    ),
    Rule(
        id="not-in-table",
        operators=(),
        condition="an operator Coral's supported-operations table does not list",
        status=UNSUPPORTED_OP,
        requirement="only the operators in Coral's supported-operations table map to the Edge TPU",
        fix="replace {op} with operators the table lists, or end the model before it and run it on the CPU",
        evidence=(
            Evidence(
                CORAL_MODELS,
                "the Edge TPU supports a specific set of neural network operations and architectures",
            ),
            Evidence(
                "github.com/dbro/frigate-detector-edgetpu-yolo9 README (an edgetpu_compiler 16 log)",
                "GATHER 6 Operation not supported",
            ),
        ),
        check=_not_in_table,
    ),
    Rule(
        id="unlisted-operator",
        operators=tuple(sorted(UNLISTED)),
        condition="an operator claimed for the Edge TPU whose table row was not found",
        status=UNSPECIFIED,
        requirement="only the operators in Coral's supported-operations table map to the Edge TPU",
        fix="check {op} against Coral's current table, or replace it with listed operators",
        evidence=(
            Evidence(
                CORAL_MODELS,
                "the Edge TPU supports a specific set of neural network operations and architectures",
                "no row for these operators was in the copies of the table found",
            ),
        ),
        check=_unlisted,
        documented=False,
    ),
    Rule(
        id="runtime-version",
        operators=tuple(name for name, runtime in SUPPORTED.items() if runtime is not None),
        condition="an operator that needs a newer Edge TPU runtime than min_runtime_version",
        status=UNSUPPORTED_OP,
        requirement="an operator added in a later Edge TPU runtime maps only when compiling for that runtime",
        fix="raise edgetpu.min_runtime_version (-m) to the runtime {op} needs, or replace it",
        evidence=(
            Evidence(f"{CORAL_ISSUES}193", "Compiler version 16 supports 'Transpose' operations."),
            Evidence(f"{CORAL_ISSUES}242 (Edge TPU Compiler 14.1)", "TRANSPOSE 42 Operation not supported"),
        ),
        check=_runtime,
        documented=False,
    ),
    Rule(
        id="parameter-not-constant",
        operators=tuple(PARAM_INPUTS),
        condition="a weight, bias, shape or axis input computed at run time",
        status=NOT_CONSTANT,
        requirement="model parameters (weights, bias) must be constant at compile time",
        fix="make {op}'s weights constants of the model (not computed by other operators)",
        evidence=(Evidence(f"{CORAL_ISSUES}25", f"FULLY_CONNECTED 1 {NOT_CONSTANT}"),),
        check=_not_constant,
    ),
    Rule(
        id="rank",
        operators=(),
        condition="a data tensor with a dimension larger than 1 outside its 3 innermost",
        status=UNSUPPORTED_RANK,
        requirement="tensors are 1-, 2- or 3-dimensional: only the 3 innermost dimensions may exceed 1",
        fix="reshape so at most 3 dimensions exceed 1",
        evidence=(
            Evidence(
                AXIS_TIPS,
                "All tensors must be 1-, 2-, or 3-dimensional. If a tensor has more than 3 dimensions, only the "
                "innermost 3 dimensions may have a size greater than 1.",
            ),
            Evidence(
                "https://github.com/maxbbraun/thermal-face/issues/2 (Edge TPU Compiler 14.1)",
                f"RESHAPE 12 {UNSUPPORTED_RANK}",
            ),
        ),
        check=_rank,
    ),
    Rule(
        id="fused-activation",
        operators=("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"),
        condition="a fused activation function",
        status=UNSPECIFIED,
        requirement="pooling and concatenation take no fused activation function",
        fix="apply the activation as its own layer after {op}",
        evidence=(
            Evidence(AXIS_TABLE, "AveragePool2d | No fused activation function."),
            Evidence(AXIS_TABLE, "MaxPool2d | No fused activation function."),
            Evidence(AXIS_TABLE, "Concatenation | No fused activation function."),
        ),
        check=_fused_activation,
    ),
    Rule(
        id="concat-constant",
        operators=("CONCATENATION",),
        condition="a constant input that is not the second of two inputs and all zeros",
        status=UNSPECIFIED,
        requirement="a constant CONCATENATION input must be a zero block, with exactly 2 inputs",
        fix="concatenate only computed tensors (pad with PAD instead of a constant block)",
        evidence=(
            Evidence(
                AXIS_TABLE,
                "If any input is a compile-time constant tensor, there must be only 2 inputs, and this constant "
                "tensor must be all zeros (effectively, a zero-padding op).",
            ),
        ),
        check=_concat_constant,
    ),
    Rule(
        id="fc-weights-format",
        operators=("FULLY_CONNECTED",),
        condition="weights in a non-default format",
        status=UNSPECIFIED,
        requirement="fully-connected weights must use the default format",
        fix="convert with the default fully-connected weights format",
        evidence=(Evidence(AXIS_TABLE, "Only the default format is supported for fully-connected weights."),),
        check=_fc_format,
    ),
    Rule(
        id="fc-output-1d",
        operators=("FULLY_CONNECTED",),
        condition="an output with more than one dimension larger than 1",
        status=UNSPECIFIED,
        requirement="a fully-connected output tensor is one-dimensional",
        fix="flatten the input to [1, N] before the Dense layer, or use a 1x1 CONV_2D",
        evidence=(
            Evidence(AXIS_TABLE, "Output tensor is one-dimensional."),
            Evidence(
                f"{CORAL_ISSUES}27 (Edge TPU Compiler 2.0)",
                "FULLY_CONNECTED 1 For example, a fully-connected or softmax layer with 2D output",
            ),
        ),
        check=_fc_output,
    ),
    Rule(
        id="softmax-size",
        operators=("SOFTMAX",),
        condition=f"a softmax axis (innermost dimension) longer than {SOFTMAX_MAX_ELEMENTS:,}",
        status=UNSPECIFIED,
        requirement=f"softmax over at most {SOFTMAX_MAX_ELEMENTS:,} elements",
        fix="split the classes into groups of at most 16,000, or run the softmax on the CPU",
        evidence=(
            Evidence(EARLIER_TABLE, "Softmax | Supports only 1D input tensor with a max of 16,000 elements."),
            # Softmax over several rows maps: the limit is per row, not the whole tensor.
            _log("kapibara_slim", f"SOFTMAX 1 {MAPPED}", "its input is [1, 4420, 2]"),
        ),
        check=_softmax,
    ),
    Rule(
        id="strided-slice",
        operators=("STRIDED_SLICE",),
        condition="a stride other than 1, or an ellipsis or new-axis mask",
        status=UNSPECIFIED,
        requirement="STRIDED_SLICE maps only as a plain slice: strides 1, no ellipsis or new-axis mask",
        fix="slice with stride 1 (SLICE, or RESHAPE for new axes)",
        evidence=(
            Evidence(
                EARLIER_TABLE,
                "StridedSlice | Supported only when all strides are equal to 1 (that is, effectively a Stride op), "
                "and with ellipsis-axis-mask == 0, and new-axis-max == 0.",
            ),
        ),
        check=_strided_slice,
    ),
    Rule(
        id="batch-dimension",
        operators=("PAD", "MEAN", "REDUCE_MAX", "REDUCE_MIN", "PACK"),
        condition="padding, reducing or packing along the batch dimension",
        status=UNSPECIFIED,
        requirement="no padding, reduction or packing in the batch dimension",
        fix="keep the batch dimension out of {op} (reshape so the axis is an inner one)",
        evidence=(
            Evidence(AXIS_TABLE, "Pad | No padding in batch dimension."),
            Evidence(AXIS_TABLE, "Mean | No reduction in batch dimension."),
            Evidence(AXIS_TABLE, "ReduceMax | Cannot operate on the batch dimension."),
            Evidence(AXIS_TABLE, "ReduceMin | Cannot operate on the batch dimension."),
            Evidence(AXIS_TABLE, "Pack | No packing in batch dimension."),
        ),
        check=_batch,
    ),
    Rule(
        id="mean-channels",
        operators=("MEAN",),
        condition="a reduction over the channel (z) dimension when it is not a multiple of 4",
        status=UNSPECIFIED,
        requirement="a z-reduction needs a z-dimension that is a multiple of 4",
        fix="pad the channels to a multiple of 4, or reduce over x/y only",
        evidence=(Evidence(AXIS_TABLE, "If a z-reduction, the z-dimension must be multiple of 4."),),
        check=_mean_channels,
    ),
    Rule(
        id="prelu-alpha",
        operators=("PRELU",),
        condition="an alpha that varies along more than the innermost dimension",
        status=UNSPECIFIED,
        requirement="PReLU alpha must be 1-dimensional",
        fix="use Keras PReLU(shared_axes=[1, 2]) so each channel has one alpha",
        evidence=(
            Evidence(
                AXIS_TABLE,
                "PReLU | Alpha must be 1-dimensional (only the innermost dimension can be >1 size). If using Keras "
                "PReLU with 4D input (batch, height, width, channels), then shared_axes must be [1,2]",
            ),
        ),
        check=_prelu,
    ),
    Rule(
        id="xy-only-before-runtime-13",
        operators=("PAD", "MEAN"),
        condition="padding or reducing the channel dimension with min_runtime_version 12 or older",
        status=UNSPECIFIED,
        requirement="the earlier table allows padding and reduction along x and y only",
        fix="compile for runtime 13 or newer (edgetpu.min_runtime_version), or keep {op} to x/y",
        evidence=(
            Evidence(EARLIER_TABLE, "Mean | Supports reduction along x- and/or y-dimensions only."),
            Evidence(EARLIER_TABLE, "Pad | Supports padding along x- and/or y-dimensions only."),
        ),
        check=_old_runtime_xy_only,
        documented=False,  # which runtimes the earlier table describes is not stated
    ),
    Rule(
        id="split-batch",
        operators=("SPLIT",),
        condition="splitting along the batch dimension",
        status=UNSPECIFIED,
        requirement="no splitting in the batch dimension, if SPLIT is limited like PAD, MEAN and PACK "
        "(its row in the current table was not found)",
        fix="split along an inner axis",
        evidence=(
            Evidence(AXIS_TABLE, "Pack | No packing in batch dimension.", "the neighbouring rows limit the batch"),
        ),
        check=_split_batch,
        documented=False,
    ),
    Rule(
        id="squeeze-relayout",
        operators=("SQUEEZE",),
        condition="removing a size-1 dimension that follows a larger one",
        status=UNSPECIFIED,
        requirement="the earlier table allows SQUEEZE only of leading 1s (no relayout)",
        fix="squeeze only leading size-1 dimensions, or reshape earlier",
        evidence=(
            Evidence(
                EARLIER_TABLE,
                "Squeeze | Supported only when input tensor dimensions that have leading 1s (that is, no relayout "
                "needed). For example input tensor with [y][x][z] = 1,1,10 or 1,5,10 is ok. But [y][x][z] = 5,1,10 "
                "is not supported.",
            ),
        ),
        check=_squeeze_relayout,
        documented=False,  # the current table's row was not found
    ),
    Rule(
        id="resize-size",
        operators=("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"),
        condition="a bilinear output larger than any seen mapped, or a nearest-neighbor resize by a non-integer factor",
        status=UNSPECIFIED,
        requirement="depending on input/output size, a resize may stay on the CPU to avoid loss in precision",
        fix="upscale by an integer factor on a smaller tensor, or resize on the CPU after the model",
        evidence=(
            Evidence(
                AXIS_TABLE,
                "ResizeBilinear | Input/output is a 3-dimensional tensor. Depending on input/output size, this "
                "operation might not be mapped to the Edge TPU",
            ),
            Evidence(
                f"{CORAL_ISSUES}31",
                "Compiler rejects mapping the ops to edgetpu if loss of precision is higher than threshold.",
            ),
            Evidence(
                f"{CORAL_ISSUES}31",
                "When i change the Input Shape to smaller size, for example 128x128x3, the ResizeBilinear Operator "
                "mapps perfectly to edgetpu",
            ),
            _log(_YOLO, f"RESIZE_NEAREST_NEIGHBOR 2 {MAPPED}", "2x upscales up to [1, 80, 80, 128]"),
        ),
        check=_resize_size,
        documented=False,
    ),
    Rule(
        id="large-transpose",
        operators=("TRANSPOSE",),
        condition=f"a tensor of more than {LARGE_TRANSPOSE:,} values",
        status=UNSPECIFIED,
        requirement="large activations may not fit the Edge TPU's memory (no documented limit)",
        fix="keep the channels-last layout so no TRANSPOSE is needed, or transpose smaller blocks",
        evidence=(
            _log(_YOLO, f"TRANSPOSE 3 {_UNSPECIFIED_LOG}"),
            _log(_YOLO, f"TRANSPOSE 1 {MAPPED}", "the one of [1, 20, 20, 144]; the others move 230,400 values or more"),
            Evidence(
                f"{CORAL_ISSUES}433",
                "Can't compile due to TRANSPOSE \"Operation is otherwise supported, but not mapped due to some "
                'unspecified limitation"',
            ),
        ),
        check=_large_transpose,
        documented=False,
    ),
    Rule(
        id="large-tensor",
        operators=(),
        condition=f"a tensor whose two innermost dimensions hold more than {LARGE_ROW:,} values",
        status=UNSPECIFIED,
        requirement="large activations may not fit the Edge TPU's memory (no documented limit)",
        fix="split the tensor (per detection level or channel group), or end the model before it",
        evidence=(
            Evidence(AXIS_TABLE, "Reshape | Certain reshapes might not be mapped for large tensor sizes."),
            Evidence(
                f"{CORAL_ISSUES}356",
                "It fails to create a sub graph if any activation doesn't fit on the memory. In this case reshape "
                "ops could be too large to fit on memory.",
            ),
            _log(_YOLO, f"RESHAPE 3 {_UNSPECIFIED_LOG}", "the smallest writes [1, 144, 1600]"),
            _log(_YOLO, f"CONCATENATION 2 {_UNSPECIFIED_LOG}"),
            _log(_YOLO, f"SOFTMAX 1 {ONE_SUBGRAPH}", "on [1, 4, 8400, 16]: cut off, but no limit of its own"),
        ),
        check=_large_row,
        documented=False,
    ),
)
RULES_BY_ID = {rule.id: rule for rule in RULES}


@dataclass(frozen=True)
class Finding:
    """Why one operator stays off the Edge TPU by itself."""

    rule: Rule
    detail: str
    fix: str

    @property
    def uncertain(self) -> bool:
        return not self.rule.documented


def check_operator(g: Graph, op: Operator, runtime: int) -> Finding | None:
    """The first rule an operator breaks, or None when it can map by itself."""
    context = Context(g, op, runtime)
    for rule in RULES:
        if not rule.applies_to(op.name):
            continue
        hit = rule.check(context)
        if hit is not None:
            return Finding(rule, hit.detail, (hit.fix or rule.fix).replace("{op}", op.name))
    return None


# --- what stops the compiler before it maps anything --------------------------------------------------

# Highest operator version the compiler's built-in TFLite (TF 2.5 era) registers: the last version
# tensorflow/lite/tools/versioning/runtime_version.cc dates at 2.5.0 or earlier. A newer version
# stops the compiler before it maps anything ("Didn't find op for builtin opcode 'CONV_2D' version
# '6'", "... 'QUANTIZE' version '3'" in google-coral/edgetpu issues).
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
MODEL_EVIDENCE = {
    "already-compiled": Evidence(
        f"{CORAL_ISSUES}886", "RuntimeError: Encountered unresolved custom op: edgetpu-custom-op."
    ),
    "operator-version": Evidence(
        f"{CORAL_ISSUES}147", "ERROR: Didn't find op for builtin opcode 'TRANSPOSE_CONV' version '3'"
    ),
    "dynamic-size": Evidence(f"{CORAL_ISSUES}829", f"ERROR: {DYNAMIC_TENSORS}."),
}


def model_error(g: Graph) -> tuple[str, str] | None:
    """(why the compiler stops before mapping anything, the status every operator gets), or None."""
    for op in g.operators:
        if op.name == "CUSTOM" and op.custom_code == "edgetpu-custom-op":
            return "already compiled for the Edge TPU (it holds an edgetpu-custom-op)", NOT_PARSED
    for op in g.operators:
        known = COMPILER_MAX_VERSION.get(op.name)
        if known is not None and op.version > known:
            return (
                f"Didn't find op for builtin opcode '{op.name}' version '{op.version}': Edge TPU Compiler "
                f"{COMPILER_VERSION} reads {op.name} up to version {known} (a TensorFlow 2.5-era TFLite)",
                NOT_PARSED,
            )
    for op in g.operators:
        for position in SHAPE_INPUTS.get(op.name, ()):
            tensor = op.input_at(position)
            if tensor is not None and not g.constant(tensor):
                return (
                    f"{DYNAMIC_TENSORS} ({op.name} takes its shape from '{g.name(tensor)}', computed at run time)",
                    COMPILATION_FAILED,
                )
    return None
