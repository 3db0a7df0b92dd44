"""quantize stage: post-training quantization, quantization-aware training, or an accuracy-aware choice.

PTQ modes and what each is for:
- int8: full integer (weights and activations), calibrated on the representative set, int8 or
  uint8 input and output. The only mode the Edge TPU runs; also the fastest on CPU built-in kernels.
- dynamic_range: int8 weights, float activations quantized on the fly. A quarter of the float
  size with no calibration data; CPU only (the Edge TPU maps none of it).
- float16: float16 weights. Half the size; for GPU delegates, which compute in float16.

QAT (tfmot) fine-tunes with fake-quantization so the int8 model learns its own rounding; after
magnitude pruning it uses tfmot's prune-preserving scheme so the zeros survive (channel pruning
leaves no zeros to keep: qat_scheme). `auto` tries int8 PTQ
first and QAT only when PTQ loses more than `tolerable_drop`, in the spirit of Intel Neural
Compressor's accuracy-aware tuning.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from tasks.errors import StageError
from tasks.fsutil import staging_file, write_csv, write_json
from tasks.layout import Layout
from tasks.params import Params, QuantizeParams
from tasks.stages import images
from tasks.stages.fit import load_model

if TYPE_CHECKING:
    import tf_keras

    from tasks.stages.images import Images

# Calibration images: streamed from the representative folder, or an array (tests, notebooks).
Pixels = Union["Images", np.ndarray]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trial:
    """One attempt of `auto` (or the single attempt of ptq/qat)."""

    name: str
    method: str
    accuracy: float
    drop: float
    size_bytes: int
    sparsity: float | None = None
    kept: bool = False
    reason: str = ""
    scheme: str = ""  # QAT: tfmot's scheme (qat_scheme); empty for PTQ


@dataclass(frozen=True)
class QuantizeOutcome:
    """The chosen model's bytes and how it was chosen."""

    model: bytes
    method: str
    trials: list[Trial] = field(default_factory=list)
    sparsity_before: float | None = None
    sparsity_after: float | None = None
    choice: str = ""


