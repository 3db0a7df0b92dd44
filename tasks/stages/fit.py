"""The Keras side every stage that fits or scores a model shares: tf_keras, seeds, compile, logs, save, load."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tf_keras

    from tasks.stages.images import Images

log = logging.getLogger(__name__)


def keras() -> Any:
    """tf_keras (Keras 2), the only Keras tfmot accepts; see tasks/__init__.py."""
    import tf_keras

    return tf_keras


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, make TensorFlow's ops deterministic, restart Keras's layer names.

    With all three, the same inputs give byte-identical files on the same machine (another CPU may
    still round differently). Op determinism makes TensorFlow pick deterministic kernels where an
    op has several; docs/ARCHITECTURE.md records what that costs. Keras names a layer built without
    a name from a per-process counter (tfmot's QAT splits a SeparableConv2D into `depthwise_conv2d_2`
    and `conv2d_2` after two earlier QAT models in the process), and the names reach the .tflite's
    tensor names: without the restart, a model built in a long-lived process (a test session, a
    worker) differed from its rebuild by `reproduce` in names alone. Call it before building layers.
    """
    import tensorflow as tf

    k = keras()
    k.utils.set_random_seed(seed)
    k.backend.reset_uids()
    tf.config.experimental.enable_op_determinism()


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
    """A Keras callback that logs one progress line per epoch (validation accuracy too, when fit has it)."""
    k = keras()

    class LogEpochs(k.callbacks.Callback):  # type: ignore[name-defined]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            validation = f", validation accuracy {logs['val_accuracy']:.4f}" if "val_accuracy" in logs else ""
            log.info(
                "%s epoch %d/%d: loss %.4f, accuracy %.4f%s",
                stage,
                epoch + 1,
                epochs,
                logs.get("loss", float("nan")),
                logs.get("accuracy", float("nan")),
                validation,
            )

    return LogEpochs()


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
