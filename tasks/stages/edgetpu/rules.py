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
# The current table's operator names, as a 2024 post lists them with a footnote to CORAL_TABLE
# ("More Coral", FRC Vision Research Part 1b, 2024-09-04; it also links github.com/dragynfruit/edged).
CURRENT_LIST = f"{CORAL_TABLE} (its operator list, as quoted in the 2024 post 'More Coral', FRC Vision Research 1b)"
GITHUB = "https://github.com/"


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
        positions = PARAM_INPUTS.get(self.op.name, ())
        if self.op.name == "FULLY_CONNECTED" and _constant_first_operand(self.g, self.op):
            positions = (0, 2)  # the constant first operand plays the weights
        return {t for p in positions if (t := self.op.input_at(p)) is not None}

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
    # Rsqrt, Squared-difference and Sum are rows of Coral's current table (CURRENT_LIST): the runtime
    # column was not in the copy found.
    "RSQRT": None,
    "SLICE": None,
    "SOFTMAX": None,
    "SPACE_TO_DEPTH": None,
    "SPLIT": None,
    "SQUARED_DIFFERENCE": None,
    "SQUEEZE": None,
    "STRIDED_SLICE": None,
    "SUB": None,
    "SUM": None,
    "TANH": None,
    # "Compiler version 16 supports 'Transpose' operations" (a Coral maintainer, issue 193); the
    # default runtime of compiler 16 is 14.
    "TRANSPOSE": 14,
    "TRANSPOSE_CONV": None,  # "EdgeTPU Supported operations tabel says it support Conv2DTranspose" (issue 684)
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
QUANTIZED_TYPES = frozenset({"INT8", "UINT8"})
PARAM_TYPES = frozenset({"INT8", "UINT8", "INT32", "INT64"})
FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64"})

# Size limits the compiler has but does not document, bounded by what real logs show: the largest
# two-innermost-dimension block seen mapped, an SSD's CONCATENATION and LOGISTIC over [1, 1917, 91]
# (SSD_LOG; before it, yolov8n_full_int_quant's SOFTMAX and CONV_2D on [1, 4, 8400, 16], 134,400),
# against the smallest refused, yolov8n's RESHAPE to [1, 144, 1600] ("unspecified limitation").
LARGE_ROW = 1917 * 91  # 174,447 values
# RESHAPE: "Certain reshapes might not be mapped for large tensor sizes." The limit is on the whole
# tensor, not its innermost block (a YOLOv5 head's [1, 6400, 3, 85] has a 255-value row). The largest
# seen mapped is a YOLOv5n head's [1, 40, 40, 255] -> [1, 1600, 3, 85] (YOLOV5N_LOG: 3 of its 6
# RESHAPEs mapped, the 20x20 and 40x40 levels'; the 80x80 level's 1,632,000 values were refused); the
# SSD's [1, 1083, 91] and TCN_LOG's [1, 94400] are smaller. Between 408,000 and 1,632,000 no log decides.
LARGE_RESHAPE = 40 * 40 * 255  # 408,000 values
# TRANSPOSE moves whole tensors: it mapped [1, 20, 20, 144] (57,600 elements) and refused 230,400 and more.
LARGE_TRANSPOSE = 20 * 20 * 144
# RESIZE_*: "Depending on input/output size, this operation may not be mapped ... to avoid loss in
# precision". A nearest-neighbor upscale by whole factors loses none, and real logs map it
# (retinanet, yolov8n); for bilinear the largest output seen mapped is [1, 128, 128, 32] (issue 31,
# where the same layer at 512x512 was refused).
BILINEAR_SEEN_MAPPED = 128 * 128 * 32
SOFTMAX_MAX_ELEMENTS = 16000


# --- the checks -------------------------------------------------------------------------------------


def _constant_first_operand(g: Graph, op: Operator) -> bool:
    """A FULLY_CONNECTED whose constant operand is its first input and whose second is computed.

    FULLY_CONNECTED(A, B) = A x B^T: with A [M, K] constant and B [N, K] computed, A is the weights and
    each row of B an input vector, and the compiler maps it (R-e-d-a-X/EdgeTPU-and-NCS's random-forest
    GEMMs: A [M, 16] times x [256, 16] into [M, 256], 257 of 257 mapped).
    """
    first, second = op.input_at(0), op.input_at(1)
    return first is not None and second is not None and g.constant(first) and not g.constant(second)


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
    if c.op.name in SUPPORTED:
        return None
    label = c.op.label.split(" ", 1)[1]
    return Hit(f"{label} is not in Coral's supported-operations table")


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
    if _constant_first_operand(c.g, c.op):  # its output is [weights' rows, input rows]: mapped either way
        return None
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
        shape = c.g.shape(source)
        axis = _axis(c.op.option("axis"), len(shape) + 1)
        # Axis 0 is a batch dimension only in a 4-D (NHWC) result; stacking tensors of up to 2
        # dimensions along axis 0 ([K, N, 1] from [N, 1], [K, 1, 1] from [1, 1]) maps.
        batch = len(shape) + 1 >= 4
        return Hit(f"packs along the batch dimension of {c.g.describe(source)}") if axis == 0 and batch else None
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