def _representative(calibration: Pixels, batch_size: int | None = 1) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's representative dataset, streamed from disk (or an array), in the model's batch.

    One image at a time for a dynamic batch or a batch of 1; for a fixed batch of N, N at a time, the
    last batch filled up with the first images.
    """
    if len(calibration) == 0:
        raise StageError("quantize: the calibration set has zero samples; raise data.calibration_size")
    batch = batch_size or 1

    def samples() -> Iterator[np.ndarray]:
        if isinstance(calibration, np.ndarray):
            for sample in calibration:
                yield sample[np.newaxis].astype(np.float32)
            return
        yield from calibration.batches(1, labels=False).as_numpy_iterator()

    def generate() -> Iterator[list[np.ndarray]]:
        if batch == 1:
            for sample in samples():
                yield [sample]
            return
        first: list[np.ndarray] = []
        pending: list[np.ndarray] = []
        for sample in samples():
            if len(first) < batch:
                first.append(sample)
            pending.append(sample)
            if len(pending) == batch:
                yield [np.concatenate(pending)]
                pending = []
        if pending:
            filler = (first * batch)[: batch - len(pending)]
            yield [np.concatenate(pending + filler)]

    return generate


def _converter(model: tf_keras.Model, batch_size: int | None) -> Any:
    """A TFLite converter for the model's inference call (training=False), batch `batch_size` (None: dynamic).

    `TFLiteConverter.from_keras_model` first saves the whole Keras model as a SavedModel, and
    Keras's layer-by-layer serialization is most of a conversion's time: about 15 of 19 s for
    MobileNetV2 (alpha 0.35, 32x32) on 2 cores, 2 of 2.5 s for the digits CNN. The same
    SavedModel route from the traced inference function, with a `tf.Module` holding only the
    variables as its trackable object, skips that serialization and keeps the rest: the
    `serving_default` signature, the Keras input and output names, and the same outputs, bit for
    bit (MobileNetV2 converts in about 4 s). docs/ARCHITECTURE.md has the measurement.
    """
    import tensorflow as tf

    # A fixed batch makes every tensor's size static, as the Edge TPU compiler requires; with None
    # the .tflite keeps a dynamic batch dimension ([-1, ...]) that the interpreter resizes.
    specs = [
        tf.TensorSpec([batch_size, *t.shape[1:]], t.dtype, name=name)
        for t, name in zip(model.inputs, model.input_names, strict=True)
    ]

    def serve(*inputs: Any) -> dict[str, Any]:
        outputs = model(*inputs, training=False)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        return dict(zip(model.output_names, outputs, strict=True))

    function = tf.function(serve).get_concrete_function(*specs)
    holder = tf.Module()  # keeps the variables alive for the converter, and is what it saves
    holder.variables_ = list(model.variables)
    return tf.lite.TFLiteConverter.from_concrete_functions([function], holder)


def _full_integer(converter: Any, calibration: Pixels, io_dtype: str, batch_size: int | None) -> Any:
    """Configure a converter for int8 everywhere: TFLITE_BUILTINS_INT8 only, integer I/O of `io_dtype`."""
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calibration, batch_size)
    # Only int8 kernels: conversion fails rather than leave a float operator behind.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    io_type = tf.int8 if io_dtype == "int8" else tf.uint8
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    # Per-tensor Dense weights: TF >= 2.16 quantizes them per channel by default, which the
    # Edge TPU compiler (16, 2021) predates; convolutions stay per channel, which it supports.
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    return converter


def _convert(converter: Any) -> bytes:
    with warnings.catch_warnings():
        # The converter warns that the float model carries no input statistics; the
        # representative dataset (or QAT's fake-quant ranges) supply them.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return bytes(converter.convert())


def to_float_tflite(model: tf_keras.Model, batch_size: int | None) -> bytes:
    """Convert without quantization: the reference the quantized model is measured against."""
    return _convert(_converter(model, batch_size))


def to_int8_tflite(model: tf_keras.Model, calibration: Pixels, params: QuantizeParams) -> bytes:
    """Full-integer post-training quantization calibrated on the representative set."""
    log.info("quantizing to int8 with %d calibration samples", len(calibration))
    converter = _converter(model, params.batch_size)
    return _convert(_full_integer(converter, calibration, params.io_dtype, params.batch_size))


def int8_tflite_bytes(model: tf_keras.Model, calibration: Pixels) -> bytes:
    """Full-integer int8 with int8 I/O, as the Edge TPU takes it (what prune.json's parameter bytes measure)."""
    return _convert(_full_integer(_converter(model, 1), calibration, "int8", 1))


def to_ptq_tflite(model: tf_keras.Model, calibration: Pixels, params: QuantizeParams) -> bytes:
    """Post-training quantization in params.ptq_mode."""
    import tensorflow as tf

    if params.ptq_mode == "int8":
        return to_int8_tflite(model, calibration, params)
    converter = _converter(model, params.batch_size)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if params.ptq_mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return _convert(converter)


def debug_int8(model: tf_keras.Model, calibration: Pixels, params: QuantizeParams) -> list[dict[str, Any]]:
    """Per-layer quantization error from TFLite's QuantizationDebugger, worst first."""
    import tensorflow as tf

    converter = _full_integer(_converter(model, params.batch_size), calibration, params.io_dtype, params.batch_size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=_representative(_first(calibration, 64), params.batch_size)
        )
        debugger.run()
    import csv
    import io

    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    for row in rows:
        # Root-mean-square error scaled by the tensor's quantization step: how many steps off,
        # comparable across layers with different ranges (the debugger's own suggested metric).
        scale = float(row.get("scale") or 0) or 1.0
        row["rmse_per_scale"] = float(row.get("mean_squared_error") or 0) ** 0.5 / scale
    return sorted(rows, key=lambda row: -float(row["rmse_per_scale"]))


# --- quantization-aware training --------------------------------------------------------------------


# Input normalisation (the layer that turns pixels into the model's range) is an affine map that
# tfmot's 8-bit registry has no entry for. QAT quantizes its output like any activation (tfmot's own
# output config), so the QAT model learns every range itself, pixels included.
_NORMALISATION = ("Rescaling", "Normalization")


class QATUnsupported(StageError):
    """The model has a layer tfmot's quantization-aware training cannot annotate."""


def _annotated(model: tf_keras.Model, layers: tuple[str, ...]) -> tf_keras.Model:
    """The model with the named layers (every layer when none are named) annotated for QAT."""
    import tensorflow_model_optimization as tfmot

    # tfmot's public API has no "is this layer supported" call; its registry answers it.
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    from tasks.stages.fit import keras

    quantization = tfmot.quantization.keras
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
    known = {layer.name for layer in model.layers}
    missing = [name for name in layers if name not in known]
    if missing:
        raise StageError(
            f"quantize.qat_layers: no layer named {', '.join(missing)} (layers: {', '.join(sorted(known))})"
        )

    def annotate(layer: tf_keras.layers.Layer) -> tf_keras.layers.Layer:
        if isinstance(layer, keras().layers.InputLayer) or (layers and layer.name not in layers):
            return layer
        if type(layer).__name__ in _NORMALISATION:
            return quantization.quantize_annotate_layer(layer, quantize_config=output_quantize_config())
        # quantize_apply decides what it supports (batch norm, for one, is folded by its transforms,
        # not in its registry) and names a layer it refuses; a named layer gets a config instead.
        if not layers or registry.supports(layer):
            return quantization.quantize_annotate_layer(layer)
        # A named layer the default 8-bit registry does not know: quantize its kernel and output.
        return quantization.quantize_annotate_layer(layer, quantize_config=kernel_quantize_config())

    try:
        return keras().models.clone_model(model, clone_function=annotate)
    except (RuntimeError, ValueError) as error:  # e.g. a nested model, which tfmot cannot annotate
        raise QATUnsupported(_unsupported(str(error))) from None


def _kernel_quantize_config() -> type:
    import tensorflow_model_optimization as tfmot

    quantizers = tfmot.quantization.keras.quantizers

    class _KernelQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """8-bit per-tensor kernel, 8-bit output: the default scheme's choice for a Dense-like layer."""

        def get_weights_and_quantizers(self, layer: Any) -> list[tuple[Any, Any]]:
            return [
                (
                    layer.kernel,
                    quantizers.LastValueQuantizer(num_bits=8, symmetric=True, narrow_range=False, per_axis=False),
                )
            ]

        def get_activations_and_quantizers(self, layer: Any) -> list[tuple[Any, Any]]:
            return []

        def set_quantize_weights(self, layer: Any, quantize_weights: list[Any]) -> None:
            layer.kernel = quantize_weights[0]

        def set_quantize_activations(self, layer: Any, quantize_activations: list[Any]) -> None:
            pass

        def get_output_quantizers(self, layer: Any) -> list[Any]:
            return [quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

        def get_config(self) -> dict[str, Any]:
            return {}

    return _KernelQuantizeConfig


def _unsupported(message: str) -> str:
    """tfmot's refusal of a layer as one line naming it and the settings that avoid it."""
    import re

    found = re.search(r"Layer ([\w./-]+)\s*:?\s*<class '([\w.]+)'>", message)
    layer = f"{found.group(1)} ({found.group(2).rsplit('.', 1)[-1]})" if found else " ".join(message.split())[:160]
    return (
        f"quantize: tfmot's quantization-aware training does not support layer {layer}; use quantize.method: "
        "ptq (or auto, which falls back to it), or name the layers to train in quantize.qat_layers"
    )


def output_quantize_config() -> Any:
    """tfmot's config for a layer whose output alone is quantized (8 bits, moving-average range)."""
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs,
    )

    return default_8bit_quantize_configs.Default8BitOutputQuantizeConfig()


def kernel_quantize_config() -> Any:
    """A QuantizeConfig for kernel layers outside tfmot's default 8-bit registry."""
    return _kernel_quantize_config()()


def qat_model(
    model: tf_keras.Model,
    train: Images,
    params: QuantizeParams,
    preserve_sparsity: bool,
    epochs: int,
    batch_size: int,
    seed: int,
    preserve_clusters: bool = False,
) -> tf_keras.Model:
    """Fine-tune with fake quantization; the QAT model.

    tfmot's collaborative schemes keep what earlier steps made: a pruned model's zeros
    (prune-preserving QAT), a clustered model's shared values (cluster-preserving QAT), or both
    (prune-cluster-preserving QAT).
    """
    import tensorflow_model_optimization as tfmot

    from tasks.stages.fit import compile_model, epoch_logger, seed_everything

    quantization = tfmot.quantization.keras
    seed_everything(seed)  # before the QAT model's layers exist: their automatic names restart too
    annotated = _annotated(model, params.qat_layers)
    scope = {
        "_KernelQuantizeConfig": _kernel_quantize_config(),
        "Default8BitOutputQuantizeConfig": type(output_quantize_config()),
    }
    try:
        with quantization.quantize_scope(scope):
            combine = tfmot.experimental.combine
            name = qat_scheme(preserve_sparsity, preserve_clusters)
            if name == "prune-cluster-preserving" or name == "cluster-preserving":
                scheme = combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=preserve_sparsity)
                quantized = quantization.quantize_apply(annotated, scheme)
            elif name == "prune-preserving":
                quantized = quantization.quantize_apply(annotated, combine.Default8BitPrunePreserveQuantizeScheme())
            else:
                quantized = quantization.quantize_apply(annotated)
    except (RuntimeError, ValueError) as error:
        raise QATUnsupported(_unsupported(str(error))) from None
    compile_model(quantized, params.qat_learning_rate)
    quantized.fit(
        train.batches(batch_size, shuffle_seed=seed),
        epochs=epochs,
        verbose=0,
        callbacks=[epoch_logger("qat", epochs)],
    )
    return quantized


