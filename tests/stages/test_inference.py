"""TFLiteModel: Keras-compatible predict/evaluate on LiteRT, its kernel choices, the Edge TPU paths, bad files."""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.errors import StageError
from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import images, quantize
from tasks.stages.fit import compile_model, load_model
from tasks.stages.inference import EDGETPU_CUSTOM_OP, EDGETPU_LIBRARY, TFLiteModel, custom_ops, is_edgetpu_model

# Float .tflite against Keras: the same float32 graph, kernels that sum in a different order.
FLOAT_ATOL = 1e-4
# Share of test images on which the int8 model must pick the class of the Keras model it was made
# from (as in test_quantize). The tiny model, 90% sparse with 8 weight values per layer, has many
# near ties that int8 may break either way (0.95 measured); a broken conversion agrees on ~0.1.
INT8_AGREEMENT = 0.9


@pytest.fixture(scope="module")
def quantized(trained: tuple[Layout, Params]) -> tuple[Layout, Params]:
    """The trained folder with its float and int8 .tflite (quantize runs once if no test made them yet)."""
    layout, params = trained
    if not layout.int8_tflite.is_file() or not layout.float_tflite.is_file():
        quantize.run(layout, params)
    return layout, params


@dataclass(frozen=True)
class Split:
    """The test split as arrays (it is small): pixel values and labels."""

    x: np.ndarray
    y: np.ndarray


@pytest.fixture(scope="module")
def test_split(quantized: tuple[Layout, Params]) -> Split:
    layout, params = quantized
    return Split(*images.load_test(layout, params.data).arrays())


@pytest.fixture(scope="module")
def keras_float(quantized: tuple[Layout, Params]) -> Any:
    return load_model(quantized[0].float_model)


@pytest.fixture(scope="module")
def dynamic_batch(quantized: tuple[Layout, Params], keras_float: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The float model converted with a dynamic batch dimension (quantize.batch_size: null)."""
    from tasks.stages.quantize import to_float_tflite

    path = tmp_path_factory.mktemp("dynamic") / "dynamic.tflite"
    path.write_bytes(to_float_tflite(keras_float, None))
    return path


def edgetpu_like(source: Path, out: Path) -> Path:
    """A .tflite shaped like edgetpu_compiler's output: the I/O tensors around one edgetpu-custom-op.

    Made with the TFLite schema's object API from a converted int8 model; only the Edge TPU
    runtime can execute it, as with a real compiled model.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(source.read_bytes()), 0))
    subgraph = model.subgraphs[0]
    tensor_in, tensor_out = subgraph.tensors[subgraph.inputs[0]], subgraph.tensors[subgraph.outputs[0]]
    tensor_in.buffer = tensor_out.buffer = 0  # buffer 0 is the schema's empty sentinel
    subgraph.tensors, subgraph.inputs, subgraph.outputs = [tensor_in, tensor_out], [0], [1]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = EDGETPU_CUSTOM_OP
    code.version = 1
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    op.customOptions = list(b"compiled-executable")  # stands in for the compiled Edge TPU program
    subgraph.operators = [op]
    model.operatorCodes, model.buffers = [code], [schema.BufferT()]
    model.signatureDefs = model.metadata = model.metadataBuffer = None  # they index the dropped tensors
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out.write_bytes(bytes(builder.Output()))
    return out


def libedgetpu_installed() -> bool:
    try:
        ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError:
        return False
    return True


# --- predict and evaluate, as Keras ---------------------------------------------------------------


def test_predict_has_keras_shape_and_dtype(
    quantized: tuple[Layout, Params], test_split: Split, keras_float: Any
) -> None:
    layout, _ = quantized
    expected = keras_float.predict(test_split.x, verbose=0)
    for path in (layout.float_tflite, layout.int8_tflite):
        predicted = TFLiteModel(path).predict(test_split.x)
        assert predicted.shape == expected.shape, path.name
        assert predicted.dtype == expected.dtype == np.float32, path.name


def test_int8_argmax_agrees_with_its_keras_model(quantized: tuple[Layout, Params], test_split: Split) -> None:
    layout, _ = quantized
    keras_top = np.argmax(load_model(layout.clustered_model).predict(test_split.x, verbose=0), axis=-1)
    int8_top = np.argmax(TFLiteModel(layout.int8_tflite).predict(test_split.x), axis=-1)
    assert np.mean(keras_top == int8_top) >= INT8_AGREEMENT


def test_int8_output_is_dequantized_probabilities(quantized: tuple[Layout, Params], test_split: Split) -> None:
    layout, _ = quantized
    model = TFLiteModel(layout.int8_tflite)
    assert model.output_dtype == np.int8
    probabilities = model.predict(test_split.x)
    # Raw int8 codes would reach -128..127; dequantized softmax outputs stay in [0, 1] and sum to ~1.
    assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0
    assert np.allclose(probabilities.sum(axis=-1), 1.0, atol=0.05)


