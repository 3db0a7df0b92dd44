"""The preflight follows the operator graph: tiny models converted here, each built to show one behaviour.

The compiler's behaviour these encode is evidenced by real logs (see test_preflight.py and
docs/ARCHITECTURE.md); here each is pinned on a model small enough to convert in a second.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.stages.edgetpu import (
    MAPPED,
    ONE_SUBGRAPH,
    REASON_DEPENDS,
    REASON_MAPPED,
    REASON_OWN,
    UNSPECIFIED,
    UNSUPPORTED_OP,
    UNSUPPORTED_RANK,
    Preflight,
    preflight,
)
from tests.conftest import REPO

ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"


def _branches(k: Any) -> Any:
    """conv -> {LeakyReLU -> conv, conv -> max-pool (an output)} -> concat -> conv."""
    inputs = k.Input(shape=(8, 8, 1), batch_size=1)
    x = k.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    a = k.layers.LeakyReLU(0.1)(x)  # not in Coral's table
    a = k.layers.Conv2D(4, 3, padding="same", activation="relu")(a)
    b = k.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    merged = k.layers.Conv2D(4, 1)(k.layers.Concatenate()([a, b]))
    return k.Model(inputs, [merged, k.layers.MaxPooling2D(2)(b)])


def _dense_head(k: Any) -> Any:
    """conv -> flatten -> dense: converted with a float input (QUANTIZE first) and int8 output."""
    inputs = k.Input(shape=(8, 8, 1), batch_size=1)
    x = k.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    return k.Model(inputs, k.layers.Dense(10)(k.layers.Flatten()(x)))


def _dilated(k: Any) -> Any:
    """A convolution dilated 2x2, then one dilated differently in x and y."""
    inputs = k.Input(shape=(8, 8, 1), batch_size=1)
    x = k.layers.Conv2D(4, 3, padding="same", dilation_rate=2)(inputs)
    return k.Model(inputs, k.layers.Conv2D(4, 3, padding="same", dilation_rate=(1, 2))(x))


def _rank5(k: Any) -> Any:
    """A rank-5 tensor with four dimensions larger than 1."""
    inputs = k.Input(shape=(8, 8, 1), batch_size=1)
    x = k.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    return k.Model(inputs, k.layers.ReLU()(k.layers.Reshape((2, 4, 4, 8))(x)))


MODELS: dict[str, tuple[Callable[[Any], Any], bool]] = {  # name -> (builder, float input)
    "branches": (_branches, False),
    "float_input": (_dense_head, True),
    "dilated": (_dilated, False),
    "rank5": (_rank5, False),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each model above, full-integer quantized (int8 output; int8 input unless it is the float-input one)."""
    import tasks  # noqa: F401  (Keras 2 before TensorFlow loads)
    from tasks.stages.fit import keras

    k = keras()
    k.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("graphs")
    paths = {}
    for name, (build, float_input) in MODELS.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(_convert(build(k), float_input))
    _fallback_first(paths["branches"], "LEAKY_RELU")
    return paths


def _convert(model: Any, float_input: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    samples = np.random.default_rng(0).random((8, 1, 8, 8, 1), dtype=np.float32)
    converter.representative_dataset = lambda: ([s] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not float_input:
        converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    with warnings.catch_warnings():
        # As in tasks.stages.quantize: the representative dataset is what supplies the input statistics.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return bytes(converter.convert())


def _fallback_first(path: Path, name: str) -> None:
    """Rewrite the model with `name` as early in the operator list as the data flow allows.

    The converter's operator order varies between runs; any topological order is a valid TFLite
    file, and this one puts the independent branch after the fallback, where an order-based cut
    would wrongly take it off the chip.
    """
    import heapq

    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(path.read_bytes()), 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = model.subgraphs[0].operators
    producer = {int(t): i for i, op in enumerate(ops) for t in op.outputs}
    needs = [{producer[int(t)] for t in op.inputs if int(t) in producer} for op in ops]
    code = [names[max(model.operatorCodes[op.opcodeIndex].builtinCode, 0)] for op in ops]
    ready = [(code[i] != name, i) for i in range(len(ops)) if not needs[i]]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for j in range(len(ops)):
            if i in needs[j]:
                needs[j].discard(i)
                if not needs[j]:
                    heapq.heappush(ready, (code[j] != name, j))
    model.subgraphs[0].operators = [ops[i] for i in order]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))


def _only(prediction: Preflight, name: str) -> int:
    [index] = [op.index for op in prediction.operators if op.name == name]
    return index


