"""The rules table: every rule names its evidence and fix, and the architecture page lists it; and the
boundaries of the rules real logs bound, pinned on operators written straight into TFLite's schema."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tasks.stages.edgetpu import RULES
from tests.conftest import REPO

ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"


def test_every_rule_names_its_evidence_and_fix() -> None:
    ids = [rule.id for rule in RULES]
    assert len(ids) == len(set(ids))
    for rule in RULES:
        assert rule.evidence and all(e.source and e.quote for e in rule.evidence), rule.id
        assert rule.requirement and rule.fix and rule.condition and rule.status, rule.id
        # A source is a public URL or a shared case's name, never a file on someone's machine.
        assert not any(e.source.startswith(("/", "~")) for e in rule.evidence), rule.id


def test_the_architecture_page_lists_every_rule() -> None:
    page = ARCHITECTURE.read_text()
    missing = [rule.id for rule in RULES if f"`{rule.id}`" not in page]
    assert not missing, f"docs/ARCHITECTURE.md does not list rules {missing}"


# --- rules pinned on hand-built graphs ------------------------------------------------------------
# A few operators written straight into TFLite's schema objects (no converter): each shows one
# boundary of a rule, with the real compiler's verdict on either side taken from a public log.


def _hand_built(
    tensors: list[tuple[list[int], str, Any]], ops: list[tuple[str, int, list[int], list[int], Any]]
) -> Any:
    """A ModelT: tensors as (shape, type, constant values or None), operators as (name, version, inputs,
    outputs, builtin options); the graph's inputs are the computed tensors no operator writes."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    subgraph = schema.SubGraphT()
    subgraph.tensors = []
    for index, (shape, kind, values) in enumerate(tensors):
        tensor = schema.TensorT()
        tensor.shape, tensor.name = list(shape), f"t{index}"
        tensor.type = getattr(schema.TensorType, kind)
        tensor.buffer = 0
        if values is not None:
            buffer = schema.BufferT()
            dtype = {"INT8": np.int8, "INT32": np.int32}[kind]
            buffer.data = list(np.asarray(values, dtype=dtype).reshape(-1).tobytes())
            model.buffers.append(buffer)
            tensor.buffer = len(model.buffers) - 1
        subgraph.tensors.append(tensor)
    codes: dict[tuple[str, int], int] = {}
    model.operatorCodes, subgraph.operators = [], []
    for name, version, inputs, outputs, options in ops:
        if (name, version) not in codes:
            code = schema.OperatorCodeT()
            code.builtinCode = code.deprecatedBuiltinCode = getattr(schema.BuiltinOperator, name)
            code.version = version
            codes[(name, version)] = len(model.operatorCodes)
            model.operatorCodes.append(code)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs, op.builtinOptions = codes[(name, version)], inputs, outputs, options
        subgraph.operators.append(op)
    written = {t for *_, outputs, _ in ops for t in outputs}
    subgraph.inputs = [i for i, (_, _, values) in enumerate(tensors) if values is None and i not in written]
    subgraph.outputs = [ops[-1][3][0]]
    model.subgraphs = [subgraph]
    return model


def _options(kind: str, **values: Any) -> Any:
    from ai_edge_litert import schema_py_generated as schema

    options = getattr(schema, f"{kind}OptionsT")()
    for key, value in values.items():
        setattr(options, key, value)
    return options


def _verdicts(model: Any, **flags: Any) -> list[tuple[str, bool, str | None, bool]]:
    from tasks.stages.edgetpu import preflight_model

    prediction = preflight_model(model, "hand-built", **flags)
    # A one-operator model that does not map gets "no operator maps"; nothing else may stop it.
    assert prediction.error is None or prediction.error.startswith("no operator maps"), prediction.error
    return [(op.name, op.edgetpu, op.rule, op.uncertain) for op in prediction.operators]


@pytest.mark.parametrize(("rows", "constant_first", "maps"), [(1, True, True), (256, True, True), (1, False, False)])
def test_fully_connected_with_a_constant_first_operand(rows: int, constant_first: bool, maps: bool) -> None:
    # FULLY_CONNECTED(A, B) = A x B^T with A constant: A is the weights, B's rows the inputs, and the
    # [M, rows] output maps (a random-forest GEMM's [128, 16] x [256, 16], compiled with -a, all mapped).
    # With both operands computed there are no weights.
    weights = np.ones((10, 16)) if constant_first else None
    model = _hand_built(
        [([rows, 16], "INT8", None), ([10, 16], "INT8", weights), ([10, rows], "INT8", None)],
        [("FULLY_CONNECTED", 4, [1, 0], [2], _options("FullyConnected"))],
    )
    [(_, edgetpu, rule, _)] = _verdicts(model)
    assert edgetpu is maps
    assert rule == (None if maps else "parameter-not-constant")


