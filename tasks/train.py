"""train stage: a small CNN built only from layers the Edge TPU maps."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.params import TrainParams

if TYPE_CHECKING:
    import tf_keras

    from tasks.data import Split

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What training produced, besides the model."""

    parameters: int
    epochs: int
    train_accuracy: float
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)


def keras() -> Any:
    """tf_keras (Keras 2), the only Keras tfmot accepts; see tasks/__init__.py."""
    import tf_keras

    return tf_keras


def build_model(input_shape: tuple[int, int, int], num_classes: int, params: TrainParams) -> tf_keras.Model:
    """Conv -> BN -> ReLU -> separable conv -> BN -> ReLU -> pool -> Dense -> softmax.

    Every layer here has an int8 Edge TPU kernel (and BatchNorm folds into the convolution
    at conversion), so the whole graph maps to the TPU as one subgraph.
    """
    k = keras()
    k.utils.set_random_seed(params.seed)
    inputs = k.Input(shape=input_shape, name="image")
    x = k.layers.Conv2D(params.conv_filters, 3, padding="same", use_bias=False, name="conv")(inputs)
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


def compile_model(model: tf_keras.Model, learning_rate: float) -> None:
    """Adam on sparse categorical cross-entropy, reporting accuracy."""
    k = keras()
    model.compile(
        optimizer=k.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


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


def train_model(model: tf_keras.Model, train: Split, params: TrainParams) -> TrainResult:
    """Fit the model on the training split with a seeded shuffle."""
    keras().utils.set_random_seed(params.seed)
    compile_model(model, params.learning_rate)
    started = time.perf_counter()
    history = model.fit(
        train.x,
        train.y,
        batch_size=params.batch_size,
        epochs=params.epochs,
        shuffle=True,
        verbose=0,
        callbacks=[epoch_logger("train", params.epochs)],
    )
    seconds = time.perf_counter() - started
    curves = {name: [float(v) for v in values] for name, values in history.history.items()}
    return TrainResult(
        parameters=int(model.count_params()),
        epochs=params.epochs,
        train_accuracy=curves["accuracy"][-1],
        seconds=round(seconds, 3),
        history=curves,
    )


def accuracy(model: tf_keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of a Keras classifier."""
    predictions = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == y))


def save_model(model: tf_keras.Model, path: Path) -> None:
    """Save architecture and weights only (an uncompiled copy, so no optimizer state), atomically."""
    from tasks.fsutil import staging_file

    clean = keras().models.clone_model(model)
    clean.set_weights(model.get_weights())
    with staging_file(path) as tmp:
        clean.save(tmp)


def load_model(path: Any) -> tf_keras.Model:
    """Load a model saved by a stage (no custom objects: pruning wrappers are stripped)."""
    return keras().models.load_model(str(path), compile=False)
