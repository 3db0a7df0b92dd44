"""prune stage: tfmot magnitude pruning with a PolynomialDecay schedule, then strip_pruning."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.errors import StageError
from tasks.fsutil import write_csv, write_json
from tasks.layout import Layout
from tasks.params import Params, PruneParams
from tasks.stages import images
from tasks.stages.fit import compile_model, epoch_logger, keras, load_model, save_model, seed_everything

if TYPE_CHECKING:
    import tf_keras

    from tasks.stages.images import Images

log = logging.getLogger(__name__)

# Weight names that carry a layer's multiply-accumulates; biases and BatchNorm statistics are
# never pruned by tfmot, so counting them would understate the sparsity that was asked for.
_KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")


@dataclass(frozen=True)
class PruneResult:
    """Measured sparsity of the stripped model."""

    enabled: bool
    target_sparsity: float
    sparsity: float
    layers: dict[str, float]
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
    model: tf_keras.Model, train: Images, params: PruneParams, batch_size: int, seed: int
) -> tuple[tf_keras.Model, PruneResult]:
    """Prune every prunable layer to params.final_sparsity while fine-tuning; return it stripped."""
    import tensorflow_model_optimization as tfmot

    if not params.enabled:
        log.info("prune.enabled is false: passing the float model through")
        layers = layer_sparsity(model)
        return model, PruneResult(False, 0.0, overall_sparsity(model), layers, (), 0)

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
        f"{wrapper.layer.name}/{_short(weight.name)}"
        for wrapper in wrapped.layers
        for weight, _mask, _threshold in getattr(wrapper, "pruning_vars", [])
    )
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    result = PruneResult(
        enabled=True,
        target_sparsity=params.final_sparsity,
        sparsity=overall_sparsity(stripped, set(pruned)),
        layers=layer_sparsity(stripped),
        pruned_weights=pruned,
        end_step=end_step,
    )
    log.info("pruned to %.1f%% zeros (target %.1f%%)", 100 * result.sparsity, 100 * params.final_sparsity)
    return stripped, result


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
    return sum(int(weight.shape.num_elements()) for weight in layer.weights if _short(weight.name) in _KERNELS)


def _short(weight_name: str) -> str:
    """'dense/kernel:0' -> 'kernel'."""
    return weight_name.split("/")[-1].split(":")[0]


def kernel_arrays(model: tf_keras.Model) -> list[tuple[str, np.ndarray]]:
    return [
        (f"{layer.name}/{_short(weight.name)}", weight.numpy())
        for layer in model.layers
        for weight in layer.weights
        if _short(weight.name) in _KERNELS
    ]


def layer_sparsity(model: tf_keras.Model) -> dict[str, float]:
    """Fraction of exact zeros in each kernel, by 'layer/kernel' name."""
    return {name: round(float(np.mean(values == 0)), 6) for name, values in kernel_arrays(model)}


def overall_sparsity(model: tf_keras.Model, names: set[str] | None = None) -> float:
    """Fraction of exact zeros over the named kernels together (all kernels by default)."""
    kernels = [values for name, values in kernel_arrays(model) if names is None or name in names]
    total = sum(values.size for values in kernels)
    zeros = sum(int(np.sum(values == 0)) for values in kernels)
    return round(zeros / total, 6) if total else 0.0


def run(layout: Layout, params: Params) -> dict[str, Any]:
    """The prune stage: data/models/pruned.keras, the float model pruned and fine-tuned, wrappers stripped."""
    fit, _ = images.load_fit_validation(layout, params.data)
    model = load_model(layout.float_model)
    pruned, result = prune_model(model, fit, params.prune, params.train.batch_size, params.train.seed)
    save_model(pruned, layout.pruned_model)
    write_json(layout.prune_report, asdict(result))
    write_csv(layout.sparsity, [{"layer": name, "sparsity": value} for name, value in result.layers.items()])
    return {"sparsity": result.sparsity, "target_sparsity": result.target_sparsity}
