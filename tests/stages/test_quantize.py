"""quantize: full-integer int8 with integer I/O, no float operator, and a float reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tasks.errors import StageError
from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import STAGES, images
from tasks.stages.edgetpu.preflight import preflight
from tasks.stages.fit import load_model
from tasks.stages.inference import TFLiteModel
from tasks.stages.quantize import debug_int8, qat_model, quantize_model, to_float_tflite, to_int8_tflite, to_ptq_tflite
from tests.conftest import repo_params


@pytest.fixture(scope="module")
def quantized(trained: tuple[Layout, Params]) -> tuple[Layout, Params]:
    layout, params = trained
    STAGES["quantize"](layout, params)
    return layout, params


def test_int8_model_has_integer_io_and_no_float_tensor(quantized: tuple[Layout, Params]) -> None:
    layout, _ = quantized
    model = TFLiteModel(layout.int8_tflite)
    assert model.input_dtype == np.int8
    assert model.output_dtype == np.int8
    kinds = {dtype.kind for dtype in model.tensor_dtypes()}
    assert "f" not in kinds, "a float tensor means a float operator survived quantization"


def test_float_reference_is_float(quantized: tuple[Layout, Params]) -> None:
    layout, _ = quantized
    assert TFLiteModel(layout.float_tflite).input_dtype == np.float32


# int8 weights take a quarter of float32's bytes; what the int8 file adds (per-channel scales and zero
# points, int32 biases) weighs more in a model of 30,000 weights: 0.36 of the float file measured.
# float16 weights would make it over half.
INT8_OF_FLOAT = 0.4


def test_int8_is_well_under_half_of_float(quantized: tuple[Layout, Params]) -> None:
    layout, _ = quantized
    assert layout.int8_tflite.stat().st_size <= INT8_OF_FLOAT * layout.float_tflite.stat().st_size
    report = json.loads(layout.quantize_report.read_text())
    assert report["quantized_bytes"] == layout.int8_tflite.stat().st_size
    assert report["method"] == "ptq" and [t["kept"] for t in report["trials"]] == [True]


def test_int8_agrees_with_keras(quantized: tuple[Layout, Params]) -> None:
    layout, params = quantized
    test_x, _ = images.load_test(layout, params.data).arrays()
    keras_top = np.argmax(load_model(layout.clustered_model).predict(test_x, verbose=0), axis=-1)
    int8_top = np.argmax(TFLiteModel(layout.int8_tflite).predict(test_x), axis=-1)
    # Near ties of the tiny sparse, clustered model break either way (0.95 measured); a broken
    # conversion agrees on about one image in ten.
    assert np.mean(keras_top == int8_top) >= 0.9


def test_uint8_io(quantized: tuple[Layout, Params], tmp_path) -> None:  # type: ignore[no-untyped-def]
    layout, _ = quantized
    params = repo_params(["quantize.io_dtype=uint8"])
    calibration = images.load_calibration(layout, params.data)
    path = tmp_path / "uint8.tflite"
    path.write_bytes(to_int8_tflite(load_model(layout.pruned_model), calibration, params.quantize))
    model = TFLiteModel(path)
    assert model.input_dtype == np.uint8 and model.output_dtype == np.uint8


@pytest.mark.parametrize("mode", ["dynamic_range", "float16"])
def test_other_ptq_modes_keep_float_io(quantized: tuple[Layout, Params], mode: str) -> None:
    layout, _ = quantized
    params = repo_params([f"quantize.ptq_mode={mode}"])
    calibration = images.load_calibration(layout, params.data)
    model_bytes = to_ptq_tflite(load_model(layout.pruned_model), calibration, params.quantize)
    path = layout.root / f"check_{mode}.tflite"
    path.write_bytes(model_bytes)
    model = TFLiteModel(path)
    dtypes = {dtype.name for dtype in model.tensor_dtypes()}
    assert model.input_dtype == np.float32 and model.output_dtype == np.float32
    # dynamic range stores weights as int8; float16 stores them as float16
    assert ("int8" if mode == "dynamic_range" else "float16") in dtypes
    float_size = layout.float_tflite.stat().st_size
    assert len(model_bytes) < (INT8_OF_FLOAT if mode == "dynamic_range" else 0.6) * float_size


def test_qat_layer_names_are_checked(quantized: tuple[Layout, Params]) -> None:
    layout, params = quantized
    settings = repo_params(["quantize.method=qat", "quantize.qat_layers=[dense, no_such_layer]"]).quantize
    fit, _ = images.load_fit_validation(layout, params.data)
    with pytest.raises(StageError, match=r"quantize\.qat_layers: no layer named no_such_layer"):
        qat_model(load_model(layout.pruned_model), fit, settings, False, 1, 32, seed=0)


@pytest.mark.slow  # QAT fine-tunes the model: about 25 s each
def test_auto_falls_back_to_qat_and_keeps_sparsity(quantized: tuple[Layout, Params]) -> None:
    layout, params = quantized
    # A tolerance of 5 points: PTQ on a black calibration image loses far more (it must fail it),
    # while one QAT epoch of the tiny model costs a point or two (1.4 measured), not this test's subject.
    overrides = [
        "quantize.method=auto",
        "quantize.qat_epochs=1",
        "quantize.max_trials=2",
        "quantize.tolerable_drop=0.05",
    ]
    settings = repo_params(overrides).quantize
    fit, validation = images.load_fit_validation(layout, params.data)
    calibration = images.load_calibration(layout, params.data)
    pruned = json.loads(layout.prune_report.read_text())["pruned_weights"]
    # A calibration set of one black image gives PTQ useless activation ranges: it must fail the
    # tolerance, while QAT learns its ranges in training and does not depend on it.
    black = np.zeros((1, *calibration.shape), np.float32)
    outcome = quantize_model(
        to_float_tflite(load_model(layout.float_model), settings.batch_size),
        load_model(layout.pruned_model),
        fit,
        validation,
        black,
        settings,
        32,
        0,
        tuple(pruned),
    )
    names = [trial.name for trial in outcome.trials]
    assert names[0] == "ptq_int8" and names[1].startswith("qat_")
    assert not outcome.trials[0].kept and "tolerable_drop" in outcome.trials[0].reason
    assert outcome.method == "qat" and outcome.trials[1].kept
    assert outcome.trials[1].drop <= settings.tolerable_drop
    assert outcome.sparsity_before is not None and outcome.sparsity_after is not None
    assert outcome.sparsity_after >= outcome.sparsity_before - 0.01  # prune-preserving QAT
    path = layout.root / "auto.tflite"
    path.write_bytes(outcome.model)
    model = TFLiteModel(path)
    assert model.input_dtype == np.int8 and "f" not in {d.kind for d in model.tensor_dtypes()}


@pytest.mark.slow  # QAT fine-tunes the model: about 25 s each
def test_qat_after_clustering_ships_the_zeros_or_refuses(quantized: tuple[Layout, Params]) -> None:
    """tfmot's prune-cluster-preserving QAT can lose a layer's zeros: never shipped silently."""
    layout, params = quantized
    settings = repo_params(["quantize.method=qat", "quantize.qat_epochs=1"]).quantize
    fit, validation = images.load_fit_validation(layout, params.data)
    pruned = tuple(json.loads(layout.prune_report.read_text())["pruned_weights"])
    try:
        outcome = quantize_model(
            to_float_tflite(load_model(layout.float_model), settings.batch_size),
            load_model(layout.clustered_model),
            fit,
            validation,
            images.load_calibration(layout, params.data),
            settings,
            32,
            0,
            pruned,
            clustered=True,
        )
    except StageError as error:
        assert "lost the pruned zeros" in str(error) and "quantize.method" in str(error)
        return
    assert outcome.sparsity_before is not None and outcome.sparsity_after is not None
    assert outcome.sparsity_after >= outcome.sparsity_before - 0.01


def test_qat_on_named_layers_converts_to_int8(quantized: tuple[Layout, Params]) -> None:
    layout, params = quantized
    settings = repo_params(["quantize.method=qat", "quantize.qat_layers=[dense, classes]"]).quantize
    fit, _ = images.load_fit_validation(layout, params.data)
    qat = qat_model(load_model(layout.pruned_model), fit, settings, False, 1, 32, seed=0)
    wrapped = {layer.name for layer in qat.layers if type(layer).__name__.startswith("Quantize")}
    assert {"quant_dense", "quant_classes"} <= wrapped
    assert "quant_conv" not in wrapped


def test_debugger_report_lists_layers_worst_first(quantized: tuple[Layout, Params]) -> None:
    layout, params = quantized
    rows = debug_int8(load_model(layout.pruned_model), images.load_calibration(layout, params.data), params.quantize)
    errors = [row["rmse_per_scale"] for row in rows]
    assert rows and errors == sorted(errors, reverse=True)
    assert (
        layout.quant_debug_csv.read_text().splitlines()[0].startswith("op_name")
        or "op_name" in layout.quant_debug_csv.read_text()
    )
    assert layout.quant_debug_plot.read_bytes()[:4] == b"\x89PNG"


def test_empty_calibration_set_is_refused(quantized: tuple[Layout, Params]) -> None:
    layout, params = quantized
    empty = np.zeros((0, 8, 8, 1), dtype=np.float32)
    with pytest.raises(StageError, match="calibration set has zero samples"):
        to_int8_tflite(load_model(layout.pruned_model), empty, params.quantize)


def test_qat_keeps_zeros_only_where_magnitude_pruning_made_them() -> None:
    """prune.json's pruned_weights decide: after channel pruning (none listed) no scheme freezes zeros."""
    from tasks.stages.quantize import qat_scheme

    assert qat_scheme(preserve_sparsity=True, preserve_clusters=False) == "prune-preserving"
    assert qat_scheme(preserve_sparsity=True, preserve_clusters=True) == "prune-cluster-preserving"
    assert qat_scheme(preserve_sparsity=False, preserve_clusters=True) == "cluster-preserving"
    assert qat_scheme(preserve_sparsity=False, preserve_clusters=False) == "default"