@pytest.mark.parametrize(("shape", "rule"), [([4, 1], None), ([1, 1], None), ([2, 4, 8], "rank")])
def test_pack_along_axis_0_maps_unless_the_result_has_a_batch(shape: list[int], rule: str | None) -> None:
    # [2, 1] x 8 -> [8, 2, 1] and [1, 1] x 2 -> [2, 1, 1] mapped (the GEMM logs); a 4-D result packs a
    # batch, and already has a fourth dimension larger than 1.
    model = _hand_built(
        [(shape, "INT8", None), (shape, "INT8", None), ([2, *shape], "INT8", None)],
        [("PACK", 2, [0, 1], [2], _options("Pack", valuesCount=2, axis=0))],
    )
    [(_, edgetpu, found, _)] = _verdicts(model)
    assert (edgetpu, found) == (rule is None, rule)


def test_sum_is_in_the_current_table_and_add_version_4_is_read() -> None:
    model = _hand_built(
        [([1, 4, 4, 8], "INT8", None), ([2], "INT32", [1, 2]), ([1, 8], "INT8", None), ([1, 8], "INT8", None)],
        [
            ("SUM", 2, [0, 1], [2], _options("Reducer")),
            # ADD 4 (dated TF 2.6.0): compiler 16 reads it (a random-forest model's log: "ADD 20 Operation
            # is working on an unsupported data type" for 20 int64 ADD v4, not "Model could not be parsed")
            ("ADD", 4, [2, 2], [3], _options("Add")),
        ],
    )
    assert _verdicts(model) == [("SUM", True, None, False), ("ADD", True, None, False)]
    too_new = _hand_built(
        [([1, 8], "INT8", None), ([1, 8], "INT8", None)], [("QUANTIZE", 3, [0], [1], _options("Quantize"))]
    )
    from tasks.stages.edgetpu import preflight_model

    error = preflight_model(too_new, "hand-built").error
    assert error is not None and "'QUANTIZE' version '3'" in error


@pytest.mark.parametrize(
    ("before", "after", "maps"),
    [
        ([1, 1083, 91], [1, 1083, 1, 91], True),  # an SSD's largest, mapped
        ([1, 40, 40, 255], [1, 1600, 3, 85], True),  # a YOLOv5n head's 40x40 level: 408,000 values, mapped
        ([1, 80, 80, 255], [1, 6400, 3, 85], False),  # its 80x80 level: small rows, 1.6M values, refused
    ],
)
def test_large_reshapes_may_fall_back(before: list[int], after: list[int], maps: bool) -> None:
    model = _hand_built(
        [(before, "INT8", None), ([len(after)], "INT32", after), (after, "INT8", None)],
        [("RESHAPE", 1, [0, 1], [2], _options("Reshape", newShape=after))],
    )
    [(_, edgetpu, rule, uncertain)] = _verdicts(model)
    assert (edgetpu, rule, uncertain) == ((True, None, False) if maps else (False, "large-reshape", True))


@pytest.mark.parametrize(("boxes", "maps"), [(1917, True), (1918, False)])
def test_large_rows_are_bounded_by_the_ssd_log(boxes: int, maps: bool) -> None:
    # An SSD's CONCATENATION and LOGISTIC over [1, 1917, 91] mapped; one more row is past what was seen.
    half = [1, boxes, 91]
    model = _hand_built(
        [
            ([1, boxes - 900, 91], "INT8", None),
            ([1, 900, 91], "INT8", None),
            (half, "INT8", None),
            (half, "INT8", None),
        ],
        [("CONCATENATION", 2, [0, 1], [2], _options("Concatenation", axis=1)), ("LOGISTIC", 2, [2], [3], None)],
    )
    verdicts = _verdicts(model)
    assert [edgetpu for _, edgetpu, _, _ in verdicts] == [maps, maps]
    assert maps or verdicts[0][2] == "large-tensor"


@pytest.mark.parametrize(
    ("paddings", "maps"),
    [
        ([0, 0, 1, 0, 0, 0, 0, 0], False),  # one row on top: retinanet's FPN PAD before its dropped ADD
        ([0, 0, 1, 1, 0, 0, 0, 0], True),
        ([0, 0, 0, 0, 0, 0, 0, 2], True),  # BlazeFace's channel padding into ADDs maps
    ],
)
def test_one_sided_spatial_pad_into_an_add(paddings: list[int], maps: bool) -> None:
    pads = np.array(paddings).reshape(4, 2)
    padded = [int(d + pads[i].sum()) for i, d in enumerate([1, 8, 10, 16])]
    model = _hand_built(
        [
            ([1, 8, 10, 16], "INT8", None),
            ([4, 2], "INT32", paddings),
            (padded, "INT8", None),
            (padded, "INT8", None),
            (padded, "INT8", None),
        ],
        [("PAD", 2, [0, 1], [2], _options("Pad")), ("ADD", 2, [2, 3], [4], _options("Add"))],
    )
    (_, pad_maps, _, _), (_, add_maps, rule, uncertain) = _verdicts(model, multiple_subgraphs=True)
    assert pad_maps and add_maps is maps
    assert maps or (rule, uncertain) == ("one-sided-pad-operand", True)
