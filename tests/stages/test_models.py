"""Your own model: every train.model source through the whole flow, and every way it can be wrong.

Each source runs the real flow (Prefect, DVC, MLflow, tfmot, the converter) on the digits and must
end in a gated, registered int8 model that the Edge TPU preflight maps whole. The data are tiny;
the gate's accuracy checks are loose (the machinery is under test), the mapping check is not.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from flows.compress import RunReport, compress
from tasks import registry
from tasks.errors import StageError
from tasks.layout import Layout
from tasks.params import Params, load_params
from tasks.stages import images, models, prepare
from tasks.stages.models import build_model
from tests.conftest import EDGECOMPRESS, LOOSE_GATE, QUICK, TINY, make_project

T = TypeVar("T")

# Fully mapped, or the run fails: the one gate check these tests are about besides registration.
MAPPED = ["gate.min_edgetpu_mapped_fraction=1.0", "gate.max_edgetpu_subgraphs=1"]


# Layers with an Edge TPU int8 kernel (or that fold into one at conversion).
EDGETPU_FRIENDLY = {
    "InputLayer",
    "Rescaling",
    "Conv2D",
    "SeparableConv2D",
    "DepthwiseConv2D",
    "BatchNormalization",
    "ReLU",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling2D",
    "Flatten",
    "Dense",
}


@pytest.fixture
def own_tracking_store(monkeypatch: pytest.MonkeyPatch, prefect_server: None) -> Iterator[None]:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield


def project(tmp_path: Path, overrides: list[str]) -> Layout:
    return make_project(tmp_path / "project", overrides=[*TINY, *LOOSE_GATE, *MAPPED, *QUICK, *overrides])


def registered(report: RunReport) -> dict[str, Any]:
    assert report.gate is not None and report.gate.passed
    assert report.version is not None and report.version.new
    tags = registry.client(report.tracking_uri).get_model_version("edgecompress-digits", report.version.version).tags
    assert tags["gate.verdict"] == "passed"
    assert float(tags["edgetpu.mapped_fraction"]) == 1.0
    return tags


@pytest.mark.slow
@pytest.mark.usefixtures("own_tracking_store")
def test_mobilenet_v2_from_scratch(tmp_path: Path) -> None:
    layout = project(
        tmp_path,
        [
            "data.image_size=32",
            "data.channels=3",
            "train.model=mobilenet_v2",
            "train.alpha=0.35",
            "train.epochs=1",
            "train.stop_near_chance=false",  # one epoch from random weights may not beat chance yet
            "prune.epochs=1",
            # One epoch from random weights, then 90% sparsity and 8 clusters: plumbing, not
            # quality, so no accuracy threshold; the quality figure is the README's example.
            "gate.min_accuracy=null",
            "gate.max_accuracy_drop=null",
            "gate.max_relative_drop=null",
        ],
    )
    report = compress(project=str(layout.root))
    registered(report)
    metrics = json.loads(layout.metrics.read_text())
    assert metrics["variants"]["int8_tflite"]["input_dtype"] == "int8"
    assert metrics["variants"]["pruned"]["sparsity"] >= 0.84


def train_small_model(path: Path, layout: Layout, input_scale: str) -> float:
    """A small classifier as a user would bring it, trained on the digits, saved; its test accuracy."""
    import tf_keras as k

    params = load_params(layout.params_file)
    prepare.prepare(params.data, layout)
    x, y = images.load_split(layout.raw, "train", params.data).arrays()
    test_x, test_y = images.load_test(layout, params.data).arrays()
    scale = {"unit": 1 / 255.0, "pixels": 1.0}[input_scale]
    k.utils.set_random_seed(3)
    model = k.Sequential(
        [
            k.Input(shape=x.shape[1:]),
            k.layers.Conv2D(16, 3, padding="same", activation="relu"),
            k.layers.Flatten(),
            k.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x * scale, y, epochs=8, batch_size=32, verbose=0)
    model.save(path)
    return float(model.evaluate(test_x * scale, test_y, verbose=0)[1])


@pytest.mark.slow
@pytest.mark.usefixtures("own_tracking_store")
def test_a_keras_file_compressed_as_it_is(tmp_path: Path) -> None:
    mine = tmp_path / "mine.keras"
    layout = project(
        tmp_path, [f"train.model=file:{mine}", "train.epochs=0", "prune.enabled=false", "train.input_scale=unit"]
    )
    own_accuracy = train_small_model(mine, layout, "unit")
    report = compress(project=str(layout.root))
    registered(report)
    metrics = json.loads(layout.metrics.read_text())["variants"]
    assert metrics["float"]["accuracy"] == pytest.approx(own_accuracy, abs=1e-6)  # the same model, taking pixels
    assert abs(metrics["int8_tflite"]["accuracy"] - own_accuracy) <= 0.01
    # Its own [0, 1] input became pixels: a Rescaling layer in front, the int8 input at scale 1.
    quantized = json.loads(layout.quantize_report.read_text())
    assert quantized["input_scale"] == 1.0


BUILDER = textwrap.dedent(
    """
    import tf_keras as k


    def build(input_shape, num_classes):
        inputs = k.Input(shape=input_shape)
        x = k.layers.Rescaling(1 / 255.0)(inputs)
        x = k.layers.Conv2D(24, 3, padding="same", activation="relu")(x)
        x = k.layers.MaxPooling2D()(x)
        x = k.layers.Flatten()(x)
        x = k.layers.Dense(64, activation="relu")(x)
        return k.Model(inputs, k.layers.Dense(num_classes, activation="softmax")(x))


    def broken(input_shape, num_classes):
        raise RuntimeError("no GPU here")


    def not_a_model(input_shape, num_classes):
        return "a model"


    def exits(input_shape, num_classes):
        import sys

        sys.exit(3)
    """
)


@pytest.mark.slow
@pytest.mark.usefixtures("own_tracking_store")
def test_a_builder_in_the_project_with_uint8_frames(tmp_path: Path) -> None:
    layout = project(tmp_path, ["train.model=python:mymodels:build", "quantize.io_dtype=uint8"])
    (layout.root / "mymodels.py").write_text(BUILDER)
    report = compress(project=str(layout.root))
    tags = registered(report)
    quantized = json.loads(layout.quantize_report.read_text())
    # The camera's uint8 frame goes in as it is (scale 1, zero point 0), as Coral's examples feed it.
    assert quantized["input_dtype"] == "uint8" and quantized["takes_uint8_frames"]
    from tasks.stages.inference import TFLiteModel

    frames, labels = images.load_test(layout, load_params(layout.params_file).data).head(64).arrays()
    model = TFLiteModel(layout.quantized_tflite("int8"))
    as_uint8 = model.predict(frames.astype(np.uint8))
    assert np.array_equal(as_uint8, model.predict(frames))  # uint8 frames and float pixels agree
    assert np.mean(np.argmax(as_uint8, axis=-1) == labels) > 0.5
    assert tags["quantize.method"] == "ptq"
    # A changed builder re-runs train: the module is outside DVC's deps but recorded.
    (layout.root / "mymodels.py").write_text(BUILDER.replace("Conv2D(24", "Conv2D(20"))
    again = compress(project=str(layout.root))
    assert [o.name for o in again.stages if o.ran][:2] == ["train", "prune"]


# --- bad input: one line, nothing trained ---------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    layout = make_project(tmp_path_factory.mktemp("sources") / "project", overrides=TINY)
    prepare.prepare(load_params(layout.params_file).data, layout)
    (layout.root / "mymodels.py").write_text(BUILDER)
    return layout


def build_with(layout: Layout, overrides: list[str]) -> models.Built:
    from tasks.params import apply_overrides, parse_params, read_params_file

    params = parse_params(apply_overrides(read_params_file(layout.params_file), overrides))
    return models.build(params.train, (8, 8, 1), 10, layout.root)


@pytest.mark.slow
@pytest.mark.usefixtures("own_tracking_store")
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.model=file:missing.keras"], r"missing\.keras does not exist"),
        (["train.model=file:params.yaml"], r"params\.yaml is not a \.keras or \.h5 file"),
        (["train.model=file:fake.keras"], r"fake\.keras could not be loaded as a Keras model"),
        (["train.model=python:mymodels:broken"], r"raised RuntimeError: no GPU here"),
        (["train.model=python:mymodels:not_a_model"], r"returned a str, not a tf_keras\.Model"),
        (["train.model=python:mymodels:exits"], r"python:mymodels:exits\(\(8, 8, 1\), 10\) called sys\.exit\(3\)"),
        (["train.model=python:mymodels:absent"], r"mymodels has no function 'absent'"),
        (["train.model=python:nomodule:build"], r"cannot import 'nomodule'"),
        (["train.model=mobilenet_v2"], r"needs images of at least 32x32"),
    ],
)
def test_a_bad_source_is_one_line(prepared: Layout, overrides: list[str], message: str) -> None:
    (prepared.root / "fake.keras").write_bytes(b"not a zip file")
    with pytest.raises(StageError, match=message) as caught:
        build_with(prepared, overrides)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
@pytest.mark.usefixtures("own_tracking_store")
def test_a_model_that_does_not_fit_the_data_names_both_shapes(prepared: Layout) -> None:
    builder = (
        "import tf_keras as k\n"
        "def build(s, n):\n"
        "    return k.Sequential([k.Input((16, 16, 3)), k.layers.Flatten(), k.layers.Dense(n)])\n"
    )
    (prepared.root / "wrongshape.py").write_text(builder)
    with pytest.raises(StageError, match=r"takes input 16x16x3, the data is 8x8x1"):
        build_with(prepared, ["train.model=python:wrongshape:build"])
    (prepared.root / "wrongclasses.py").write_text(builder.replace("(16, 16, 3)", "s").replace("Dense(n)", "Dense(3)"))
    with pytest.raises(StageError, match=r"outputs 3, the data has 10 classes"):
        build_with(prepared, ["train.model=python:wrongclasses:build"])


@pytest.mark.slow
@pytest.mark.usefixtures("own_tracking_store")
def test_weights_that_do_not_fit_the_backbone(prepared: Layout, tmp_path: Path) -> None:
    import tf_keras as k

    other = k.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.5, include_top=False, weights=None)
    other.save_weights(tmp_path / "alpha_0.5_no_top.h5")
    overrides = ["train.model=mobilenet_v2", "train.alpha=0.35", f"train.weights={tmp_path / 'alpha_0.5_no_top.h5'}"]
    from tasks.params import apply_overrides, parse_params, read_params_file

    params = parse_params(apply_overrides(read_params_file(prepared.params_file), overrides))
    with pytest.raises(StageError, match=r"does not fit mobilenet_v2 at alpha 0\.35"):
        models.build(params.train, (32, 32, 3), 10, prepared.root)


@pytest.mark.slow
@pytest.mark.usefixtures("own_tracking_store")
def test_the_cli_says_it_in_one_line_and_writes_no_model(prepared: Layout) -> None:
    result = subprocess.run(
        [EDGECOMPRESS, "run", "-S", "train.model=file:missing.keras"],
        cwd=prepared.root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "missing.keras does not exist" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not prepared.float_model.exists() and not (prepared.root / "mlflow.db").exists()
    assert "file:missing.keras" not in prepared.params_file.read_text()  # a failed -S is not kept


def test_model_uses_only_edgetpu_friendly_layers(params: Params) -> None:
    model = build_model((8, 8, 1), 10, params.train)
    assert {type(layer).__name__ for layer in model.layers} <= EDGETPU_FRIENDLY
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("size", [8, 16, 31, 64, 96, 224])
def test_the_cnn_fits_any_image_size(params: Params, size: int) -> None:
    model = build_model((size, size, 3), 8, params.train)
    assert {type(layer).__name__ for layer in model.layers} <= EDGETPU_FRIENDLY
    # Downsampled to at most 2x2 before the global average, whatever the size: no Flatten whose
    # Dense grows with the image (at 64x64 the old one held 8.4 M weights).
    assert model.get_layer("average").input_shape[1:3] in ((2, 2), (1, 1))
    # Under 0.3 MB of int8 weights even at 224x224: a small share of the Edge TPU's ~8 MiB on-chip cache.
    assert model.count_params() < 300_000


def test_conv_filters_and_dense_units_shape_the_cnn(params: Params) -> None:
    # Two settings a sweep varies (-S train.dense_units=32,64): each must change the model it names.
    settings = params.train.model_copy(update={"conv_filters": 8, "dense_units": 32})
    model = build_model((64, 64, 3), 8, settings)
    assert model.get_layer("conv").filters == 8
    assert model.get_layer("block4_sepconv").filters == 64  # doubled per block, up to 8 times the stem
    assert model.get_layer("dense").units == 32 and model.get_layer("classes").input_shape == (None, 32)
    wider = build_model((64, 64, 3), 8, settings.model_copy(update={"dense_units": 64}))
    # 32 more hidden units, each with 64 inputs and a bias, and 8 more classifier weights each
    assert wider.count_params() - model.count_params() == 32 * (64 + 1) + 32 * 8


def test_the_cnn_maps_whole_to_the_edge_tpu_at_224_with_a_static_batch_of_1(params: Params, tmp_path: Path) -> None:
    from tasks.stages.edgetpu.preflight import preflight
    from tasks.stages.inference import TFLiteModel
    from tasks.stages.quantize import to_int8_tflite

    model = build_model((224, 224, 3), 8, params.train)
    calibration = np.random.default_rng(0).uniform(0, 255, (4, 224, 224, 3)).astype(np.float32)
    path = tmp_path / "cnn224.tflite"
    path.write_bytes(to_int8_tflite(model, calibration, params.quantize))
    assert TFLiteModel(path).input_shape == (1, 224, 224, 3)  # quantize.batch_size: 1, static
    verdict = preflight(path)
    assert (verdict.mapped_fraction, verdict.subgraphs, verdict.error) == (1.0, 1, None)
    assert not any("dynamic size" in warning for warning in verdict.warnings)


def test_build_is_seeded(params: Params) -> None:
    first = build_model((8, 8, 1), 10, params.train).get_weights()
    second = build_model((8, 8, 1), 10, params.train).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


# --- a model file runs no code of its own --------------------------------------------------------


def save_as(model: Any, path: Path) -> Path:
    """The model in the format its path names: .h5, .keras, or a SavedModel folder."""
    if path.suffix in (".h5", ".keras"):
        model.save(path)
    else:
        model.save(path, save_format="tf")
    return path


@pytest.mark.parametrize("name", ["model.h5", "model.keras", "saved_model"])
def test_a_lambda_in_a_model_file_is_refused_and_never_runs(tmp_path: Path, name: str) -> None:
    """Keras' safe mode covers .keras archives only; a .h5 file or SavedModel ran the lambda on load."""
    import tf_keras as k

    ran = tmp_path / "the lambda ran"
    # A real lambda, marshalled into the file with its code; it leaves a file behind when it runs.
    touch = eval(f"lambda t: (open({str(ran)!r}, 'w').close(), t)[1]")
    inputs = k.Input((8, 8, 1))
    x = k.layers.Flatten()(k.layers.Lambda(touch, name="sneaky")(inputs))
    path = save_as(k.Model(inputs, k.layers.Dense(10, activation="softmax")(x)), tmp_path / name)
    assert ran.exists()  # building (and tracing for a SavedModel) called it
    ran.unlink()
    with pytest.raises(StageError, match=r"holds a Lambda layer 'sneaky', Python code that edgecompress does not run"):
        models.load_user_model(path)
    assert not ran.exists()


