"""Model sources: where the float model comes from, one table that the train stage asks.

| `train.model`                 | what it gives                                                        |
|-------------------------------|----------------------------------------------------------------------|
| `cnn`                         | the built-in Edge TPU friendly CNN (build_model below)               |
| `mobilenet_v2`                | tf_keras.applications.MobileNetV2 at data.image_size, width alpha    |
| `mobilenet_v3_small`          | MobileNetV3Small, minimalistic (ReLU, no squeeze-excite: Edge TPU)   |
| `file:<path>`                 | a user's .keras / .h5 / SavedModel; no code from the file runs       |
| `python:<module>:<function>`  | function(input_shape, num_classes) -> tf_keras.Model, from the project |

Whatever the source, the model takes raw pixel values (0 to 255) and its normalisation is a layer
inside it, so the shipped .tflite takes a camera frame as it is. Nothing downstream knows which
source made the model, and every source is checked against the data (input shape, class count)
before anything trains.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.errors import StageError, clip, echo
from tasks.fsutil import check_path_length
from tasks.params import TrainParams
from tasks.stages.fit import keras, seed_everything

if TYPE_CHECKING:
    import tf_keras

log = logging.getLogger(__name__)

# MobileNets from random initialisation: Keras' batch-norm momentum of 0.999 leaves the moving
# statistics near their initial values for thousands of steps, so a model trained for a few hundred
# evaluates at chance (measured: MobileNetV2 alpha 0.35, 96x96 digits, 8 epochs: 10.8% test
# accuracy; with 0.9: 95.8% after 10). Pretrained statistics keep Keras' value.
SCRATCH_BATCHNORM_MOMENTUM = 0.9

# What `train.input_scale` says a file: or python: model expects; edgecompress puts the matching
# layer in front so that the saved model takes pixels. (scale, offset) of tf_keras' Rescaling.
INPUT_SCALES: dict[str, tuple[float, float] | None] = {
    "pixels": None,  # 0..255: the model normalises itself
    "unit": (1.0 / 255.0, 0.0),  # 0..1
    "symmetric": (1.0 / 127.5, -1.0),  # -1..1, as MobileNet and EfficientNet-lite expect
}


@dataclass(frozen=True)
class Built:
    """A model from a source, and whether it arrives trained (and so may be compressed as it is)."""

    model: tf_keras.Model
    pretrained: bool
    # The number of layers that make the backbone (transfer learning freezes them first); 0: none.
    backbone_layers: int = 0


# The built-in CNN's shape (build_model): a stride-2 stem from STRIDED_STEM_FROM pixels up (smaller
# images keep every pixel), then blocks that each halve the image until it is FINAL_SIZE across or less,
# their widths doubling per block up to MAX_WIDTH times train.conv_filters.
STRIDED_STEM_FROM = 32
FINAL_SIZE = 2
MAX_WIDTH = 8
# From random initialisation, Keras' batch-norm momentum of 0.99 leaves the moving statistics behind
# the weights for the first few hundred steps: on a 64 px folder the validation accuracy sat at
# exactly chance for four epochs while the training accuracy rose. 0.9 follows within an epoch.
BATCHNORM_MOMENTUM = 0.9


def build_model(input_shape: tuple[int, int, int], num_classes: int, params: TrainParams) -> tf_keras.Model:
    """Pixels -> rescale -> conv stem -> separable blocks, each halving the image -> global average -> Dense -> softmax.

    Fit for any image size: as many downsampling blocks as halve the image to FINAL_SIZE or less
    (two at 8x8, four at 64x64, six at 224x224), and global average pooling makes the classifier's
    size independent of the image's (at 224x224 RGB, train.conv_filters 32: about 290,000 weights,
    under 0.3 MB in int8, less than 4% of the Edge TPU's 8 MiB on-chip cache). Every layer has an int8
    Edge TPU kernel (the rescale becomes an int8 multiply, BatchNorm folds into the convolution at
    conversion, the global average is a MEAN over height and width), so the whole graph maps to the
    TPU as one subgraph.
    """
    k = keras()
    seed_everything(params.seed)
    inputs = k.Input(shape=input_shape, name="image")
    x = k.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)  # pixels in, as a camera gives them
    size = int(min(input_shape[0], input_shape[1]))
    stride = 2 if size >= STRIDED_STEM_FROM else 1
    x = k.layers.Conv2D(params.conv_filters, 3, strides=stride, padding="same", use_bias=False, name="conv")(x)
    x = k.layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM, name="conv_bn")(x)
    x = k.layers.ReLU(name="conv_relu")(x)
    size = -(-size // stride)
    filters, block = params.conv_filters, 0
    while size > FINAL_SIZE:
        block += 1
        filters = min(2 * filters, MAX_WIDTH * params.conv_filters)
        x = k.layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_sepconv")(x)
        x = k.layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM, name=f"block{block}_bn")(x)
        x = k.layers.ReLU(name=f"block{block}_relu")(x)
        x = k.layers.MaxPooling2D(2, padding="same", name=f"block{block}_pool")(x)
        size = -(-size // 2)
    x = k.layers.GlobalAveragePooling2D(name="average")(x)
    x = k.layers.Dense(params.dense_units, activation="relu", name="dense")(x)
    outputs = k.layers.Dense(num_classes, activation="softmax", name="classes")(x)
    return k.Model(inputs, outputs, name="edgecompress_cnn")


def _cnn(input_shape: tuple[int, int, int], num_classes: int, params: TrainParams, root: Path) -> Built:
    return Built(build_model(input_shape, num_classes, params), pretrained=False)


def _mobilenet(variant: str) -> Callable[[tuple[int, int, int], int, TrainParams, Path], Built]:
    def build(input_shape: tuple[int, int, int], num_classes: int, params: TrainParams, root: Path) -> Built:
        k = keras()
        if input_shape[0] < 32 or input_shape[1] < 32:
            raise StageError(f"train.model {variant}: needs images of at least 32x32; raise data.image_size")
        inputs = k.Input(shape=input_shape, name="image")
        if variant == "mobilenet_v2":
            # MobileNetV2 expects -1..1; V3 rescales inside itself (include_preprocessing).
            x = k.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
            base = k.applications.MobileNetV2(
                input_tensor=x, alpha=params.alpha, include_top=False, weights=None, pooling="avg"
            )
        else:
            base = k.applications.MobileNetV3Small(
                input_tensor=inputs,
                alpha=params.alpha,
                minimalistic=True,
                include_top=False,
                weights=None,
                pooling="avg",
                include_preprocessing=True,
            )
        if params.weights:
            _load_backbone_weights(base, resolve(root, params.weights), variant, params.alpha)
        else:
            for layer in base.layers:
                if isinstance(layer, k.layers.BatchNormalization):
                    layer.momentum = SCRATCH_BATCHNORM_MOMENTUM
        outputs = k.layers.Dense(num_classes, activation="softmax", name="classes")(base.output)
        return Built(k.Model(inputs, outputs, name=variant), pretrained=False, backbone_layers=len(base.layers))

    return build


def _load_backbone_weights(base: Any, path: Path, variant: str, alpha: float) -> None:
    if not check_path_length("train.weights", path).is_file():
        raise StageError(f"train.weights: {path} does not exist (a local weights file; nothing is downloaded)")
    try:
        base.load_weights(str(path))
    except (ValueError, OSError, KeyError) as error:
        reason = " ".join(str(error).split())[:160]
        raise StageError(
            f"train.weights: {path} does not fit {variant} at alpha {alpha} without its top ({reason}); "
            "use the matching '..._no_top' weights file"
        ) from None


def resolve(root: Path, location: str) -> Path:
    """A path from params.yaml: absolute, or relative to the project folder."""
    path = Path(location).expanduser()
    return path if path.is_absolute() else root / path


def _file(location: str) -> Callable[[tuple[int, int, int], int, TrainParams, Path], Built]:
    def load(input_shape: tuple[int, int, int], num_classes: int, params: TrainParams, root: Path) -> Built:
        path = resolve(root, location)
        model = load_user_model(path)
        return Built(with_input_scale(model, params.input_scale), pretrained=True)

    return load


def load_user_model(path: Path) -> tf_keras.Model:
    """A .keras, .h5 or SavedModel folder, loaded without executing code it carries (_refuse_code, safe mode)."""
    k = keras()
    if not check_path_length("train.model", path).exists():
        raise StageError(f"train.model: {path} does not exist (expected a .keras or .h5 file or a SavedModel folder)")
    if path.is_file() and path.suffix not in (".keras", ".h5", ".hdf5"):
        raise StageError(f"train.model: {path} is not a .keras or .h5 file or a SavedModel folder")
    _check_format(path)
    _refuse_code(path)
    try:
        # safe_mode refuses to deserialise Python lambdas in a .keras archive; _refuse_code has read
        # the configs of the other formats, whose loaders Keras' safe mode does not cover.
        model = k.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as error:  # Keras raises anything from ValueError to TypeError on foreign files
        raise StageError(_load_error(path, error)) from None
    if not isinstance(model, k.Model):
        raise StageError(f"train.model: {path} holds a {type(model).__name__}, not a Keras model")
    return model


def _check_format(path: Path) -> None:
    """The file is what its name says, checked before Keras opens it.

    Keras falls back to other readers on a file it cannot read, one of which (h5py's file-object
    driver) leaves the process to crash at exit; a plain check first gives a plain answer.
    """
    import zipfile

    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise StageError(f"train.model: {path} is a folder without saved_model.pb, not a SavedModel")
    elif path.suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise StageError(f"train.model: {path} could not be loaded as a Keras model (not a .keras archive)")
    else:
        import h5py

        if not h5py.is_hdf5(str(path)):
            raise StageError(f"train.model: {path} could not be loaded as a Keras model (not an HDF5 file)")


# The layer class whose config carries Python: marshalled bytecode (or a function it names) that Keras
# calls when it rebuilds the model.
_CODE_LAYERS = ("Lambda",)
# Modules a config may name for Keras to import a class from: Keras' own (tf_keras writes "keras.*";
# a custom class is written with its own module, or with none when it was registered).
_KERAS_MODULES = ("keras", "tf_keras")


def _refuse_code(path: Path) -> None:
    """StageError if a model file or SavedModel folder carries Python that loading it would run.

    Keras' safe mode guards only .keras archives: the .h5 and SavedModel loaders rebuild a Lambda
    layer by unmarshalling the bytecode in its config and calling it. So the configs are read here
    first, as data, before Keras sees them: the .h5 file's `model_config` attribute (h5py), every
    Keras object's metadata in a SavedModel (keras_metadata.pb, and saved_model.pb where versions
    before TF 2.5 kept it; protocol buffers), a .keras archive's config.json. A Lambda layer or a
    marshalled function is refused, and so is a class that names a module of its own to be
    imported from (a custom object: its code is the user's to load, in a builder).
    """
    if path.is_dir():
        configs = _saved_model_configs(path)
    elif path.suffix == ".keras":
        configs = _keras_configs(path)
    else:
        configs = _h5_configs(path)
    code = next((found for config in configs if (found := _code_in(config))), "")
    if code:
        raise StageError(
            f"train.model: {path} holds {code}, Python code that edgecompress does not run from a model "
            "file; load the model in your own builder (train.model: python:<module>:<function>) so your "
            "code is what runs"
        )
    custom = next((found for config in configs if (found := _foreign_class(config))), "")
    if custom:
        raise StageError(_custom_object(path, custom))


def _h5_configs(path: Path) -> list[Any]:
    """The model config that Keras would rebuild a .h5 model from, as JSON (read with h5py alone)."""
    import json

    import h5py

    with h5py.File(str(path), "r") as h5:
        raw = h5.attrs.get("model_config")
    if raw is None:
        return []  # weights only: Keras refuses it itself ("No model config found")
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    try:
        return [json.loads(text)]
    except ValueError:
        raise StageError(_not_a_model(path, "its model_config is not JSON")) from None


def _keras_configs(path: Path) -> list[Any]:
    """The config.json of a .keras archive (a zip file), as JSON."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return [json.loads(archive.read("config.json"))]
    except (KeyError, ValueError, zipfile.BadZipFile):
        raise StageError(_not_a_model(path, "no readable config.json")) from None


def _saved_model_configs(path: Path) -> list[Any]:
    """The metadata of every Keras object in a SavedModel folder, as JSON (read as protocol buffers)."""
    import json

    from tensorflow.core.protobuf import saved_model_pb2
    from tf_keras.protobuf import saved_metadata_pb2

    texts: list[str] = []
    keras_metadata = path / "keras_metadata.pb"
    if keras_metadata.is_file():
        metadata = saved_metadata_pb2.SavedMetadata()
        metadata.ParseFromString(keras_metadata.read_bytes())
        texts.extend(node.metadata for node in metadata.nodes)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    for graph in saved.meta_graphs:
        for node in graph.object_graph_def.nodes:
            if node.WhichOneof("kind") == "user_object" and node.user_object.metadata:
                texts.append(node.user_object.metadata)  # where Keras kept it before TF 2.5
    configs = []
    for text in texts:
        try:
            configs.append(json.loads(text))
        except ValueError:
            raise StageError(_not_a_model(path, "unreadable Keras metadata")) from None
    return configs


def _not_a_model(path: Path, why: str) -> str:
    return f"train.model: {path} could not be loaded as a Keras model ({why})"


def _code_in(config: Any) -> str:
    """What in a Keras config carries Python bytecode ('' when nothing does)."""
    for item in _objects(config):
        name, inner = item.get("class_name"), item.get("config")
        if name in _CODE_LAYERS:
            layer = inner.get("name") if isinstance(inner, dict) else None
            return f"a {name} layer{f' {echo(layer)}' if isinstance(layer, str) else ''}"
        # Keras marks a function it saved as bytecode "lambda": function_type and output_shape_type
        # of a Lambda layer, dropout_fn_type and residual_fn_type of the RNN cell wrappers;
        # __lambda__ is the same in the newer serialization format.
        if name == "__lambda__" or any(str(key).endswith("_type") and value == "lambda" for key, value in item.items()):
            return "a marshalled Python function"
    return ""


def _foreign_class(config: Any) -> str:
    """The first class in a Keras config that names a module other than Keras' to import it from ('' if none)."""
    for item in _objects(config):
        module = item.get("module")
        if isinstance(module, str) and module.split(".")[0] not in _KERAS_MODULES:
            return str(item.get("class_name") or module)
    return ""


def _objects(config: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in a JSON config, outermost first."""
    if isinstance(config, dict):
        yield config
        for value in config.values():
            yield from _objects(value)
    elif isinstance(config, list):
        for value in config:
            yield from _objects(value)


def _custom_object(path: Path, name: str) -> str:
    return (
        f"train.model: {path} needs the custom object {echo(name)}, which edgecompress does not import; "
        "load it in your own builder (train.model: python:<module>:<function>, using "
        "tf_keras.utils.custom_object_scope) so your code is what runs"
    )


def _load_error(path: Path, error: Exception) -> str:
    text = " ".join(str(error).split())
    unknown = _unknown_class(text)
    if unknown:
        return _custom_object(path, unknown)
    if "lambda" in text.lower() and "safe" in text.lower():
        return (
            f"train.model: {path} holds a Python lambda, which safe mode does not execute; "
            "load it in your own builder (train.model: python:<module>:<function>)"
        )
    return f"train.model: {path} could not be loaded as a Keras model ({text[:200]})"


# How tf_keras 2.21 says it lacks a class (tests/stages/test_models.py makes each say it): a .keras
# archive "Cannot deserialize object of type `Doubler`", a .h5 file "Unknown layer: 'mine>Doubler'"
# (its registered name), the newer serialization "Could not locate class 'Doubler'".
_UNKNOWN_CLASS = (
    r"Cannot deserialize object of type `([^`]+)`",
    r"Unknown (?:layer|object|class|activation|loss|metric|initializer|regularizer|constraint)"
    r"[^'\"]*['\"]([^'\"]+)['\"]",
    r"Could not locate (?:class|function) ['\"]([^'\"]+)['\"]",
)


def _unknown_class(text: str) -> str:
    """The class or function Keras said it does not know, from its error message ('' if it did not say so)."""
    import re

    found = next((match for pattern in _UNKNOWN_CLASS if (match := re.search(pattern, text))), None)
    return found.group(1) if found else ""


def with_input_scale(model: tf_keras.Model, input_scale: str) -> tf_keras.Model:
    """The model flat, with the Rescaling layer in front that makes it take pixels (as given for 'pixels').

    tfmot prunes and quantizes flat models only, so the model is rebuilt layer by layer on the new
    input: a fresh copy of each layer, called in the graph's own order on the tensors its inputs map
    to, given the original's weights, and the layers of a nested model (a Sequential or functional
    model used as a layer) called in place of the nested model. A model that is already flat and
    takes pixels is returned as it is. Nothing here can wait on anything: Keras' own
    `clone_model(..., input_tensors=...)` never returns on a functional model in tf_keras 2.21.
    """
    k = keras()
    rescale = INPUT_SCALES[input_scale]
    nested = any(isinstance(layer, k.Model) for layer in model.layers)
    if rescale is None and not nested:
        return model
    if not getattr(model, "_is_graph_network", False) and not isinstance(model, k.Sequential):
        raise StageError(_subclassed(model))
    if len(model.inputs) != 1:
        return model  # a model of several inputs is refused by check_fits, by name
    taken: set[str] = set()  # names of the new model's layers
    names = _layer_names(model)
    inputs = k.Input(shape=model.input_shape[1:], name=_unique("image", names))
    taken.add(inputs.name)
    x = inputs
    if rescale is not None:
        layer = k.layers.Rescaling(rescale[0], offset=rescale[1], name=_unique("rescale", names))
        taken.add(layer.name)
        x = layer(x)
    outputs = _call_layers(model, [x], _Copies(taken))
    return k.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


def _subclassed(model: Any) -> str:
    return (
        f"train.input_scale: {model.name} is a subclassed Keras model, which cannot be rebuilt on a new input; "
        "save it as a functional or Sequential model, or put the scaling inside it and set train.input_scale: pixels"
    )


def _layer_names(model: Any) -> set[str]:
    """Every layer name in the model, nested models' layers included."""
    names = set()
    for layer in model.layers:
        names.add(layer.name)
        if isinstance(layer, keras().Model):
            names |= _layer_names(layer)
    return names


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or name_1, name_2, ... when it is taken."""
    candidate, number = name, 0
    while candidate in taken:
        number += 1
        candidate = f"{name}_{number}"
    return candidate


class _Copies:
    """One fresh copy per original layer (a layer shared by two calls stays shared), names unique."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken
        self.copies: dict[int, Any] = {}

    def call(self, layer: Any, args: Any, kwargs: Any) -> Any:
        copy = self.copies.get(id(layer))
        if copy is not None:
            return copy(*args, **kwargs)
        config = layer.get_config()
        config["name"] = _unique(layer.name, self.taken)
        self.taken.add(config["name"])
        copy = layer.__class__.from_config(config)
        outputs = copy(*args, **kwargs)  # builds the copy's weights
        copy.set_weights(layer.get_weights())
        self.copies[id(layer)] = copy
        return outputs


def _call_layers(model: Any, tensors: list[Any], copies: _Copies) -> list[Any]:
    """The model's outputs computed by copies of its layers on `tensors` (one per model input)."""
    import tensorflow as tf

    k = keras()
    if not getattr(model, "_is_graph_network", False):
        if isinstance(model, k.Sequential):  # a Sequential never built on an input: its layers in order
            x = tensors[0]
            for layer in model.layers:
                x = _call_layers(layer, [x], copies)[0] if isinstance(layer, k.Model) else copies.call(layer, (x,), {})
            return [x]
        raise StageError(_subclassed(model))
    # Keras' functional graph: every call of a layer is a node, grouped by depth (inputs deepest),
    # what Keras' own Functional._run_internal_graph walks.
    mapped = {id(old): new for old, new in zip(model.inputs, tensors, strict=True)}

    def swap(value: Any) -> Any:
        return mapped.get(id(value), value)

    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            if isinstance(node.layer, k.Model):
                outputs: Any = _call_layers(node.layer, [swap(t) for t in node.keras_inputs], copies)
            else:
                args, kwargs = tf.nest.map_structure(swap, (node.call_args, node.call_kwargs))
                outputs = copies.call(node.layer, args, kwargs)
            for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs), strict=True):
                mapped[id(old)] = new
    return [mapped[id(t)] for t in model.outputs]