def qat_scheme(preserve_sparsity: bool, preserve_clusters: bool) -> str:
    """Which of tfmot's QAT schemes keeps what earlier steps made (quantize.json names it per trial).

    Sparsity is preserved only where magnitude pruning left zeros to keep (prune.json's
    pruned_weights): after channel pruning the model is dense and smaller, and a prune-preserving
    scheme would only freeze the few weights that happen to be zero.
    """
    if preserve_clusters:
        return "prune-cluster-preserving" if preserve_sparsity else "cluster-preserving"
    return "prune-preserving" if preserve_sparsity else "default"


def qat_tflite(qat: tf_keras.Model, calibration: Pixels, params: QuantizeParams) -> bytes:
    """Convert a QAT model to a full-integer .tflite (ranges come from its fake-quant nodes)."""
    return _convert(_full_integer(_converter(qat, params.batch_size), calibration, params.io_dtype, params.batch_size))


# --- choosing the shipped model ----------------------------------------------------------------


def _score(model: bytes, images: Images) -> float:
    """Top-1 accuracy of a .tflite (bytes) on a split, through TFLiteModel."""
    import tempfile
    from pathlib import Path

    from tasks.stages.inference import TFLiteModel

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trial.tflite"
        path.write_bytes(model)
        return TFLiteModel(path).evaluate(images.batches(256))[1]