def test_the_shipped_batch_is_static_unless_asked(quantized: tuple[Layout, Params], tmp_path: Path) -> None:
    layout, params = quantized
    assert params.quantize.batch_size == 1  # params.yaml's default
    for path in (layout.int8_tflite, layout.float_tflite):
        assert TFLiteModel(path).input_shape == (1, 8, 8, 1)  # what the Edge TPU and a camera take
    assert not any("dynamic size" in w for w in preflight(layout.int8_tflite).warnings)
    model = load_model(layout.clustered_model)
    calibration = images.load_calibration(layout, params.data)
    test_x, _ = images.load_test(layout, params.data).head(45).arrays()
    reference = TFLiteModel(layout.int8_tflite).predict(test_x)
    for batch, shape in (("null", (None, 8, 8, 1)), ("4", (4, 8, 8, 1))):
        path = tmp_path / f"batch_{batch}.tflite"
        # A batch of 4: calibrated 4 images at a time (the last batch filled up), 45 images predicted in 12.
        path.write_bytes(to_int8_tflite(model, calibration, repo_params([f"quantize.batch_size={batch}"]).quantize))
        other = TFLiteModel(path)
        assert other.input_shape == shape
        assert np.array_equal(np.argmax(other.predict(test_x), axis=-1), np.argmax(reference, axis=-1))
    assert "dynamic size" in " ".join(preflight(tmp_path / "batch_null.tflite").warnings)
    assert preflight(tmp_path / "batch_4.tflite").mapped_fraction < 1.0  # 4-dimensional tensors: off the Edge TPU