def _python(location: str) -> Callable[[tuple[int, int, int], int, TrainParams, Path], Built]:
    module_name, _, function_name = location.rpartition(":")

    def build(input_shape: tuple[int, int, int], num_classes: int, params: TrainParams, root: Path) -> Built:
        function = _builder(root, module_name, function_name)
        where = f"{module_name}:{function_name}"
        try:
            model = function(input_shape, num_classes)
        except SystemExit as exit_:
            # sys.exit() in the user's builder is its failure, not the command's way out.
            raise StageError(
                f"train.model: python:{where}{input_shape, num_classes} called sys.exit({echo(exit_.code)}); "
                "a builder must return a tf_keras.Model (raise an exception to say what is wrong)"
            ) from None
        except Exception as error:
            raise StageError(
                f"train.model: python:{where}{input_shape, num_classes} raised {type(error).__name__}: "
                f"{' '.join(str(error).split())[:160]}"
            ) from None
        if not isinstance(model, keras().Model):
            raise StageError(
                f"train.model: python:{where} returned a {type(model).__name__}, not a tf_keras.Model "
                "(build it with tf_keras, the Keras 2 that tfmot accepts)"
            )
        return Built(with_input_scale(model, params.input_scale), pretrained=params.epochs == 0)

    return build


def _builder(root: Path, module_name: str, function_name: str) -> Callable[..., Any]:
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # the user's code lives in the project folder
    try:
        module = _fresh_module(module_name)
    except (Exception, SystemExit) as error:  # the module's own code runs here, sys.exit() included
        if isinstance(error, SystemExit):
            reason = f"sys.exit({echo(error.code)})"
        else:
            reason = f"{type(error).__name__}: {error}"
        raise StageError(f"train.model: cannot import {module_name!r} from {root} ({clip(reason, 160)})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise StageError(f"train.model: {module_name} has no function {function_name!r}")
    return function


def _fresh_module(module_name: str) -> Any:
    """The module as its source reads now, executed anew even if this process imported it before.

    The train stage re-runs when the builder's file changed (its md5 is in train.json), and must then
    build with the new code: `import_module` would return the module already imported (a worker, a
    test session), and even `reload` may take a stale .pyc, whose check is the file's mtime in whole
    seconds and its size (Conv2D(24 -> Conv2D(20 within a second passes it).
    """
    import importlib.util

    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {module_name!r}")
    module = importlib.util.module_from_spec(spec)
    get_source = getattr(spec.loader, "get_source", None)
    source = get_source(module_name) if get_source else None
    sys.modules[module_name] = module
    try:
        if source is None:  # no source to read (a compiled extension): load it the usual way
            spec.loader.exec_module(module)
        else:
            exec(compile(source, spec.origin or module_name, "exec"), module.__dict__)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def source_of(spec: str) -> Callable[[tuple[int, int, int], int, TrainParams, Path], Built]:
    """The builder for a `train.model` value (validated by tasks/params.py)."""
    kind, _, location = spec.partition(":")
    if kind == "file":
        return _file(location)
    if kind == "python":
        return _python(location)
    return SOURCES[spec]


SOURCES: dict[str, Callable[[tuple[int, int, int], int, TrainParams, Path], Built]] = {
    "cnn": _cnn,
    "mobilenet_v2": _mobilenet("mobilenet_v2"),
    "mobilenet_v3_small": _mobilenet("mobilenet_v3_small"),
}


def build(params: TrainParams, input_shape: tuple[int, int, int], num_classes: int, root: Path) -> Built:
    """The float model from `train.model`, checked against the data before anything trains."""
    seed_everything(params.seed)  # the same initial weights on every run
    built = source_of(params.model)(input_shape, num_classes, params, root)
    check_fits(built.model, input_shape, num_classes, params.model)
    return built


def check_fits(model: tf_keras.Model, input_shape: tuple[int, int, int], num_classes: int, source: str) -> None:
    """One image in, one probability per class out: else a one-line error naming both shapes."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise StageError(
            f"train.model {source}: {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "edgecompress compresses classifiers with one of each"
        )
    given = tuple(model.input_shape[1:])
    if given != tuple(input_shape):
        raise StageError(
            f"train.model {source}: takes input {_shape(given)}, the data is {_shape(input_shape)} "
            "(data.image_size x data.image_size x data.channels); make them agree"
        )
    out = tuple(model.output_shape[1:])
    if out != (num_classes,):
        raise StageError(
            f"train.model {source}: outputs {_shape(out)}, the data has {num_classes} classes; "
            f"the model needs a final layer of {num_classes} units"
        )


def _shape(shape: tuple[Any, ...]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def check_paths(params: TrainParams, root: Path) -> None:
    """The files params name exist (checked before a run starts; loading them waits for the train stage)."""
    kind, _, location = params.model.partition(":")
    if kind == "file" and not check_path_length("train.model", resolve(root, location)).exists():
        raise StageError(
            f"train.model: {resolve(root, location)} does not exist (expected a .keras or .h5 file or a "
            "SavedModel folder)"
        )
    if params.weights and not check_path_length("train.weights", resolve(root, params.weights)).is_file():
        raise StageError(
            f"train.weights: {resolve(root, params.weights)} does not exist (a local weights file; "
            "nothing is downloaded)"
        )


def source_files(params: TrainParams, root: Path) -> dict[str, str]:
    """{file: md5} of what the source reads outside the project's code (a model or weights file, a module).

    DVC cannot list these as deps (their paths are params), so the train stage records them and
    tasks/stages.py compares: a changed file re-runs train.
    """
    files: list[Path] = []
    kind, _, location = params.model.partition(":")
    if kind == "file":
        files.append(resolve(root, location))
    elif kind == "python":
        from importlib.util import find_spec

        module = location.rpartition(":")[0]
        path = root / Path(*module.split("."))
        candidates = [path.with_suffix(".py"), path / "__init__.py"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None and str(root) in sys.path:
            spec = find_spec(module)
            found = Path(spec.origin) if spec and spec.origin else None
        if found is not None:
            files.append(found)
    if params.weights:
        files.append(resolve(root, params.weights))
    return {str(path): _md5(path) for path in files}


def _md5(path: Path) -> str:
    if path.is_dir():
        digest = hashlib.md5()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(item.relative_to(path)).encode())
            digest.update(item.read_bytes())
        return digest.hexdigest()
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else "missing"