def _first(calibration: Pixels, count: int) -> Pixels:
    return calibration[:count] if isinstance(calibration, np.ndarray) else calibration.head(count)


def quantize_model(
    float_tflite: bytes,
    compressed: tf_keras.Model,
    fit: Images,
    validation: Images,
    calibration: Pixels,
    params: QuantizeParams,
    batch_size: int,
    seed: int,
    sparse_weights: tuple[str, ...] = (),
    clustered: bool = False,
) -> QuantizeOutcome:
    """Make the shipped model by params.method; every attempt is scored on the validation split.

    The reference is the float .tflite of the unpruned model on the same split, so a trial's
    drop counts what pruning and quantization cost together.
    """
    from tasks.stages.footprint import overall_sparsity

    reference = _score(float_tflite, validation)
    # Zeros over every kernel, before and in each attempt's .tflite: what ships, not what the
    # Keras wrappers hold (tfmot's collaborative QAT keeps its effective weights elsewhere).
    sparsity_before = overall_sparsity(compressed) if sparse_weights else None

    # Zeros to keep only where magnitude pruning made them: a channel-pruned model lists none.
    scheme = qat_scheme(bool(sparse_weights), clustered)

    def trial(name: str, method: str, model: bytes) -> tuple[Trial, bytes]:
        accuracy = _score(model, validation)
        sparsity = tflite_kernel_sparsity(model) if sparse_weights else None
        made = Trial(name, method, round(accuracy, 6), round(reference - accuracy, 6), len(model), sparsity)
        made = replace(made, scheme=scheme if method == "qat" else "")
        log.info("trial %s: accuracy %.4f (drop %.4f), %d bytes", name, accuracy, made.drop, len(model))
        return made, model

    if params.method == "ptq":
        made, model = trial(f"ptq_{params.ptq_mode}", "ptq", to_ptq_tflite(compressed, calibration, params))
        kept = _keep(made, "the only method asked for")
        return QuantizeOutcome(model, "ptq", [kept], sparsity_before, made.sparsity)

    attempts: list[tuple[Trial, bytes]] = []
    rejected: list[Trial] = []
    if params.method == "auto":
        attempts.append(trial("ptq_int8", "ptq", to_int8_tflite(compressed, calibration, params)))
    qat_rounds = 1 if params.method == "qat" else params.max_trials - len(attempts)
    fallback = ""
    for round_ in range(qat_rounds):
        if params.method == "auto" and any(t.drop <= params.tolerable_drop for t, _ in attempts):
            break  # a cheaper attempt already meets the tolerance
        # Each further QAT round fine-tunes twice as long: the configured option list, in order.
        epochs = params.qat_epochs * 2**round_
        try:
            qat = qat_model(compressed, fit, params, bool(sparse_weights), epochs, batch_size, seed, clustered)
        except QATUnsupported as error:
            if params.method != "auto":
                raise
            fallback = f"no QAT: {error}"
            log.warning("quantize.method auto: %s; keeping post-training quantization", error)
            break
        made, model = trial(f"qat_{epochs}ep", "qat", qat_tflite(qat, calibration, params))
        lost = _lost_zeros(made, sparsity_before)
        if lost and params.method == "qat":
            raise StageError(f"quantize: {lost}; use quantize.method auto or ptq, or cluster.enabled false")
        if lost:
            log.warning("quantize.method auto: %s; not shipping it", lost)
            rejected.append(_reject(made, lost))
            break  # a longer round of the same scheme loses them too
        attempts.append((made, model))
    outcome = _choose(attempts, params, sparsity_before)
    outcome = replace(outcome, trials=[*outcome.trials, *rejected])
    return replace(outcome, choice=f"{outcome.choice}; {fallback}") if fallback else outcome