def test_the_branch_without_the_unsupported_operator_stays_on_the_edge_tpu(models: dict[str, Path]) -> None:
    prediction = preflight(models["branches"])
    leaky = _only(prediction, "LEAKY_RELU")
    ops = prediction.operators
    assert (ops[leaky].status, ops[leaky].reason, ops[leaky].because_of) == (UNSUPPORTED_OP, REASON_OWN, None)
    # Whatever reads the LeakyReLU's output, directly or not, falls back with it ...
    downstream = {i for i, op in enumerate(ops) if op.because_of == leaky}
    assert {ops[i].name for i in downstream} == {"CONV_2D", "CONCATENATION"}
    assert all(ops[i].status == ONE_SUBGRAPH and ops[i].reason == REASON_DEPENDS for i in downstream)
    # ... while the other branch maps, though it comes later in the file than the LeakyReLU.
    mapped = [op for op in ops if op.edgetpu]
    assert {op.name for op in mapped} == {"CONV_2D", "MAX_POOL_2D"}
    assert any(op.index > leaky for op in mapped), "the test needs a mapped operator after the fallback"
    assert all(op.status == MAPPED and op.reason == REASON_MAPPED and op.subgraph == 0 for op in mapped)
    assert prediction.mapped + len(downstream) + 1 == prediction.total
    assert prediction.subgraphs == 1 and prediction.uncertain == 0


def test_dependence_through_two_hops_names_the_operator_behind_it(models: dict[str, Path]) -> None:
    prediction = preflight(models["branches"])
    leaky = _only(prediction, "LEAKY_RELU")
    concat = _only(prediction, "CONCATENATION")
    # LEAKY_RELU -> CONV_2D -> CONCATENATION: two hops, and the JSON says so.
    report = json.loads(json.dumps(prediction.to_dict()))["operators"][concat]
    assert (report["reason"], report["because_of"], report["edgetpu"]) == (REASON_DEPENDS, leaky, False)
    assert report["status"] == ONE_SUBGRAPH and report["rule"] is None
    explanation = prediction.explanation
    assert explanation is not None and explanation.operator == f"#{leaky} LEAKY_RELU"
    assert explanation.dependents == 3 and "supported-operations table" in explanation.requirement


def test_several_subgraphs_keep_the_later_branch_and_split_at_the_join(models: dict[str, Path]) -> None:
    # With -a the operators after the fallback form more Edge TPU subgraphs; the CONCATENATION that
    # would join two of them runs on the CPU (as in retinanet_padded_multisubgraph's log).
    prediction = preflight(models["branches"], multiple_subgraphs=True)
    off = {op.name for op in prediction.operators if not op.edgetpu}
    assert off == {"LEAKY_RELU", "CONCATENATION"}
    assert prediction.subgraphs == 3
    concat = prediction.operators[_only(prediction, "CONCATENATION")]
    assert concat.status == ONE_SUBGRAPH and concat.because_of == _only(prediction, "LEAKY_RELU")


def test_float_input_quantize_stays_on_the_cpu_and_the_rest_maps(models: dict[str, Path]) -> None:
    prediction = preflight(models["float_input"])
    first, rest = prediction.operators[0], prediction.operators[1:]
    assert (first.name, first.edgetpu, first.status, first.reason) == ("QUANTIZE", False, UNSPECIFIED, REASON_OWN)
    assert first.rule == "float-input"
    assert rest and all(op.edgetpu for op in rest)
    assert prediction.subgraphs == 1 and prediction.first_fallback == first
    explanation = prediction.explanation
    assert explanation is not None and "io_dtype int8/uint8" in explanation.fix
    assert any("float32 [1, 8, 8, 1]" in tensor for tensor in explanation.tensors)
    assert explanation.dependents == 0


def test_dilated_convolutions_map(models: dict[str, Path]) -> None:
    prediction = preflight(models["dilated"])
    assert [op.name for op in prediction.operators] == ["CONV_2D", "CONV_2D"]
    assert prediction.mapped_fraction == 1.0 and prediction.explanation is None
    # The one dilated differently in x and y maps too (the compiler maps it); the user is told.
    assert any("dilates x by 2 and y by 1" in warning for warning in prediction.warnings)


def test_rank_5_tensor_is_explained_with_its_fix(models: dict[str, Path]) -> None:
    prediction = preflight(models["rank5"])
    fallback = prediction.first_fallback
    assert fallback is not None and fallback.status == UNSUPPORTED_RANK and fallback.reason == REASON_OWN
    explanation = prediction.explanation
    assert explanation is not None and "[1, 2, 4, 4, 8]" in explanation.problem
    assert explanation.fix.startswith("rank-5 tensor: reshape so at most 3 dimensions exceed 1")
    assert "innermost" in explanation.requirement and explanation.evidence