def test_a_custom_layer_without_its_class_gets_the_documented_hint(tmp_path: Path) -> None:
    """The hint names the class and the builder route, in Keras' own wording for each format."""
    import tf_keras as k

    @k.utils.register_keras_serializable(package="mine")
    class Doubler(k.layers.Layer):  # type: ignore[misc]
        def call(self, inputs: Any) -> Any:
            return inputs * 2.0

    inputs = k.Input((8, 8, 1))
    outputs = k.layers.Dense(10, activation="softmax")(k.layers.Flatten()(Doubler()(inputs)))
    model = k.Model(inputs, outputs)
    saved = [save_as(model, tmp_path / "model.keras"), save_as(model, tmp_path / "model.h5")]
    del k.saving.get_custom_objects()["mine>Doubler"]  # loaded where the class is not known, as by a user
    for path, name in zip(saved, ["Doubler", "mine>Doubler"], strict=True):
        with pytest.raises(StageError) as caught:
            models.load_user_model(path)
        assert str(caught.value).startswith(f"train.model: {path} needs the custom object '{name}'"), caught.value
        assert "custom_object_scope" in str(caught.value)


# --- train.input_scale: a Rescaling layer in front of any model the README admits, flat ----------


def returns_within(seconds: float, call: Callable[[], T]) -> T:
    """call()'s result; fails the test (instead of hanging it) when it has not returned after `seconds`."""
    result: list[T] = []
    worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert result, f"did not return within {seconds} s"
    return result[0]