def _keep(made: Trial, reason: str) -> Trial:
    return replace(made, kept=True, reason=reason)


def _reject(made: Trial, reason: str) -> Trial:
    return replace(made, kept=False, reason=reason)


def _choose(
    attempts: list[tuple[Trial, bytes]], params: QuantizeParams, sparsity_before: float | None
) -> QuantizeOutcome:
    """The smallest attempt within tolerance, else the most accurate; each trial says why."""
    within = [pair for pair in attempts if pair[0].drop <= params.tolerable_drop]
    if within:
        best = min(within, key=lambda pair: (pair[0].size_bytes, -pair[0].accuracy))
        choice = f"{best[0].name}: smallest within tolerable_drop {params.tolerable_drop}"
    else:
        best = max(attempts, key=lambda pair: pair[0].accuracy)
        choice = f"{best[0].name}: no attempt met tolerable_drop {params.tolerable_drop}; kept the most accurate"
    trials = []
    for made, _ in attempts:
        if made is best[0]:
            trials.append(_keep(made, choice))
        elif made.drop > params.tolerable_drop:
            trials.append(_reject(made, f"drop {made.drop:.4f} > tolerable_drop {params.tolerable_drop}"))
        else:
            trials.append(_reject(made, f"larger than {best[0].name}"))
    log.info("quantize: %s", choice)
    method = "qat" if best[0].method == "qat" else "ptq"
    return QuantizeOutcome(best[1], method, trials, sparsity_before, best[0].sparsity, choice)


def _lost_zeros(made: Trial, sparsity_before: float | None) -> str:
    """Why a QAT attempt may not ship because it lost pruning's zeros ('' when it kept them).

    tfmot's sparsity-preserving QAT is known to lose zeros on some layers
    (tensorflow/model-optimization#979, #1056); this repo saw a clustered Dense layer lose them all.
    """
    if sparsity_before is None or made.sparsity is None or made.sparsity >= sparsity_before - 0.01:
        return ""
    return f"{made.name} lost the pruned zeros (sparsity {sparsity_before:.3f} -> {made.sparsity:.3f})"