def test_float_tflite_matches_keras(quantized: tuple[Layout, Params], test_split: Split, keras_float: Any) -> None:
    layout, _ = quantized
    expected = keras_float.predict(test_split.x, verbose=0)
    assert np.allclose(TFLiteModel(layout.float_tflite).predict(test_split.x), expected, atol=FLOAT_ATOL)


def test_evaluate_matches_keras_evaluate(quantized: tuple[Layout, Params], test_split: Split) -> None:
    layout, params = quantized
    model = load_model(layout.float_model)
    compile_model(model, params.train.learning_rate)
    keras_loss, keras_accuracy = model.evaluate(test_split.x, test_split.y, batch_size=64, verbose=0)
    loss, accuracy = TFLiteModel(layout.float_tflite).evaluate(test_split.x, test_split.y, batch_size=64)
    assert loss == pytest.approx(keras_loss, rel=1e-3, abs=1e-4)
    assert accuracy == pytest.approx(keras_accuracy, abs=1.0 / len(test_split.y))


def test_evaluate_worsens_with_wrong_labels(quantized: tuple[Layout, Params], test_split: Split) -> None:
    layout, _ = quantized
    model = TFLiteModel(layout.int8_tflite)
    classes = int(test_split.y.max()) + 1
    loss, accuracy = model.evaluate(test_split.x, test_split.y)
    wrong_loss, wrong_accuracy = model.evaluate(test_split.x, (test_split.y + 1) % classes)
    assert wrong_loss > loss and wrong_accuracy < accuracy


def test_batch_size_does_not_change_predictions(
    quantized: tuple[Layout, Params], test_split: Split, dynamic_batch: Path
) -> None:
    layout, _ = quantized
    x = test_split.x
    # Sizes that divide len(x), leave a remainder, exceed it, and alternate (each call resizes a
    # dynamic model; the shipped ones take their fixed batch of 1 whatever is asked).
    sizes = [1, 7, 32, len(x) + 5, 7]
    for path in (layout.float_tflite, layout.int8_tflite, dynamic_batch):
        model = TFLiteModel(path)
        reference = model.predict(x, batch_size=len(x))
        for size in sizes:
            assert np.allclose(model.predict(x, batch_size=size), reference, atol=FLOAT_ATOL), (path.name, size)


def test_builtin_and_xnnpack_pick_the_same_class(quantized: tuple[Layout, Params], test_split: Split) -> None:
    layout, _ = quantized
    for path, floor in ((layout.float_tflite, 0.99), (layout.int8_tflite, 0.99)):
        xnnpack = TFLiteModel(path, op_resolver="xnnpack").predict(test_split.x)
        builtin = TFLiteModel(path, op_resolver="builtin").predict(test_split.x)
        # The kernel sets round differently (int8 requantization, float summation order): a near tie may flip.
        agreement = np.mean(np.argmax(xnnpack, axis=-1) == np.argmax(builtin, axis=-1))
        assert agreement >= floor, (path.name, agreement)


def test_fixed_batch_one_model_runs_sample_by_sample(
    quantized: tuple[Layout, Params], test_split: Split, dynamic_batch: Path
) -> None:
    layout, _ = quantized
    model = TFLiteModel(layout.float_tflite)  # the shipped files' batch is 1 (quantize.batch_size)
    assert model.fixed_batch == 1 and model.input_shape[0] == 1
    dynamic = TFLiteModel(dynamic_batch)
    assert dynamic.fixed_batch is None and dynamic.input_shape[0] is None
    x = test_split.x[:45]  # not a multiple of batch_size: the last chunk is partial
    assert np.allclose(model.predict(x, batch_size=16), dynamic.predict(x), atol=FLOAT_ATOL)
    assert model.latency_ms(x[0], runs=3) > 0


def test_num_threads_is_passed_to_the_interpreter(quantized: tuple[Layout, Params], test_split: Split) -> None:
    layout, _ = quantized
    one, two = TFLiteModel(layout.float_tflite, num_threads=1), TFLiteModel(layout.float_tflite, num_threads=2)
    assert (one.num_threads, two.num_threads) == (1, 2)
    assert np.allclose(one.predict(test_split.x), two.predict(test_split.x), atol=FLOAT_ATOL)
    for bad in (0, -1, 1.5):
        with pytest.raises(StageError, match="num_threads"):
            TFLiteModel(layout.float_tflite, num_threads=bad)  # type: ignore[arg-type]


def test_unknown_options_are_refused(quantized: tuple[Layout, Params]) -> None:
    layout, _ = quantized
    with pytest.raises(StageError, match="op_resolver"):
        TFLiteModel(layout.float_tflite, op_resolver="gpu")  # type: ignore[arg-type]
    with pytest.raises(StageError, match="edgetpu"):
        TFLiteModel(layout.float_tflite, edgetpu="yes")  # type: ignore[arg-type]