def with_random_weights(model: Any) -> Any:
    """The model with every weight drawn at random (batch-norm variances positive), so that copying them shows."""
    rng = np.random.default_rng(7)
    model.set_weights(
        [
            rng.uniform(0.5, 1.5, w.shape) if "variance" in w.name else rng.normal(0.0, 0.5, w.shape)
            for w in model.weights
        ]
    )
    return model


def branching(name: str = "branching") -> Any:
    """Functional, with what held-out models have: residual Add, Concatenate, batch norm, depthwise, a shared layer."""
    import tf_keras as k

    inputs = k.Input(shape=(8, 8, 1))
    x = k.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = k.layers.BatchNormalization()(x)
    a = k.layers.ReLU(6.0)(x)
    b = k.layers.DepthwiseConv2D(3, padding="same")(a)
    b = k.layers.BatchNormalization()(b)
    x = k.layers.Add()([a, b])
    shared = k.layers.Conv2D(8, 1, padding="same")
    x = k.layers.Concatenate()([shared(x), shared(a)])
    x = k.layers.GlobalAveragePooling2D()(x)
    return k.Model(inputs, k.layers.Dense(10)(x), name=name)


def nested() -> Any:
    """A functional model that calls a functional model and a Sequential one as layers."""
    import tf_keras as k

    head = k.Sequential([k.Input(shape=(10,)), k.layers.Dense(10, name="dense"), k.layers.Softmax()], name="head")
    inputs = k.Input(shape=(8, 8, 1))
    return k.Model(inputs, head(branching("body")(inputs)), name="nested")