def tflite_kernel_sparsity(model: bytes) -> float:
    """Fraction of exact zeros over a quantized .tflite's int8 weight tensors (rank 2 or more, constant)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    zeros = total = 0
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] != np.int8 or len(detail["shape"]) < 2:
            continue
        try:
            values = interpreter.get_tensor(detail["index"])  # constants only: activations have no data yet
        except ValueError:
            continue
        zeros += int(np.sum(values == 0))
        total += values.size
    return round(zeros / total, 6) if total else 0.0


def run(layout: Layout, params: Params) -> dict[str, Any]:
    """The quantize stage: data/tflite/model_float.tflite (reference), the shipped model, the debugger report."""
    from tasks.stages.inference import TFLiteModel

    settings = params.quantize
    calibration = images.load_calibration(layout, params.data)
    fit, validation = images.load_fit_validation(layout, params.data)
    # Converted once: the reference every attempt is scored against, and the file written.
    # The reference takes the same batch as the shipped model, so the two compare like for like.
    float_bytes = to_float_tflite(load_model(layout.float_model), settings.batch_size)
    compressed = load_model(layout.clustered_model)
    prune_report = json.loads(layout.prune_report.read_text())
    clustered = json.loads(layout.cluster_report.read_text())["enabled"]
    outcome = quantize_model(
        float_bytes,
        compressed,
        fit,
        validation,
        calibration,
        settings,
        params.train.batch_size,
        params.train.seed,
        tuple(prune_report["pruned_weights"]),
        clustered,
    )
    shipped = layout.quantized_tflite(settings.ptq_mode)
    with staging_file(layout.float_tflite) as tmp_float, staging_file(shipped) as tmp_shipped:
        tmp_float.write_bytes(float_bytes)
        tmp_shipped.write_bytes(outcome.model)
        model = TFLiteModel(tmp_shipped)
        report = {
            "method": outcome.method,
            "ptq_mode": settings.ptq_mode,
            "choice": outcome.choice,
            "float_bytes": len(float_bytes),
            "quantized_bytes": len(outcome.model),
            "input_dtype": model.input_dtype.name,
            "output_dtype": model.output_dtype.name,
            # With uint8 I/O and scale 1, a camera frame is the input as it is (Coral's convention).
            "input_scale": model.input_quantization[0],
            "input_zero_point": model.input_quantization[1],
            "takes_uint8_frames": model.takes_frames,
            "calibration_samples": len(calibration),
            "sparsity_before": outcome.sparsity_before,
            "sparsity_after": outcome.sparsity_after,
            "trials": [asdict(trial) for trial in outcome.trials],
        }
    _write_debug_report(layout, params, compressed, calibration)
    write_json(layout.quantize_report, report)
    return {key: report[key] for key in ("method", "ptq_mode", "quantized_bytes", "input_dtype")}


def _write_debug_report(layout: Layout, params: Params, model: Any, calibration: Any) -> None:
    """data/reports/quant_debug.csv and .png: per-layer int8 error (a note when not applicable)."""
    settings = params.quantize
    rows: list[dict[str, Any]] = []
    note = ""
    if not settings.debug_layers:
        note = "quantize.debug_layers is false"
    elif settings.ptq_mode != "int8":
        note = f"the debugger measures int8 error; ptq_mode is {settings.ptq_mode}"
    else:
        rows = debug_int8(model, calibration, settings)
    write_csv(layout.quant_debug_csv, rows, ["op_name", "tensor_name", "tensor_idx", "rmse_per_scale"])
    with staging_file(layout.quant_debug_plot) as tmp:
        plot_worst_layers(rows, tmp, note)


WORST = 10


def plot_worst_layers(rows: list[dict[str, Any]], path: Path, note: str = "") -> None:
    """A horizontal bar chart of the layers with the largest int8 error (RMSE in quantization steps)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    worst = rows[:WORST]
    if worst:
        labels = [f"{row.get('op_name', '?')} #{row.get('tensor_idx', '?')}" for row in worst][::-1]
        values = [float(row["rmse_per_scale"]) for row in worst][::-1]
        axes.barh(labels, values, color="tab:red")
        axes.set_xlabel("RMSE / scale (quantization steps)")
        axes.set_title(f"int8 error per layer: the {len(worst)} worst (QuantizationDebugger)")
    else:
        axes.axis("off")
        axes.text(0.5, 0.5, f"no per-layer report: {note}", ha="center", va="center", wrap=True)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