def test_wrong_input_shape_and_empty_input(quantized: tuple[Layout, Params], test_split: Split) -> None:
    layout, _ = quantized
    model = TFLiteModel(layout.int8_tflite)
    with pytest.raises(ValueError, match="expected"):
        model.predict(test_split.x[:, :-1])
    empty = model.predict(test_split.x[:0])
    assert empty.shape == (0, *model.predict(test_split.x[:1]).shape[1:])


# --- the Edge TPU -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled(quantized: tuple[Layout, Params], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return edgetpu_like(quantized[0].int8_tflite, tmp_path_factory.mktemp("edgetpu") / "model_int8_edgetpu.tflite")


def test_edgetpu_custom_op_is_detected(quantized: tuple[Layout, Params], compiled: Path) -> None:
    layout, _ = quantized
    assert custom_ops(compiled.read_bytes()) == {EDGETPU_CUSTOM_OP}
    assert is_edgetpu_model(compiled)
    assert not is_edgetpu_model(layout.int8_tflite)


@pytest.mark.skipif(libedgetpu_installed(), reason="libedgetpu is installed: the missing-runtime path cannot run")
@pytest.mark.parametrize("mode", ["auto", "require"])
def test_compiled_model_without_runtime_names_the_fix(compiled: Path, mode: str) -> None:
    with pytest.raises(StageError) as raised:
        TFLiteModel(compiled, edgetpu=mode)  # type: ignore[arg-type]
    message = str(raised.value)
    assert "\n" not in message
    assert str(compiled) in message and "libedgetpu" in message and "libedgetpu1-std" in message


def test_compiled_model_with_edgetpu_off_is_refused(compiled: Path) -> None:
    # Without the delegate the interpreter cannot resolve the custom op: say so before it does.
    with pytest.raises(StageError, match="compiled for the Edge TPU"):
        TFLiteModel(compiled, edgetpu="off")


def test_plain_model_with_edgetpu_required_is_refused(quantized: tuple[Layout, Params]) -> None:
    layout, _ = quantized
    with pytest.raises(StageError, match=r"not compiled for the Edge TPU.*edgetpu_compiler"):
        TFLiteModel(layout.int8_tflite, edgetpu="require")
    assert not TFLiteModel(layout.int8_tflite, edgetpu="auto").on_edgetpu


# --- bad files ------------------------------------------------------------------------------------


def _bad_files(folder: Path, good: Path) -> dict[str, Path]:
    text = folder / "notes.tflite"
    text.write_text("not a model\n")
    truncated = folder / "truncated.tflite"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    header_only = folder / "header_only.tflite"
    header_only.write_bytes(good.read_bytes()[:64])
    return {"missing": folder / "missing.tflite", "text": text, "truncated": truncated, "header_only": header_only}


def test_bad_files_raise_one_line_naming_the_file(quantized: tuple[Layout, Params], tmp_path: Path) -> None:
    layout, _ = quantized
    for kind, path in _bad_files(tmp_path, layout.float_tflite).items():
        with pytest.raises(StageError) as raised:
            TFLiteModel(path)
        message = str(raised.value)
        assert str(path) in message and "\n" not in message, kind


# --- the benchmark --------------------------------------------------------------------------------


@pytest.mark.slow
def test_benchmark_quick_writes_the_documented_shape(quantized: tuple[Layout, Params], tmp_path: Path) -> None:
    from benchmarks import compression

    out = tmp_path / "benchmark.json"
    # Reuse the trained folder's models and data instead of training again.
    compression.main(["--quick", "--out", str(out), "--project", str(quantized[0].root)])
    report = json.loads(out.read_text())
    assert set(report) >= {"models", "keras_vs_tflite", "machine"}
    assert set(report["models"]) == {"default", "mobilenet_v2"}
    for name, result in report["models"].items():
        assert result["variants"], name
        for variant, values in result["variants"].items():
            assert values["size_bytes"] > values["gzip_bytes"] > 0, (name, variant)
            assert set(values["latency_ms"]) == {"xnnpack", "builtin"}, (name, variant)
            assert all(ms > 0 for ms in values["latency_ms"].values()), (name, variant)
        assert set(result["ratios"]) == set(result["targets"]), name
        for ratio, value in result["ratios"].items():
            assert isinstance(value, int | float) and not isinstance(value, bool), ratio
            # A drop can be zero or negative, and so can an overhead measured on a busy machine.
            if not ratio.endswith(("_accuracy_drop_points", "_overhead_vs_raw")):
                assert value > 0, ratio
            assert isinstance(result["targets"][ratio]["pass"], bool), ratio
    assert all("accuracy" in values for values in report["models"]["default"]["variants"].values())
    assert not any("accuracy" in values for values in report["models"]["mobilenet_v2"]["variants"].values())
    assert set(report["models"]["default"]["variants"]) == {
        "float",
        "dynamic_range",
        "float16",
        "int8",
        "pruned_int8",
        "pruned_clustered_int8",
        "pruned_qat_int8",
    }
    assert set(report["models"]["default"]["steps"]) == {"int8", "pruned_int8", "pruned_clustered_int8"}