def sequential() -> Any:
    import tf_keras as k

    return k.Sequential(
        [
            k.Input(shape=(8, 8, 1)),
            k.layers.Conv2D(4, 3),
            k.layers.BatchNormalization(),
            k.layers.Flatten(),
            k.layers.Dense(10),
        ]
    )


@pytest.mark.parametrize("make", [branching, nested, sequential])
@pytest.mark.parametrize("scale", ["unit", "symmetric"])
def test_input_scale_rebuilds_any_model_flat_and_equal(make: Callable[[], Any], scale: str) -> None:
    import tf_keras as k

    model = with_random_weights(make())
    scaled = returns_within(60, lambda: models.with_input_scale(model, scale))
    kinds = [type(layer).__name__ for layer in scaled.layers]
    assert kinds[:2] == ["InputLayer", "Rescaling"]
    assert not any(isinstance(layer, k.Model) for layer in scaled.layers)  # flat: tfmot can prune and quantize it
    assert scaled.count_params() == model.count_params()  # the shared layer stays one layer
    pixels = np.random.default_rng(0).uniform(0, 255, (6, 8, 8, 1)).astype(np.float32)
    factor, offset = models.INPUT_SCALES[scale] or (1.0, 0.0)
    expected = model.predict(pixels * factor + offset, verbose=0)
    np.testing.assert_allclose(scaled.predict(pixels, verbose=0), expected, rtol=1e-5, atol=1e-5)


