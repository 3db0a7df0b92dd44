"""prune stage: tfmot magnitude pruning (zeros) or channel pruning (fewer channels), then fine-tuning.

`prune.method: magnitude` wraps the large layers in tfmot's prune_low_magnitude with a
PolynomialDecay schedule and strips the wrappers after fine-tuning: the same shapes, with zeros,
which only the gzipped file (the download) profits from. `prune.method: channels` removes whole
channels (tasks/stages/channels.py) and fine-tunes the smaller dense model: fewer bytes held and
fewer multiply-accumulates on every device. Either way prune.json reports the model's cost
before and after: output channels per layer, parameters, multiply-accumulates, int8 parameter bytes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.errors import StageError
from tasks.fsutil import write_csv, write_json
from tasks.layout import Layout
from tasks.params import Params, PruneParams
from tasks.stages import images
from tasks.stages.channels import apply_plan, output_channels, plan_channels
from tasks.stages.distill import distiller, teacher_probabilities
from tasks.stages.fit import compile_model, epoch_logger, keras, load_model, save_model, seed_everything
from tasks.stages.footprint import KERNELS, keras_macs, layer_sparsity, overall_sparsity, short_name

if TYPE_CHECKING:
    import tf_keras

    from tasks.stages.images import Images

log = logging.getLogger(__name__)

# Representative images for the int8 conversions that measure prune.json's parameter bytes: the
# bytes do not depend on the ranges calibration finds (a weight is one byte, a bias four), so a few do.
FOOTPRINT_IMAGES = 8


@dataclass(frozen=True)
class PruneResult:
    """What pruning did: the method and the measured sparsity (prune.json adds the cost before and after)."""

    enabled: bool
    method: str
    target_sparsity: float | None  # magnitude's final_sparsity; None when nothing aims at zeros
    sparsity: float
    layers: dict[str, float]
    # Weights whose zeros later steps must keep (cluster, QAT's collaborative schemes): tfmot's
    # masked kernels after magnitude pruning; none after channel pruning, which leaves nothing sparse.
    pruned_weights: tuple[str, ...]
    end_step: int


def schedule_steps(num_samples: int, batch_size: int, epochs: int, frequency: int) -> tuple[int, int]:
    """(end_step, frequency) for a ramp that reaches its target three quarters into fine-tuning.

    tfmot only updates masks on steps that are multiples of `frequency`, so end_step is put on
    such a step; the last quarter of fine-tuning then recovers accuracy at the final mask.
    """
    total = math.ceil(num_samples / batch_size) * epochs
    frequency = max(1, min(frequency, total // 4))
    end_step = (int(total * 0.75) // frequency) * frequency
    return max(end_step, frequency), frequency


def prune_model(
    model: tf_keras.Model,
    train: Images,
    params: PruneParams,
    batch_size: int,
    seed: int,
    lr_schedule: str = "constant",
) -> tuple[tf_keras.Model, PruneResult]:
    """Prune by params.method while fine-tuning: magnitude to params.final_sparsity (stripped), or channels."""
    import tensorflow_model_optimization as tfmot

    if not params.enabled:
        log.info("prune.enabled is false: passing the float model through")
        layers = layer_sparsity(model)
        return model, PruneResult(False, params.method, 0.0, overall_sparsity(model), layers, (), 0)
    if params.method == "channels":
        return prune_channels_and_fine_tune(model, train, params, batch_size, seed, lr_schedule)

    end_step, frequency = schedule_steps(len(train), batch_size, params.epochs, params.frequency)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=params.initial_sparsity,
        final_sparsity=params.final_sparsity,
        begin_step=0,
        end_step=end_step,
        frequency=frequency,
    )
    prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude

    def wrap(layer: tf_keras.layers.Layer) -> tf_keras.layers.Layer:
        # Small layers (the first convolution, the classifier) hold a sliver of the weights
        # but much of the accuracy, so they stay dense, as tfmot's guide recommends.
        if prunable_size(layer) >= params.min_layer_weights:
            return prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    wrapped = _wrap_each(model, wrap, "prune.min_layer_weights (layers with fewer kernel weights stay dense)")
    if not any(hasattr(layer, "pruning_vars") for layer in wrapped.layers):
        raise StageError(
            f"prune: no layer has prune.min_layer_weights={params.min_layer_weights} weights or more; "
            "lower it or set prune.enabled: false"
        )
    seed_everything(seed)
    compile_model(wrapped, params.learning_rate)
    wrapped.fit(
        train.batches(batch_size, shuffle_seed=seed),
        epochs=params.epochs,
        verbose=0,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), epoch_logger("prune", params.epochs)],
    )
    # The weights tfmot actually masked (not, e.g., a separable conv's depthwise kernel):
    # the target applies to these, so the headline sparsity is measured over them.
    pruned = tuple(
        f"{wrapper.layer.name}/{short_name(weight.name)}"
        for wrapper in wrapped.layers
        for weight, _mask, _threshold in getattr(wrapper, "pruning_vars", [])
    )
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    result = PruneResult(
        enabled=True,
        method="magnitude",
        target_sparsity=params.final_sparsity,
        sparsity=overall_sparsity(stripped, set(pruned)),
        layers=layer_sparsity(stripped),
        pruned_weights=pruned,
        end_step=end_step,
    )
    log.info("pruned to %.1f%% zeros (target %.1f%%)", 100 * result.sparsity, 100 * params.final_sparsity)
    return stripped, result


def prune_channels_and_fine_tune(
    model: tf_keras.Model, train: Images, params: PruneParams, batch_size: int, seed: int, lr_schedule: str
) -> tuple[tf_keras.Model, PruneResult]:
    """Remove params.channel_fraction of every prunable channel group, then fine-tune for params.epochs.

    The fine-tune is a training phase like the train stage's: with `train.lr_schedule: cosine` its
    rate decays to 0 over its epochs, so it ends on a settled model (tfmot's magnitude ramp keeps
    its constant rate). Measured on MobileNetV2 (alpha 0.35, 96x96 digits) at fraction 0.5, 10
    epochs: int8 test accuracy 0.947 at 0.0005 constant, 0.950 at 0.0005 cosine, 0.964 at 0.001
    constant (its last epochs unsettled), 0.989 at 0.002 cosine, against 0.975 unpruned (before
    distillation). With params.distill_weight above 0 the unpruned model teaches: the loss mixes
    the labels with its softened outputs (tasks/stages/distill.py).
    """
    # The plan refuses a layer it cannot follow before anything is built or trained.
    plan = plan_channels(model, params.channel_fraction, params.channel_multiple)
    pruned = apply_plan(model, plan)
    before = output_channels(model)
    log.info(
        "channel pruning: %d groups, output channels %d -> %d",
        len(plan.groups),
        sum(before[name] for name in plan.keep),
        sum(len(kept) for kept in plan.keep.values()),
    )
    seed_everything(seed)
    rate: float | Any = params.learning_rate
    if lr_schedule == "cosine":
        steps = math.ceil(len(train) / batch_size) * params.epochs
        rate = keras().optimizers.schedules.CosineDecay(params.learning_rate, decay_steps=steps)
    if params.distill_weight > 0:
        # The unpruned model teaches the pruned one (tasks/stages/distill.py): its probabilities,
        # computed once, join the labels in the loss.
        teacher = teacher_probabilities(model, train, batch_size)
        log.info(
            "fine-tuning on the labels and the unpruned model's outputs (prune.distill_weight %g, temperature %g)",
            params.distill_weight,
            params.distill_temperature,
        )
        trainer = distiller(pruned, params.distill_temperature, params.distill_weight, rate)
        batches = train.batches(batch_size, shuffle_seed=seed, targets=teacher)
    else:
        compile_model(pruned, rate)
        trainer, batches = pruned, train.batches(batch_size, shuffle_seed=seed)
    trainer.fit(batches, epochs=params.epochs, verbose=0, callbacks=[epoch_logger("prune", params.epochs)])
    result = PruneResult(
        enabled=True,
        method="channels",
        target_sparsity=None,
        sparsity=overall_sparsity(pruned),
        layers=layer_sparsity(pruned),
        pruned_weights=(),
        end_step=0,
    )
    return pruned, result


def check_prunable(params: Params, root: Path) -> None:
    """Before a run starts: refuse, in one line, a model whose layers channel pruning cannot follow.

    An unsupported layer is only known once the model exists, so a `file:` model is loaded and a
    `python:` builder called (for a placeholder two-class head: the layers are what is checked) and
    the channels planned, before anything trains or is written. The built-in sources are followed
    whole (tests/stages/test_channels.py plans each), so they cost no TensorFlow import here; the
    prune stage plans again before fine-tuning, for runs that start elsewhere (retrain, dvc repro).
    """
    from tasks.params import BUILT_IN_MODELS
    from tasks.stages.models import source_of

    prune = params.prune
    if not (prune.enabled and prune.method == "channels") or params.train.model in BUILT_IN_MODELS:
        return
    shape = (params.data.image_size, params.data.image_size, params.data.channels)
    built = source_of(params.train.model)(shape, 2, params.train, root)
    plan_channels(built.model, prune.channel_fraction, prune.channel_multiple)


def _wrap_each(
    model: tf_keras.Model, wrap: Callable[[tf_keras.layers.Layer], tf_keras.layers.Layer], avoid: str
) -> tf_keras.Model:
    """clone_model with `wrap` applied to each layer; a layer tfmot refuses is named with the setting that avoids it."""
    current = ""

    def wrap_one(layer: tf_keras.layers.Layer) -> tf_keras.layers.Layer:
        nonlocal current
        current = f"{layer.name} ({type(layer).__name__})"
        return wrap(layer)

    try:
        return keras().models.clone_model(model, clone_function=wrap_one)
    except (ValueError, TypeError, RuntimeError) as error:
        reason = " ".join(str(error).split())[:160]
        raise StageError(
            f"prune: tfmot cannot prune layer {current}: {reason}; set prune.enabled: false or raise {avoid}"
        ) from None


def prunable_size(layer: tf_keras.layers.Layer) -> int:
    """Number of kernel weights in a layer (0 for layers without a kernel)."""
    return sum(int(weight.shape.num_elements()) for weight in layer.weights if short_name(weight.name) in KERNELS)


def model_cost(
    before: tf_keras.Model, after: tf_keras.Model, representative: Images
) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """Output channels per weighted layer, and parameters, MACs and int8 parameter bytes, before and after.

    The int8 parameter bytes are measured, not predicted: a model is converted to int8 as the
    quantize stage converts it and tflite_footprint reads the dense constant bytes of the result.
    A model whose every layer kept its shape (magnitude pruning, or none) holds the same bytes, its
    zeros included, so it is not converted a second time.
    """
    channels_before, channels_after = output_channels(before), output_channels(after)
    layers = [
        {"name": name, "before": channels, "after": channels_after.get(name, 0)}
        for name, channels in channels_before.items()
    ]
    parameters = {"before": int(before.count_params()), "after": int(after.count_params())}
    bytes_before = int8_param_bytes(before, representative)
    same_shapes = channels_after == channels_before and parameters["after"] == parameters["before"]
    totals = {
        "parameters": parameters,
        "macs": {"before": keras_macs(before), "after": keras_macs(after)},
        "int8_param_bytes": {
            "before": bytes_before,
            "after": bytes_before if same_shapes else int8_param_bytes(after, representative),
        },
    }
    return layers, totals


def int8_param_bytes(model: tf_keras.Model, representative: Images) -> int:
    """The dense constant bytes of the model's int8 .tflite (tasks/stages/footprint.py tflite_footprint)."""
    import tempfile

    from tasks.stages.footprint import tflite_footprint
    from tasks.stages.quantize import int8_tflite_bytes

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model_int8.tflite"
        path.write_bytes(int8_tflite_bytes(model, representative))
        return tflite_footprint(path).param_bytes


def run(layout: Layout, params: Params) -> dict[str, Any]:
    """The prune stage: data/models/pruned.keras, the float model pruned and fine-tuned (wrappers stripped)."""
    fit, _ = images.load_fit_validation(layout, params.data)
    model = load_model(layout.float_model)
    train = params.train
    pruned, result = prune_model(model, fit, params.prune, train.batch_size, train.seed, train.lr_schedule)
    layers, totals = model_cost(model, pruned, fit.head(FOOTPRINT_IMAGES))
    report = {**asdict(result), "channels": layers, "totals": totals}
    save_model(pruned, layout.pruned_model)
    write_json(layout.prune_report, report)
    write_csv(layout.sparsity, [{"layer": name, "sparsity": value} for name, value in result.layers.items()])
    log.info(
        "prune (%s): parameters %d -> %d, MACs %d -> %d, int8 parameter bytes %d -> %d",
        result.method,
        *(totals[key][when] for key in ("parameters", "macs", "int8_param_bytes") for when in ("before", "after")),
    )
    return {
        "method": result.method,
        "sparsity": result.sparsity,
        "int8_param_bytes": totals["int8_param_bytes"]["after"],
        "macs": totals["macs"]["after"],
    }