def _one_sided_pad_operand(c: Context) -> Hit | None:
    for index in c.op.inputs:
        producer = c.g.producer.get(index)
        if producer is None:
            continue
        pad = c.g.operators[producer]
        paddings_tensor = pad.input_at(1)
        if pad.name not in ("PAD", "PADV2") or paddings_tensor is None or len(c.g.shape(index)) != 4:
            continue
        paddings = c.g.ints(paddings_tensor) or []
        if len(paddings) == 8 and (paddings[2] != paddings[3] or paddings[4] != paddings[5]):
            return Hit(f"adds {c.g.describe(index)}, padded on one side only by #{producer} (paddings {paddings})")
    return None


def _large_reshape(c: Context) -> Hit | None:
    for index in c.data:
        size = prod(c.g.shape(index))
        if not c.g.constant(index) and size > LARGE_RESHAPE:
            return Hit(f"reshapes {c.g.describe(index)} ({size:,} values)")
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
# Public compiler logs outside ../shared/edgetpu-cases, by repository, commit and path.
SSD_LOG = (
    f"{GITHUB}iwatake2222/EdgeTPU_Analysis/blob/dd26d2fad007e111d5ed4ec4ad52d45a2d8ebe9f/Ops/model_mobilenet/"
    "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29_edgetpu.log (Edge TPU Compiler 1.0)"
)
_GEMM = (
    f"{GITHUB}R-e-d-a-X/EdgeTPU-and-NCS/blob/043bbbfdf41fde2a7f673bae336e1ddc9fd87c78/"
    "saved_models/edgetpu/random_forest/gemm/float32/"
)
# A study's random-forest GEMMs, compiled with -a (Edge TPU Compiler 16.0; the .log files).
GEMM_128_LOG = f"{_GEMM}final_eval/generated/model_128_1_16_256_edgetpu.log (Edge TPU Compiler 16.0, -a)"
GEMM_8_LOG = f"{_GEMM}final_eval/benchmarked/model_8_1_2_1_edgetpu.log (Edge TPU Compiler 16.0, -a)"
GEMM_5OP_LOG = f"{_GEMM}opp_eval/my_timing/model_5op_edgetpu.log (Edge TPU Compiler 16.0)"
TCN_LOG = (
    f"{GITHUB}fredriktegnell/edgetpu-tcn/blob/c078f81bb0affdb4de2cc2d2f5511d71f34fe7ee/"
    "quantized_model_edgetpu.log (Edge TPU Compiler 16.0)"
)
YOLOV5N_LOG = (
    f"{GITHUB}Sandhya1708/modelnew/blob/ff6dfcb7baddf411bb1ba99aed5af6760e608e10/"
    "yolov5n-int8_edgetpu.log (Edge TPU Compiler 16.0)"
)

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
            Evidence(
                CURRENT_LIST,
                "Mul - Pack - Pad - PReLU - Quantize - ReduceMax - ReduceMin - ReLU - ReLU6 - ReLUN1To1 - Reshape - "
                "ResizeBilinear - ResizeNearestNeighbor - Rsqrt - Slice - Softmax - SpaceToDepth - Split - Squeeze - "
                "StridedSlice - Sub - Sum - Squared-difference - Tanh - Transpose - TransposeConv",
                "the current table lists Rsqrt, Squared-difference and Sum, which the copies above cut off",
            ),
            Evidence(GEMM_8_LOG, f"SUM 1 {MAPPED}", "over axis 0 of [8, 2, 1]"),
        ),
        check=_not_in_table,
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
        evidence=(
            Evidence(f"{CORAL_ISSUES}25", f"FULLY_CONNECTED 1 {NOT_CONSTANT}", "both operands computed at run time"),
            Evidence(
                CORAL_MODELS,
                "Model parameters (such as bias tensors) are constant at compile-time.",
                "for FULLY_CONNECTED the constant operand is the parameter, first input or second",
            ),
            Evidence(
                GEMM_128_LOG,
                f"FULLY_CONNECTED 257 {MAPPED}",
                "each a constant first input times a computed second: [128, 16] x [256, 16] into [128, 256], then "
                "[2, 1] x [256, 1] into [2, 256]",
            ),
        ),
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
            Evidence(
                GEMM_5OP_LOG,
                f"FULLY_CONNECTED 2 {MAPPED}",
                "one is a constant [2, 1] times a computed [2, 1] into [2, 2]: with a constant first input the "
                "output's second dimension is the input rows, and it maps",
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
            Evidence(
                AXIS_TIPS,
                "All tensors must be 1-, 2-, or 3-dimensional. If a tensor has more than 3 dimensions, only the "
                "innermost 3 dimensions may have a size greater than 1.",
                "a tensor of up to 3 dimensions is [y][x][z] with no batch dimension: only a 4-D result packs "
                "along a batch",
            ),
            Evidence(GEMM_8_LOG, f"PACK 2 {MAPPED}", "8 tensors of [2, 1] stacked along axis 0 into [8, 2, 1]"),
            Evidence(GEMM_5OP_LOG, f"PACK 1 {MAPPED}", "2 tensors of [1, 1] stacked along axis 0 into [2, 1, 1]"),
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
        id="one-sided-pad-operand",
        operators=("ADD", "SUB", "MUL"),
        condition="an element-wise operand produced by a PAD that pads height or width on one side only",
        status=ONE_SUBGRAPH,
        requirement="an element-wise operation fed by a one-sided spatial PAD may not compile with the rest "
        "(no documented limit; the compiler's delegate search leaves it out)",
        fix="size the feature maps so they match without padding (choose the input size), or pad both sides",
        evidence=(
            Evidence(
                f"{CORAL_ISSUES}690",
                'The edge TPU compiler does not compile my model entirely if a "Pad" operation is present just '
                'before an "Add" operation.',
            ),
            _log(
                "retinanet_padded_multisubgraph",
                "Intermediate tensors: ...,MobileRetinaNet/FeaturePyramid/up_sampling2d/resize_2/ResizeNearestNeighbor,"
                "MobileRetinaNet/FeaturePyramid/zero_padding2d/Pad,...",
                "the delegate search compiled only once the ADD fed by the PAD of [1, 15, 20, 16] to [1, 16, 20, 16] "
                "(paddings [0, 0, 1, 0, 0, 0, 0, 0]) was left out",
            ),
            _log("retinanet_padded_multisubgraph", f"ADD 1 {ONE_SUBGRAPH}"),
            Evidence(
                f"{GITHUB}mathieugalle/edgetpu-compiler-pad-fail/blob/df17eec0386da8b6bcb1b51cc6e2341129bc7c8d/"
                "not_padded_edgetpucompiler_output.log",
                f"ADD 12 {MAPPED}",
                "the same network at an input size where the feature maps match without the PAD",
            ),
            Evidence(
                f"{GITHUB}zye1996/facemesh_EdgeTPU/blob/e303536f6a700289b7af10f1967e57f51727e9e8/models/cocompile/"
                "face_detection_front_128_full_integer_quant_edgetpu.log (Edge TPU Compiler 15.0)",
                f"ADD 16 {MAPPED}",
                "channel PADs feeding ADDs map: only one-sided height/width padding is flagged",
            ),
        ),
        check=_one_sided_pad_operand,
        documented=False,
    ),
    Rule(
        id="large-reshape",
        operators=("RESHAPE",),
        condition=f"a RESHAPE of a tensor of more than {LARGE_RESHAPE:,} values",
        status=UNSPECIFIED,
        requirement="large reshapes may not be mapped (no documented limit)",
        fix="reshape before the tensor grows (per detection level), or end the model before the reshape",
        evidence=(
            Evidence(AXIS_TABLE, "Reshape | Certain reshapes might not be mapped for large tensor sizes."),
            Evidence(YOLOV5N_LOG, f"RESHAPE 3 {MAPPED}", "the 20x20 and 40x40 levels, up to [1, 1600, 3, 85]"),
            Evidence(YOLOV5N_LOG, f"RESHAPE 3 {_UNSPECIFIED_LOG}", "the 80x80 level: 1,632,000 values"),
            Evidence(SSD_LOG, f"RESHAPE 13 {MAPPED}", "the largest to [1, 1083, 91]"),
            Evidence(TCN_LOG, f"RESHAPE 1 {MAPPED}", "[1, 118, 100, 8] to [1, 94400]"),
            _log(_YOLO, f"RESHAPE 3 {_UNSPECIFIED_LOG}", "the smallest writes [1, 144, 1600]: 230,400 values"),
            Evidence(
                f"{CORAL_ISSUES}356",
                "It fails to create a sub graph if any activation doesn't fit on the memory. In this case reshape "
                "ops could be too large to fit on memory.",
            ),
        ),
        check=_large_reshape,
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
            Evidence(SSD_LOG, f"CONCATENATION 2 {MAPPED}", "one writes [1, 1917, 91]: 174,447 values in its rows"),
            Evidence(SSD_LOG, f"LOGISTIC 1 {MAPPED}", "on [1, 1917, 91]"),
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
    # ADD 4 (int64 inputs; runtime_version.cc: "{{BuiltinOperator_ADD, 4}, "2.6.0"}") is read by
    # compiler 16: R-e-d-a-X/EdgeTPU-and-NCS's saved_models/random_forest/tt/float32/model_edgetpu.log
    # (commit e855d9a38c8ee8dc5e69bdf46335c75d0a5e7174) lists its 20 ADD v4 as "ADD 20 Operation is
    # working on an unsupported data type", not "Model could not be parsed". Its TFLite is a snapshot
    # past 2.5.0 that still rejects 2.7.0's QUANTIZE 3; the other versions dated 2.6.0 (MUL 5, PAD 4,
    # PADV2 4, STRIDED_SLICE 6) are not known either way and stay.
    "ADD": 4,
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