def test_pixels_flattens_a_nested_model_and_keeps_a_flat_one() -> None:
    import tf_keras as k

    model = with_random_weights(nested())
    flat = returns_within(60, lambda: models.with_input_scale(model, "pixels"))
    assert not any(isinstance(layer, k.Model) for layer in flat.layers)
    assert "Rescaling" not in [type(layer).__name__ for layer in flat.layers]
    pixels = np.random.default_rng(0).uniform(0, 255, (6, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(flat.predict(pixels, verbose=0), model.predict(pixels, verbose=0), rtol=1e-5, atol=1e-5)
    already = branching()
    assert models.with_input_scale(already, "pixels") is already


def test_a_subclassed_model_cannot_be_rescaled_and_says_so() -> None:
    import tf_keras as k

    class Mine(k.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.dense = k.layers.Dense(10)

        def call(self, inputs: Any) -> Any:
            return self.dense(k.layers.Flatten()(inputs))

    model = Mine()
    model.build((None, 8, 8, 1))
    inputs = k.Input(shape=(8, 8, 1))
    wrapper = k.Model(inputs, model(inputs))  # a functional model around a subclassed one
    with pytest.raises(StageError, match=r"subclassed Keras model.*train\.input_scale: pixels") as caught:
        models.with_input_scale(wrapper, "unit")
    assert "\n" not in str(caught.value)
