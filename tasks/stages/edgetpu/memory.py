"""The Edge TPU's parameter memory, as data: how edgetpu_compiler counts parameters, what it caches, what it streams.

The compiler prints three lines after compiling (x86-64 only): "On-chip memory used for caching model
parameters", "On-chip memory remaining for caching model parameters" and "Off-chip memory used for
streaming uncached model parameters". A model whose parameters do not fit the on-chip cache streams the
rest from host memory on every inference, tens of times slower. This module predicts those lines
offline from the preflight's placement (which operators map, in which Edge TPU subgraph), in
milliseconds, so the gate, the sweep and a user without the compiler get the answer.

It is built like rules.py: the knowledge is a table (CONSTANTS), each constant with the evidence behind
it (public compiler printouts, the parameter streams of public compiled models); what the evidence
cannot pin down is an Uncertainty with a range (UNCERTAINTIES), never a guess dressed as a rule. The
code below only applies the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from math import prod
from typing import Any

from tasks.stages.edgetpu.compiler import format_size
from tasks.stages.edgetpu.graph import Graph
from tasks.stages.edgetpu.rules import Evidence

MiB = 1024 * 1024

# --- where the evidence comes from ----------------------------------------------------------------------

# Synthetic models built from code in this repository (stacks of Conv2D 3x3 or Dense layers), compiled
# with edgetpu_compiler; its scripts parse the compiler's printed lines into MiB and write them to CSV
# files (value = the printed figure converted to MiB, e.g. "21.25KiB" -> 0.020751953125).
SWEEPS = "https://github.com/Jorgitou98/EdgeTPU-QuantRL-Evaluation"
CONV_L2 = f"{SWEEPS} @ 2fabcb4d948771936afbc1e94aa70d926c7e32f3 CONV_MACs/results/minF32-maxN320-stepN1.csv"
CONV_L5 = f"{SWEEPS} @ b0f782a1b57bd2bc64ce152825707b596335d53f CONV_MACs/results/minF32-maxF702-stepF10.csv"
FC_I64 = f"{SWEEPS} @ c87388cb6ebaafbbc6fe068abf86a42acef77d30 FC_MACs/results/minN100-maxN3000-stepN50-L4-I64.csv"
FC_I6912 = f"{SWEEPS} @ 5e055f166d634d7cb48e7c8bd15cb12a894ced48 FC_MACs/results/minN2-maxN1622-stepN20L5.csv"
LIBREDGETPU = (
    "https://github.com/ricardodeazambuja/LibrEdgeTPU @ be71d6de166d9c13bd221117bebb1934446fd10f "
    "docs/HARDWARE_ANALYSIS.md"
)
RETINANET = (
    "https://github.com/mathieugalle/edgetpu-compiler-pad-fail @ df17eec0386da8b6bcb1b51cc6e2341129bc7c8d "
    "not_padded_edgetpucompiler_output.log"
)
SRGAN = "https://github.com/inSam/SR-GAN-Edge-TPU @ ad083fb8cd8994b31820ee66c3390703be52642d super-resolution.ipynb"
SRGAN_COMPILED = (
    "https://github.com/inSam/SR-GAN-Edge-TPU @ ad083fb8cd8994b31820ee66c3390703be52642d "
    "super-resolution/srgan_quant_2_edgetpu.tflite (its parameter streams, read by compiled.py)"
)
STREAMS = "parameter streams of public compiled models (read by compiled.py; tests/stages/edgetpu/memory_cases)"
CORAL_PIPELINE = "https://coral.ai/docs/edgetpu/pipeline/"
LIBEDGETPU = (
    "https://github.com/google-coral/libedgetpu @ e35aed18fea2e2d25d98352e5a5bd357c170bd4d "
    "driver/config/beagle/beagle_chip_structures.h"
)
CORAL_ISSUES = "https://github.com/google-coral/edgetpu/issues/"


@dataclass(frozen=True)
class Constant:
    """One fact of the memory model, as data: its value, what it means, and the evidence behind it."""

    id: str
    value: int
    unit: str
    meaning: str
    evidence: tuple[Evidence, ...]
    bounds: tuple[int, int] | None = None  # what the evidence allows, when it bounds rather than pins the value


@dataclass(frozen=True)
class Uncertainty:
    """What the evidence cannot pin down, with the range it allows."""

    id: str
    what: str
    range: str
    evidence: tuple[Evidence, ...]


def _sweep(source: str, line: str, note: str) -> Evidence:
    return Evidence(source, line, note)


# The on-chip cache, in the compiler's own accounting of "On-chip memory used" + "remaining".
CAPACITY_BYTES = round(7.75 * MiB)
CAPACITY_LOW_BYTES = round(6.98 * MiB)
CAPACITY_HIGH_BYTES = round(7.88 * MiB)
CAPACITY_FLOOR_BYTES = round(1.09 * MiB)
# Above this activation size the evidence no longer bounds the capacity from below (activation memory).
ACTIVATION_MEMORY_BYTES = 16 * 196608
ROW_LIMIT_BYTES = 16384
CACHED_ROW_MULTIPLE = 64
OTHER_OP_BYTES = 64

CONSTANTS: tuple[Constant, ...] = (
    Constant(
        id="cached-rows",
        value=CACHED_ROW_MULTIPLE,
        unit="output channels",
        meaning="a cached CONV_2D, FULLY_CONNECTED or TRANSPOSE_CONV layer is counted in whole groups of 64 output "
        "channels (rows): 10 outputs count as 64, 80 as 128",
        evidence=(
            _sweep(CONV_L2, "32,41287680,0.020751953125,0.0,...", "21.25KiB printed = 64 x (36+8) + 64 x (288+8)"),
            _sweep(CONV_L2, "33,43794432,0.02294921875,0.0,...", "23.50KiB = 64 x (36+8) + 64 x (324+8)"),
            _sweep(CONV_L5, "42,264757248,0.101318359375,0.0,...", "103.75KiB: 5 layers of 42 outputs, 64 rows each"),
            _sweep(
                FC_I64,
                "100,37400,0.050537109375,0.0,...",
                "51.75KiB = 128 x 64 + 3 x 128 x 100 + 64 x 100: the Dense(10) layer counts 64 rows",
            ),
            Evidence(RETINANET, "On-chip memory used for caching model parameters: 3.86MiB", "64-row count: -2.1%"),
        ),
    ),
    Constant(
        id="streamed-rows",
        value=16,
        unit="output channels",
        meaning="a streamed (off-chip) layer is counted in rows of 16 output channels up to 48, then in groups of 64",
        evidence=(
            _sweep(
                FC_I6912,
                "1022,12296704,7.75,3.02,...",
                "3.02MiB streamed = three Dense(1022) layers (1024 x 1024) + the Dense(10) layer as 16 rows "
                "x 1024 (3.06MiB if it counted 64 rows)",
            ),
            Evidence(
                STREAMS,
                "[16,1,1,32] -> 16 rows; [24,1,1,96] -> 32 rows; [48,1,1,24] -> 48 rows; [96,1,1,16] -> 128 rows",
                "layer sizes measured in the parameter streams of retinanet, posenet and movenet",
            ),
        ),
    ),
    Constant(
        id="row-bytes",
        value=4,
        unit="input channels",
        meaning="a row holds kernel height x width x input channels rounded up to 4 bytes (FULLY_CONNECTED: the "
        "inputs rounded up to 4); kernel taps that only ever read padding are dropped",
        evidence=(
            _sweep(CONV_L2, "33..36: 0.02294921875 each", "33 to 36 input channels all count 36 (23.50KiB printed)"),
            _sweep(CONV_L2, "37,54558720,0.025146484375,0.0,...", "37 to 40 count 40 (25.75KiB)"),
            _sweep(CONV_L5, "32,154533888,0.074951171875,0.0,...", "the 3-channel first layer counts 3x3x4 = 36"),
            Evidence(
                STREAMS,
                "[16,3,3,16] on a 1x2 input -> 16 x (48+8) = 896 (one kernel row)",
                "taps outside the input are dropped",
            ),
        ),
    ),
    Constant(
        id="row-overhead",
        value=8,
        unit="bytes per row",
        meaning="each counted row adds 8 bytes with per-channel quantization, none with per-tensor; the parameter "
        "stream itself holds 4 more per row for a bias that is not all zeros, which the printed figures leave out",
        evidence=(
            _sweep(CONV_L5, "52,404471808,0.118896484375,0.0,...", "121.75KiB = 64 x (36+8) + 4 x 64 x (468+8)"),
            _sweep(
                CONV_L5,
                "642,60847054848,3.93,11.69,...",
                "11.69MiB streamed = 3 x 704 x (5796+8); with 12 bytes per row it would print 11.70MiB",
            ),
            _sweep(FC_I64, "100,37400,0.050537109375,0.0,...", "per-tensor Dense layers: 0 bytes per row"),
            Evidence(
                LIBREDGETPU,
                "On-chip memory used for caching model parameters: 66.00KiB",
                "dense_256 (per-channel, no bias): 256 x (256+8) = 67,584 bytes",
            ),
            Evidence(
                STREAMS,
                "retinanet, posenet, movenet: 12 bytes per row; the sweep's compiled Conv2D models (zero biases): 8",
                "67 compiled sweep models reproduced to the byte with 8",
            ),
        ),
    ),
    Constant(
        id="depthwise",
        value=4,
        unit="bytes per tap",
        meaning="a DEPTHWISE_CONV_2D holds 4 bytes per kernel tap per channel, channels not padded, plus 12 bytes "
        "per channel with a fused activation (8 without; 4 per-tensor)",
        evidence=(
            Evidence(
                STREAMS,
                "[1,3,3,C] -> C x 48 for C = 32 ... 960 (relu6), C x 44 without activation",
                "measured in the parameter streams of retinanet, posenet, movenet, ssd_mobilenet",
            ),
        ),
    ),
    Constant(
        id="other-operator",
        value=OTHER_OP_BYTES,
        unit="bytes",
        meaning="a mapped ADD, MUL, CONCATENATION, pooling, SOFTMAX or similar operator carries a small table",
        evidence=(Evidence(STREAMS, "split_concat: 192 bytes for 3 operators with no weights", "LibrEdgeTPU tools"),),
    ),
    Constant(
        id="capacity",
        value=CAPACITY_BYTES,
        unit="bytes",
        meaning="the cache the compiler fills: used + remaining, about 7.75MiB of the chip's 8 MiB for models "
        "whose activations are small (seen from 6.98MiB to 7.88MiB)",
        bounds=(CAPACITY_LOW_BYTES, CAPACITY_HIGH_BYTES),
        evidence=(
            Evidence(CORAL_PIPELINE, "your model fits in the Edge TPU cache (~8 MB)"),
            _sweep(CONV_L5, "632,58967359488,6.98,6.95,...", "6.98MiB cached: the capacity is at least that"),
            _sweep(CONV_L5, "452,30175838208,5.99,1.99,...", "7.98MiB in all did not fit"),
            _sweep(FC_I64, "1600,7798400,7.52,0.0,... / 1650,8289600,5.45,2.62,...", "7.52MiB fit, 8.07MiB did not"),
            Evidence(LIBREDGETPU, "On-chip memory remaining for caching model parameters: 7.67MiB", "66.00KiB used"),
            Evidence(RETINANET, "On-chip memory remaining for caching model parameters: 3.83MiB", "3.86MiB used"),
            _sweep(FC_I6912, "1022,12296704,7.75,3.02,...", "7.75MiB cached while the rest streamed"),
            Evidence(
                LIBREDGETPU,
                "On-chip memory remaining for caching model parameters: 7.88MiB",
                "0.00B used (dense 8192, everything streamed): the largest capacity seen",
            ),
            Evidence(
                "https://github.com/WongKinYiu/yolov7/pull/1672",
                "On-chip memory remaining for caching model parameters: 1.16MiB",
                "5.90MiB used: 7.06MiB in all, the smallest for a model whose activations fit",
            ),
        ),
    ),
    Constant(
        id="activation-memory",
        value=ACTIVATION_MEMORY_BYTES,
        unit="bytes",
        meaning="activations larger than the 16 tiles x 192 KiB of narrow memory take parameter cache: above 3 MiB "
        "the capacity is no longer bounded from below by the evidence",
        bounds=(CAPACITY_FLOOR_BYTES, CAPACITY_HIGH_BYTES),
        evidence=(
            Evidence(LIBEDGETPU, "196608ULL, // NOLINT: narrow_memory_capacity", "per tile; 4 x 4 tiles"),
            Evidence(
                SRGAN,
                "On-chip memory remaining for caching model parameters: 6.25KiB",
                "1.42MiB used + 6.25KiB: 1.43MiB with 9 MiB activations (384x384x64)",
            ),
            Evidence(
                f"{CORAL_ISSUES}572",
                "On-chip memory remaining for caching model parameters: 511.50KiB",
                "604.50KiB used: 1.09MiB, the smallest capacity seen",
            ),
            _sweep(
                CONV_L5, "632,58967359488,6.98,6.95,...", "2.47MiB activations (64x64x632) still left 6.98MiB or more"
            ),
        ),
    ),
    Constant(
        id="row-limit",
        value=ROW_LIMIT_BYTES,
        unit="bytes per row",
        meaning="a layer whose rows hold 16 KiB or more is never cached; it streams, with the layers before it "
        "in its subgraph",
        bounds=(11520, ROW_LIMIT_BYTES),
        evidence=(
            Evidence(
                STREAMS,
                "LibrEdgeTPU bright_128x128: two FULLY_CONNECTED [1,16384] streamed (512 KiB) with 7 MiB free",
                "and kapibara_model: FULLY_CONNECTED [16,30752] streamed with the CONV_2D before it",
            ),
            Evidence(STREAMS, "retinanet [16,3,3,1280] cached", "rows of 11,520 bytes are cached"),
        ),
    ),
    Constant(
        id="cache-order",
        value=1,
        unit="",
        meaning="when the parameters do not fit, layers are cached in execution order while they fit and the "
        "rest stream",
        evidence=(
            _sweep(
                FC_I6912,
                "1022,12296704,7.75,3.02,...",
                "the first Dense (6.75MiB) and the next (1MiB) cached, the three after and the output layer "
                "streamed; caching from the last layer would have cached 4.06MiB",
            ),
            _sweep(
                CONV_L5, "522,40237129728,5.21,5.19,...", "the small first layer and two of four 2.59MiB layers cached"
            ),
        ),
    ),
    Constant(
        id="shared-cache",
        value=1,
        unit="",
        meaning="the Edge TPU subgraphs of one model share one cache; the printed figures are their sums",
        evidence=(
            Evidence(
                SRGAN_COMPILED,
                "1,317,120 + 150,528 + 20,800 cached; 114,176 + 14,336 + 25,600 streamed",
                "= the printed 1.42MiB and 150.50KiB; one parameter_caching_token for the 3 subgraphs",
            ),
        ),
    ),
)

UNCERTAINTIES: tuple[Uncertainty, ...] = (
    Uncertainty(
        id="U1",
        what="which accounting the printed on-chip figure uses: whole groups of 64 rows, or the bytes of the "
        "parameter stream. Settled for CONV_2D and FULLY_CONNECTED by the sweeps (64 rows: on the same compiled "
        "models, Conv2D with 32 outputs prints 21.25KiB where its stream holds 10.62KiB) and retinanet; srgan's "
        "printed figure equals its stream bytes because one layer (3 outputs at 384x384) was stored transformed",
        range="the same figure for layers with a multiple of 64 outputs; the stream accounting is up to 4x smaller "
        "for a layer with 16 or fewer outputs; a transformed layer counts neither (srgan: 46,400 bytes); "
        "depthwise layers count between 0.75x and 1.02x their stream bytes (retinanet's 17 layers)",
        evidence=(
            _sweep(CONV_L2, "32,41287680,0.020751953125,0.0,...", "printed 21.25KiB for this model"),
            Evidence(
                f"{SWEEPS} @ 66279fea4ececbf320dd852b5dbfdcd127d22d43 "
                "CONV_linear_MACs/N32-nMACs41287680_quant_edgetpu.tflite",
                "PARAMETER_CACHING parameters: 10,880 bytes",
                "the same model compiled: 32 rows x (36+8) + 32 rows x (288+8)",
            ),
            Evidence(SRGAN, "On-chip memory used for caching model parameters: 1.42MiB", "the stream bytes exactly"),
            Evidence(RETINANET, "On-chip memory used for caching model parameters: 3.86MiB", "stream bytes: -23.8%"),
        ),
    ),
    Uncertainty(
        id="U2",
        what="the capacity for a given model",
        range="6.98MiB to 7.88MiB while the largest activation is under 3 MiB; down to 1.09MiB above (srgan "
        "1.43MiB, issue 572 1.09MiB); a segment whose input and output are both large had less than 6.51MiB",
        evidence=(
            _sweep(
                f"{SWEEPS} @ cbb6d571ec8173abf14a5164b1aea0f6bcee1775 "
                "CONV_MACs/results/minF32-maxF692-stepF10-seg3-batch100.csv",
                '592,51852607488,"[3.28, 3.26, 3.26]","[0.0, 0.0, 3.26]",...',
                "the last of 3 segments cached one of its two 3.26MiB layers",
            ),
        ),
    ),
    Uncertainty(
        id="U3",
        what="the row length from which a layer is never cached",
        range="between 11,520 bytes (cached) and 16,384 bytes (streamed)",
        evidence=(Evidence(STREAMS, "retinanet [16,3,3,1280] cached; bright_128x128 [1,16384] streamed"),),
    ),
    Uncertainty(
        id="U4",
        what="which layers stream when the parameters do not fit, and streaming with capacity left",
        range="the off-chip total is at least the parameters minus the capacity; the compiler sometimes streams "
        "a large first layer and caches the later ones (the Dense sweeps: 15 of 141 models), or "
        "streams while capacity remains (kapibara_slim 71% of its parameters, yolov7-tiny 41.75KiB, movenet 2.3KiB)",
        evidence=(
            _sweep(FC_I6912, "1042,12641544,4.4,7.17,...", "the 7.17MiB first layer streamed, the 4 after it cached"),
            Evidence(
                "https://github.com/WongKinYiu/yolov7/pull/1672",
                "Off-chip memory used for streaming uncached model parameters: 41.75KiB",
                "with 1.16MiB remaining",
            ),
        ),
    ),
    Uncertainty(
        id="U5",
        what="small operators, first layers with one input channel, LSTM",
        range="about 64 bytes per elementwise or pooling operator (up to 640 seen); a one-channel first "
        "convolution -33% to +50%; UNIDIRECTIONAL_SEQUENCE_LSTM not modelled (-80%): matters under ~50 KiB",
        evidence=(Evidence(STREAMS, "looming_64x64_3x3: +50%; keras_lstm_mnist_ptq: -79%"),),
    ),
    Uncertainty(
        id="U6",
        what="compiler versions and the default segmentation",
        range="layouts agree within 1.1% across compiler 2.0, 2.1, 15 and 16; the compiler's default "
        "--num_segments split does not balance parameter bytes (5 convolutions into 2 segments: 0.76MiB and "
        "2.25MiB), so the suggested count is the fewest segments that can fit, not a guarantee",
        evidence=(
            _sweep(
                f"{SWEEPS} @ b0f782a1b57bd2bc64ce152825707b596335d53f "
                "CONV_MACs/results/minF32-maxF702-stepF10-seg2-batch100.csv",
                '272,10989600768,"[0.762939453125, 2.25]","[0.0, 0.0]",...',
                "one 0.75MiB layer and the small first layer in one segment, three in the other",
            ),
        ),
    ),
)

# Operators with weights, and the position of the weights among their inputs.
WEIGHT_INPUT = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}
DATA_INPUT = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 0, "FULLY_CONNECTED": 0, "TRANSPOSE_CONV": 2}
# Mapped operators without weights that still carry a small parameter table (U5).
TABLE_OPERATORS = frozenset(
    {
        "ADD",
        "SUB",
        "MUL",
        "CONCATENATION",
        "AVERAGE_POOL_2D",
        "SOFTMAX",
        "LOGISTIC",
        "TANH",
        "MEAN",
        "SPLIT",
        "SQUARED_DIFFERENCE",
        "HARD_SWISH",
        "L2_NORMALIZATION",
    }
)
DTYPE_BYTES = {"INT16": 2, "INT32": 4, "FLOAT32": 4, "INT64": 8, "FLOAT16": 2}


# --- the facts the predictor needs, per operator ----------------------------------------------------------


@dataclass(frozen=True)
class OperatorFacts:
    """What the memory model reads of one operator: where it runs, its weights' shape, its tensors' sizes.

    Read from a .tflite and its preflight (`operator_facts`), or from kept test data (`from_dict`).
    """

    index: int
    name: str
    edgetpu: bool
    subgraph: int | None = None
    uncertain: bool = False
    weights: tuple[int, ...] | None = None  # the constant weight tensor's shape, for layers with weights
    per_channel: bool = False
    bias: bool = False  # a bias that is not all zeros
    fused_activation: int = 0
    input: tuple[int, ...] | None = None  # the data input's shape
    output: tuple[int, ...] | None = None
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    same_padding: bool = True
    largest_tensor_bytes: int = 0  # the largest data tensor it reads or writes

    @property
    def label(self) -> str:
        return f"#{self.index} {self.name}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the kept test cases use it)."""
        return {
            "index": self.index,
            "name": self.name,
            "edgetpu": self.edgetpu,
            "subgraph": self.subgraph,
            "uncertain": self.uncertain,
            "weights": list(self.weights) if self.weights is not None else None,
            "per_channel": self.per_channel,
            "bias": self.bias,
            "fused_activation": self.fused_activation,
            "input": list(self.input) if self.input is not None else None,
            "output": list(self.output) if self.output is not None else None,
            "stride": list(self.stride),
            "dilation": list(self.dilation),
            "same_padding": self.same_padding,
            "largest_tensor_bytes": self.largest_tensor_bytes,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> OperatorFacts:
        def shape(key: str) -> tuple[int, ...] | None:
            return tuple(values[key]) if values.get(key) is not None else None

        return cls(
            index=values["index"],
            name=values["name"],
            edgetpu=values["edgetpu"],
            subgraph=values.get("subgraph"),
            uncertain=values.get("uncertain", False),
            weights=shape("weights"),
            per_channel=values.get("per_channel", False),
            bias=values.get("bias", False),
            fused_activation=values.get("fused_activation", 0),
            input=shape("input"),
            output=shape("output"),
            stride=_pair(values.get("stride")),
            dilation=_pair(values.get("dilation")),
            same_padding=values.get("same_padding", True),
            largest_tensor_bytes=values.get("largest_tensor_bytes", 0),
        )


def _pair(values: Sequence[int] | None) -> tuple[int, int]:
    return (int(values[0]), int(values[1])) if values else (1, 1)


def operator_facts(g: Graph, placement: Iterable[tuple[bool, int | None, bool]]) -> list[OperatorFacts]:
    """The facts of every operator of a graph, given each one's (on the Edge TPU, subgraph, uncertain)."""
    facts = []
    for op, (edgetpu, subgraph, uncertain) in zip(g.operators, placement, strict=True):
        weights_at = WEIGHT_INPUT.get(op.name)
        weights = op.input_at(weights_at) if weights_at is not None else None
        if weights is not None and not g.constant(weights):
            weights = None
        data = op.input_at(DATA_INPUT.get(op.name, 0))
        bias_tensor = op.input_at(3 if op.name == "TRANSPOSE_CONV" else 2)
        tensors = [t for t in (*op.inputs, *op.outputs) if not g.constant(t)]
        facts.append(
            OperatorFacts(
                index=op.index,
                name=op.name,
                edgetpu=edgetpu,
                subgraph=subgraph,
                uncertain=uncertain,
                weights=tuple(g.shape(weights)) if weights is not None else None,
                per_channel=weights is not None and g.per_channel(weights),
                bias=weights is not None and bias_tensor is not None and _nonzero(g, bias_tensor),
                fused_activation=op.option("fusedActivationFunction"),
                input=tuple(g.shape(data)) if data is not None else None,
                output=tuple(g.shape(op.outputs[0])) if op.outputs else None,
                stride=(op.option("strideH", 1), op.option("strideW", 1)),
                dilation=(op.option("dilationHFactor", 1), op.option("dilationWFactor", 1)),
                same_padding=op.option("padding", 0) == 0,
                largest_tensor_bytes=max((_tensor_bytes(g, t) for t in tensors), default=0),
            )
        )
    return facts


def _nonzero(g: Graph, index: int) -> bool:
    """A bias that is not all zeros: the compiler stores none for an all-zero one (compiled sweep models)."""
    values = g.ints(index)
    return values is None or any(values)


def _tensor_bytes(g: Graph, index: int) -> int:
    return prod(max(d, 1) for d in g.shape(index)) * DTYPE_BYTES.get(g.dtype(index), 1)


# --- one layer's size, by the table -------------------------------------------------------------------------


def _ceil(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def streamed_rows(outputs: int) -> int:
    """Rows a streamed layer counts: 16 at a time up to 48 outputs, then 64 at a time (streamed-rows)."""
    return _ceil(outputs, 16) if outputs <= 48 else _ceil(outputs, 64)


def cached_rows(outputs: int) -> int:
    """Rows a cached layer counts: whole groups of 64 (cached-rows)."""
    return _ceil(outputs, CACHED_ROW_MULTIPLE)


def used_taps(size_in: int, size_out: int, kernel: int, stride: int, dilation: int, same: bool) -> int:
    """Kernel taps along one axis that ever read a real input pixel (the compiler drops the others)."""
    if size_in <= 0 or size_out <= 0:
        return kernel
    before = max((size_out - 1) * stride + (kernel - 1) * dilation + 1 - size_in, 0) // 2 if same else 0
    used = sum(any(0 <= o * stride - before + t * dilation < size_in for o in range(size_out)) for t in range(kernel))
    return max(used, 1)


@dataclass(frozen=True)
class LayerSize:
    """One operator's parameters: as the compiler counts them cached or streamed, and as its stream holds them."""

    cached: int
    streamed: int
    row_bytes: int
    stream: int  # the bytes of its parameter stream in the compiled model (compiled.py measures these)


def layer_size(op: OperatorFacts) -> LayerSize | None:
    """The operator's parameter bytes by the CONSTANTS, or None when it has none."""
    if op.name in TABLE_OPERATORS:
        return LayerSize(0, 0, 0, OTHER_OP_BYTES)  # other-operator: in the streams, not in the printed figures
    if op.weights is None or op.name not in WEIGHT_INPUT:
        return None
    overhead = 8 if op.per_channel else 0  # row-overhead
    bias = 4 if op.bias else 0  # in the stream only
    if op.name == "FULLY_CONNECTED":
        outputs, row = op.weights[0], _ceil(op.weights[-1], 4)
    elif op.name == "TRANSPOSE_CONV":
        outputs, kh, kw, cin = op.weights
        row = kh * kw * _ceil(cin, 4)
    else:
        taps_h, taps_w = _taps(op)
        if op.name == "DEPTHWISE_CONV_2D":
            channels = op.weights[3]
            per_channel = (12 if op.fused_activation else 8) if op.per_channel else 4
            if op.input is not None and len(op.input) == 4 and op.input[3] == 1 and channels > 1:
                # A depth multiplier on a one-channel input is stored like a convolution (U5).
                size = streamed_rows(channels) * (4 * taps_h * taps_w + 4)
            else:
                size = channels * (4 * taps_h * taps_w + per_channel)
            return LayerSize(size, size, 4 * taps_h * taps_w, size)
        outputs, _, _, cin = op.weights
        row = taps_h * taps_w * _ceil(cin, 4)
    rows = streamed_rows(outputs)
    return LayerSize(
        cached_rows(outputs) * (row + overhead), rows * (row + overhead), row, rows * (row + overhead + bias)
    )


def _taps(op: OperatorFacts) -> tuple[int, int]:
    assert op.weights is not None
    kh, kw = op.weights[1], op.weights[2]
    if op.input is None or op.output is None or len(op.input) != 4 or len(op.output) != 4:
        return kh, kw
    return (
        used_taps(op.input[1], op.output[1], kh, op.stride[0], op.dilation[0], op.same_padding),
        used_taps(op.input[2], op.output[2], kw, op.stride[1], op.dilation[1], op.same_padding),
    )


# --- the prediction -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """A mapped operator with parameters, and where its parameters go."""

    index: int
    name: str
    subgraph: int
    cached_bytes: int  # what it takes on chip when cached
    streamed_bytes: int  # what it counts off chip when streamed
    stream_bytes: int  # what its parameter stream holds in the compiled model
    row_bytes: int
    cached: bool
    reason: str  # "fits" | "row-limit" | "before a row-limit layer" | "capacity"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "subgraph": self.subgraph,
            "bytes": self.cached_bytes if self.cached else self.streamed_bytes,
            "cached": self.cached,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class SubgraphMemory:
    """One Edge TPU subgraph's share: its cached and streamed bytes, and its largest activation."""

    subgraph: int
    on_chip_bytes: int
    off_chip_bytes: int
    layers: int
    largest_activation_bytes: int = 0
    largest_activation_operator: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "subgraph": self.subgraph,
            "on_chip_bytes": self.on_chip_bytes,
            "off_chip_bytes": self.off_chip_bytes,
            "layers": self.layers,
            "largest_activation_bytes": self.largest_activation_bytes,
            "largest_activation_operator": self.largest_activation_operator,
        }


@dataclass(frozen=True)
class MemoryPrediction:
    """The predicted memory lines of edgetpu_compiler, per model and per Edge TPU subgraph, with their ranges."""

    on_chip_bytes: int
    off_chip_bytes: int
    capacity_bytes: int
    capacity_range_bytes: tuple[int, int]
    parameter_bytes: int  # everything mapped, counted as if cached
    stream_bytes: int  # what the compiled model's parameter streams will hold, cached and streamed together
    streams: str  # "no" | "possible" | "yes"
    largest_activation_bytes: int
    largest_activation_operator: str | None
    segments: int | None  # suggested --num_segments when the parameters do not fit; None when segments cannot help
    segments_note: str
    subgraphs: list[SubgraphMemory] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)
    on_chip_range_bytes: tuple[int, int] = (0, 0)
    source: str = "preflight"

    @property
    def remaining_bytes(self) -> int:
        return max(self.capacity_bytes - self.on_chip_bytes, 0)

    def lines(self) -> list[str]:
        """The compiler's three memory lines for this prediction, then what they rest on."""
        lines = [
            f"On-chip memory used for caching model parameters: {format_size(self.on_chip_bytes)}",
            f"On-chip memory remaining for caching model parameters: {format_size(self.remaining_bytes)}",
            f"Off-chip memory used for streaming uncached model parameters: {format_size(self.off_chip_bytes)}",
        ]
        low, high = self.capacity_range_bytes
        lines.append(
            f"capacity assumed {format_size(self.capacity_bytes)} (seen {format_size(low)} to {format_size(high)}); "
            f"parameters {format_size(self.parameter_bytes)}; streams: {self.streams}"
        )
        if self.largest_activation_operator:
            lines.append(
                f"largest activation {format_size(self.largest_activation_bytes)} at {self.largest_activation_operator}"
            )
        if len(self.subgraphs) > 1:
            lines += [
                f"  subgraph {s.subgraph}: {format_size(s.on_chip_bytes)} on chip, {format_size(s.off_chip_bytes)} "
                f"streamed, largest activation {format_size(s.largest_activation_bytes)}"
                for s in self.subgraphs
            ]
        if self.off_chip_bytes or self.streams != "no":
            lines.append(self.segments_note)
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the top-level "memory" object of the preflight."""
        return {
            "source": self.source,
            "on_chip_bytes": self.on_chip_bytes,
            "on_chip_remaining_bytes": self.remaining_bytes,
            "off_chip_bytes": self.off_chip_bytes,
            "capacity_bytes": self.capacity_bytes,
            "capacity_range_bytes": list(self.capacity_range_bytes),
            "on_chip_range_bytes": list(self.on_chip_range_bytes),
            "parameter_bytes": self.parameter_bytes,
            "stream_bytes": self.stream_bytes,
            "streams": self.streams,
            "largest_activation_bytes": self.largest_activation_bytes,
            "largest_activation_operator": self.largest_activation_operator,
            "segments": self.segments,
            "segments_note": self.segments_note,
            "per_subgraph": [s.to_dict() for s in self.subgraphs],
            "layers": [layer.to_dict() for layer in self.layers],
        }


def predict_memory(ops: Sequence[OperatorFacts]) -> MemoryPrediction:
    """Apply the CONSTANTS to the operators the preflight maps: on-chip and off-chip bytes, per subgraph."""
    largest, largest_op = 0, None
    candidates: list[tuple[OperatorFacts, LayerSize]] = []
    uncertain_bytes = 0
    for op in ops:
        size = layer_size(op)
        if op.uncertain and not op.edgetpu and size is not None:
            uncertain_bytes += size.cached  # counted only in the upper end of the range
        if not op.edgetpu:
            continue
        if op.largest_tensor_bytes > largest:
            largest, largest_op = op.largest_tensor_bytes, op.label
        if size is not None:
            candidates.append((op, size))

    # row-limit: such a layer streams, and so do the layers before it in its subgraph (kapibara_model).
    forced: dict[int, str] = {}
    for i, (op, size) in enumerate(candidates):
        if size.row_bytes >= ROW_LIMIT_BYTES:
            forced[i] = "row-limit"
            for j in range(i):
                if candidates[j][0].subgraph == op.subgraph:
                    forced.setdefault(j, "before a row-limit layer")
    # cache-order: in execution order, each layer that still fits; one cache for every subgraph.
    capacity = capacity_for(largest)
    free = capacity
    layers = []
    for i, (op, size) in enumerate(candidates):
        cached = i not in forced and size.cached <= free
        free -= size.cached if cached else 0
        reason = forced.get(i, "fits" if cached else "capacity")
        layers.append(
            Layer(
                op.index,
                op.name,
                op.subgraph or 0,
                size.cached,
                size.streamed,
                size.stream,
                size.row_bytes,
                cached,
                reason,
            )
        )
    on_chip = sum(layer.cached_bytes for layer in layers if layer.cached)
    off_chip = sum(layer.streamed_bytes for layer in layers if not layer.cached)
    parameters = sum(layer.cached_bytes for layer in layers)

    low, high = (CAPACITY_LOW_BYTES, CAPACITY_HIGH_BYTES)
    if largest > ACTIVATION_MEMORY_BYTES:
        low = CAPACITY_FLOOR_BYTES
    if off_chip:
        streams = "yes"
    elif parameters > min(low, capacity):
        streams = "possible"
    else:
        streams = "no"
    segments, note = suggest_segments(layers, streams, capacity, min(low, capacity))
    by_subgraph: dict[int, list[Layer]] = {}
    for layer in layers:
        by_subgraph.setdefault(layer.subgraph, []).append(layer)
    activations: dict[int, OperatorFacts] = {}  # each subgraph's operator with the largest activation
    for op in ops:
        best = activations.get(op.subgraph or 0)
        if op.edgetpu and (best is None or op.largest_tensor_bytes > best.largest_tensor_bytes):
            activations[op.subgraph or 0] = op
    subgraphs = [
        SubgraphMemory(
            k,
            sum(x.cached_bytes for x in by_subgraph.get(k, []) if x.cached),
            sum(x.streamed_bytes for x in by_subgraph.get(k, []) if not x.cached),
            len(by_subgraph.get(k, [])),
            activations[k].largest_tensor_bytes if k in activations else 0,
            activations[k].label if k in activations else None,
        )
        for k in sorted(set(by_subgraph) | set(activations))
    ]
    # The range of the on-chip figure: U1 (the stream accounting srgan printed, depthwise layers 0.75x to
    # 1.02x), U5 (small tables up to 10x their 64 bytes) and the operators whose placement is not documented.
    kept = [x for x in layers if x.cached]
    depthwise = sum(x.cached_bytes for x in kept if x.name == "DEPTHWISE_CONV_2D")
    tables = sum(x.stream_bytes for x in kept if x.name in TABLE_OPERATORS)
    on_low = min(on_chip - depthwise // 4, sum(x.stream_bytes for x in kept if x.name not in TABLE_OPERATORS))
    on_high = on_chip + depthwise // 50 + 10 * tables + uncertain_bytes
    return MemoryPrediction(
        on_chip_bytes=on_chip,
        off_chip_bytes=off_chip,
        capacity_bytes=capacity,
        capacity_range_bytes=(low, high),
        parameter_bytes=parameters,
        stream_bytes=sum(layer.stream_bytes for layer in layers),
        streams=streams,
        largest_activation_bytes=largest,
        largest_activation_operator=largest_op,
        segments=segments,
        segments_note=note,
        subgraphs=subgraphs,
        layers=layers,
        on_chip_range_bytes=(max(on_low, 0), on_high),
    )


def capacity_for(largest_activation: int) -> int:
    """The capacity assumed: 7.75MiB, less what an activation beyond the 3 MiB of narrow memory takes (U2)."""
    return max(CAPACITY_BYTES - max(largest_activation - ACTIVATION_MEMORY_BYTES, 0), CAPACITY_FLOOR_BYTES)


def suggest_segments(
    layers: Sequence[Layer], streams: str, capacity: int = CAPACITY_BYTES, low: int = CAPACITY_LOW_BYTES
) -> tuple[int | None, str]:
    """The fewest --num_segments whose pieces, cut in execution order, each fit the capacity.

    Segments are separate models, each with the whole cache (pipelined over several Edge TPUs). Fill
    each segment with layers in execution order until the next would not fit, then start another:
    for a sequence cut into contiguous pieces this greedy count is the minimum. It is a lower bound
    on what the compiler needs: its own default split does not balance parameter bytes (U6). When
    the parameters fit the assumed capacity but not the lowest seen ("possible"), the count is for
    the lowest.
    """
    streamed = any(not layer.cached for layer in layers)
    if not streamed and streams == "no":
        return 1, "the parameters fit the on-chip cache: one segment"
    capacity = capacity if streamed else low
    limited = [layer for layer in layers if layer.reason in ("row-limit", "before a row-limit layer")]
    too_big = [layer for layer in layers if layer.cached_bytes > capacity and layer not in limited]
    if too_big:
        biggest = max(too_big, key=lambda x: x.cached_bytes)
        return None, (
            f"#{biggest.index} {biggest.name} alone holds {format_size(biggest.cached_bytes)}, more than the "
            f"{format_size(capacity)} cache: no segmentation can cache it; make that layer smaller"
        )
    count, free = 1, capacity
    for layer in layers:
        if layer in limited:
            continue
        if layer.cached_bytes > free:
            count, free = count + 1, capacity
        free -= layer.cached_bytes
    note = (
        f"suggested: edgetpu_compiler --num_segments {count} (the fewest pieces, cut in execution order, that "
        f"each fit {format_size(capacity)}; check each segment's printed lines, the compiler's own split may "
        "need more)"
    )
    if limited:
        note += f"; {len(limited)} layer(s) stream whatever the segments (rows of 16 KiB or more)"
    return count, note
