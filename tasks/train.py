"""train stage: a small CNN built only from layers the Edge TPU maps."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.params import TrainParams

if TYPE_CHECKING:
    import tf_keras

    from tasks.data import Images
    from tasks.models import Built

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What training produced, besides the model."""

    parameters: int
    epochs: int
    train_accuracy: float | None  # None: not trained here (train.epochs 0)
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)


def keras() -> Any:
    """tf_keras (Keras 2), the only Keras tfmot accepts; see tasks/__init__.py."""
    import tf_keras

    return tf_keras


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's ops deterministic.

    With both, the same inputs give byte-identical weights on the same machine (another CPU may
    still round differently). Op determinism makes TensorFlow pick deterministic kernels where an
    op has several; docs/ARCHITECTURE.md records what that costs.
    """
    import tensorflow as tf

    keras().utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_model(input_shape: tuple[int, int, int], num_classes: int, params: TrainParams) -> tf_keras.Model:
    """Pixels -> rescale -> conv -> BN -> ReLU -> separable conv -> BN -> ReLU -> pool -> Dense -> softmax.

    Every layer here has an int8 Edge TPU kernel (the rescale becomes an int8 multiply, BatchNorm
    folds into the convolution at conversion), so the whole graph maps to the TPU as one subgraph.
    """
    k = keras()
    seed_everything(params.seed)
    inputs = k.Input(shape=input_shape, name="image")
    x = k.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)  # pixels in, as a camera gives them
    x = k.layers.Conv2D(params.conv_filters, 3, padding="same", use_bias=False, name="conv")(x)
    x = k.layers.BatchNormalization(name="conv_bn")(x)
    x = k.layers.ReLU(name="conv_relu")(x)
    x = k.layers.SeparableConv2D(2 * params.conv_filters, 3, padding="same", use_bias=False, name="sepconv")(x)
    x = k.layers.BatchNormalization(name="sepconv_bn")(x)
    x = k.layers.ReLU(name="sepconv_relu")(x)
    x = k.layers.MaxPooling2D(2, name="pool")(x)
    x = k.layers.Flatten(name="flatten")(x)
    x = k.layers.Dense(params.dense_units, activation="relu", name="dense")(x)
    outputs = k.layers.Dense(num_classes, activation="softmax", name="classes")(x)
    return k.Model(inputs, outputs, name="edgecompress_cnn")


def compile_model(model: tf_keras.Model, learning_rate: float | Any) -> None:
    """Adam on sparse categorical cross-entropy, reporting accuracy (`learning_rate`: a rate or a Keras schedule).

    Every variable of the training step exists before `fit`: Adam's slots and the accuracy's
    counters. A tf.function whose first trace creates variables is traced a second time, and
    tracing is most of a short fit's time (MobileNetV2: about 8 s per trace).
    """
    k = keras()
    model.compile(
        optimizer=k.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        # An instance, not "accuracy": Keras resolves the string inside the first trace.
        metrics=[k.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    model.optimizer.build(model.trainable_variables)


def epoch_logger(stage: str, epochs: int) -> Any:
    """A Keras callback that logs one progress line per epoch."""
    k = keras()

    class LogEpochs(k.callbacks.Callback):  # type: ignore[name-defined]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            log.info(
                "%s epoch %d/%d: loss %.4f, accuracy %.4f",
                stage,
                epoch + 1,
                epochs,
                logs.get("loss", float("nan")),
                logs.get("accuracy", float("nan")),
            )

    return LogEpochs()


def train_model(built: Built, train: Images, params: TrainParams) -> TrainResult:
    """Fit the model on the training split, shuffled the same way on every run.

    A model with pretrained backbone weights follows the usual transfer-learning recipe: the head
    first with the backbone frozen (`epochs` at `learning_rate`), then the top `fine_tune_layers`
    of the backbone as well (`fine_tune_epochs` at `fine_tune_learning_rate`), its batch-norm
    layers kept frozen so their pretrained statistics survive small batches. Anything else trains
    whole. With `lr_schedule: cosine` each phase's rate decays to 0 over its epochs, so training ends
    on a settled model. `train.epochs: 0` keeps a given model as it is.
    """
    model = built.model
    if params.epochs == 0:
        log.info("train.epochs is 0: %s is compressed as it is", params.model)
        return TrainResult(int(model.count_params()), 0, None, 0.0)
    seed_everything(params.seed)
    started = time.perf_counter()
    curves: dict[str, list[float]] = {}
    transfer = bool(params.weights) and built.backbone_layers > 0
    phases = [("train", params.epochs, params.learning_rate, built.backbone_layers if transfer else 0)]
    if transfer and params.fine_tune_epochs:
        frozen = max(built.backbone_layers - params.fine_tune_layers, 0)
        phases.append(("fine-tune", params.fine_tune_epochs, params.fine_tune_learning_rate, frozen))
    batches = train.batches(params.batch_size, shuffle_seed=params.seed)
    for name, epochs, learning_rate, frozen in phases:
        k = keras()
        for index, layer in enumerate(model.layers):
            layer.trainable = index >= frozen and not (transfer and isinstance(layer, k.layers.BatchNormalization))
        rate: float | Any = learning_rate
        if params.lr_schedule == "cosine":
            steps = math.ceil(len(train) / params.batch_size) * epochs  # as tasks.prune.schedule_steps counts
            rate = k.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
        compile_model(model, rate)
        history = model.fit(batches, epochs=epochs, verbose=0, callbacks=[epoch_logger(name, epochs)])
        for metric, values in history.history.items():
            curves.setdefault(metric, []).extend(float(v) for v in values)
    for layer in model.layers:
        layer.trainable = True  # pruning and QAT fine-tune the whole model
    return TrainResult(
        parameters=int(model.count_params()),
        epochs=params.epochs + (params.fine_tune_epochs if len(phases) > 1 else 0),
        train_accuracy=curves["accuracy"][-1],
        seconds=round(time.perf_counter() - started, 3),
        history=curves,
    )


def accuracy(model: tf_keras.Model, images: Images, batch_size: int = 256) -> float:
    """Top-1 accuracy of a Keras classifier, streamed batch by batch.

    One `predict` over the dataset traces the model once; `predict_on_batch` per batch traced it
    again for the last, smaller batch.
    """
    if not len(images):
        return 0.0
    predictions = model.predict(images.batches(batch_size, labels=False), verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == images.labels))


def save_model(model: tf_keras.Model, path: Path) -> None:
    """Save architecture and weights only (an uncompiled copy, so no optimizer state), atomically.

    The file is byte-identical for identical weights: DVC then sees an unchanged model as
    unchanged, and `edgecompress reproduce` can compare models by hash.
    """
    from tasks.fsutil import staging_file

    clean = keras().models.clone_model(model)
    clean.set_weights(model.get_weights())
    with staging_file(path) as tmp:
        clean.save(tmp)
        _make_reproducible(tmp)


# A .keras file is a zip archive, and three things in it change from one save of the same model to
# the next: metadata.json's "date_saved" (which loading never reads), the weights entry's zip date,
# and config.json's "shared_object_id"s, which are Python object ids (they only say which objects
# are shared, so any consistent numbering means the same).
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _make_reproducible(path: Path) -> None:
    """Rewrite a .keras archive without its save time and with shared objects numbered 1, 2, ..."""
    import json
    import zipfile

    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, payload in entries:
            if info.filename == "metadata.json":
                metadata = json.loads(payload)
                metadata.pop("date_saved", None)
                payload = json.dumps(metadata).encode()
            elif info.filename == "config.json":
                payload = json.dumps(_renumber_shared_objects(json.loads(payload), {})).encode()
            stamped = zipfile.ZipInfo(info.filename, date_time=_ZIP_EPOCH)
            stamped.compress_type = info.compress_type
            stamped.external_attr = info.external_attr
            archive.writestr(stamped, payload)


def _renumber_shared_objects(node: Any, numbers: dict[int, int]) -> Any:
    """The config with every shared_object_id replaced by its order of first appearance."""
    if isinstance(node, dict):
        return {
            key: numbers.setdefault(value, len(numbers) + 1)
            if key == "shared_object_id"
            else _renumber_shared_objects(value, numbers)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_renumber_shared_objects(value, numbers) for value in node]
    return node


def load_model(path: Any) -> tf_keras.Model:
    """Load a model saved by a stage (no custom objects: pruning wrappers are stripped)."""
    return keras().models.load_model(str(path), compile=False)
