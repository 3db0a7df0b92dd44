"""cluster stage: tfmot weight clustering (weight sharing) after pruning, zeros kept, then strip_clustering.

Deep Compression's second step: each clustered kernel keeps only `number_of_clusters` distinct
values (plus its zeros), so an int8 model of it compresses far better. With `preserve_sparsity`,
tfmot keeps every pruned weight at zero while it fine-tunes the centroids. Later, QAT uses tfmot's
collaborative schemes so the int8 model keeps both (tasks/stages/quantize.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.errors import StageError
from tasks.fsutil import write_json
from tasks.layout import Layout
from tasks.params import ClusterParams, Params
from tasks.stages import images
from tasks.stages.fit import compile_model, epoch_logger, keras, load_model, save_model, seed_everything
from tasks.stages.footprint import kernel_arrays, layer_sparsity, overall_sparsity
from tasks.stages.prune import prunable_size

if TYPE_CHECKING:
    import tf_keras

    from tasks.stages.images import Images

log = logging.getLogger(__name__)

_INIT = {
    "kmeans_plus_plus": "KMEANS_PLUS_PLUS",
    "linear": "LINEAR",
    "density_based": "DENSITY_BASED",
    "random": "RANDOM",
}


@dataclass(frozen=True)
class ClusterResult:
    """Unique values and zeros per clustered kernel, before and after."""

    enabled: bool
    number_of_clusters: int
    clustered_weights: tuple[str, ...]
    unique_before: dict[str, int]
    unique_after: dict[str, int]
    sparsity_before: float
    sparsity_after: float
    layers_sparsity: dict[str, float]


def unique_values(model: tf_keras.Model) -> dict[str, int]:
    """Distinct values in each kernel, by 'layer/kernel' name."""
    return {name: int(np.unique(values).size) for name, values in kernel_arrays(model)}


def cluster_model(
    model: tf_keras.Model, train: Images, params: ClusterParams, batch_size: int, seed: int, sparse: tuple[str, ...]
) -> tuple[tf_keras.Model, ClusterResult]:
    """Cluster every kernel of at least params.min_layer_weights weights; fine-tune; strip the wrappers."""
    import tensorflow_model_optimization as tfmot

    before = unique_values(model)
    sparsity_before = overall_sparsity(model, set(sparse)) if sparse else overall_sparsity(model)
    if not params.enabled:
        log.info("cluster.enabled is false: passing the model through")
        result = ClusterResult(False, 0, (), before, before, sparsity_before, sparsity_before, layer_sparsity(model))
        return model, result
    clustering = tfmot.clustering.keras
    settings = {
        "number_of_clusters": params.number_of_clusters,
        "cluster_centroids_init": getattr(clustering.CentroidInitialization, _INIT[params.centroid_init]),
        # Keep pruned weights at zero: the zeros are a cluster of their own that never moves.
        "preserve_sparsity": bool(sparse),
    }
    seed_everything(seed)

    def wrap(layer: tf_keras.layers.Layer) -> tf_keras.layers.Layer:
        if prunable_size(layer) >= params.min_layer_weights and clustering_supports(layer):
            return clustering.cluster_weights(layer, **settings)
        return layer

    try:
        wrapped = keras().models.clone_model(model, clone_function=wrap)
    except (ValueError, TypeError, RuntimeError) as error:
        raise StageError(
            f"cluster: tfmot cannot cluster this model ({' '.join(str(error).split())[:160]}); "
            "set cluster.enabled: false"
        ) from None
    names = tuple(
        f"{layer.layer.name}/{weight}"
        for layer in wrapped.layers
        if hasattr(layer, "original_clusterable_weights")
        for weight in layer.original_clusterable_weights
    )
    if not names:
        raise StageError(
            f"cluster: no layer has cluster.min_layer_weights={params.min_layer_weights} weights or more; "
            "lower it or set cluster.enabled: false"
        )
    compile_model(wrapped, params.learning_rate)
    wrapped.fit(
        train.batches(batch_size, shuffle_seed=seed),
        epochs=params.epochs,
        verbose=0,
        callbacks=[epoch_logger("cluster", params.epochs)],
    )
    stripped = clustering.strip_clustering(wrapped)
    after = unique_values(stripped)
    result = ClusterResult(
        enabled=True,
        number_of_clusters=params.number_of_clusters,
        clustered_weights=names,
        unique_before={name: before[name] for name in names if name in before},
        unique_after={name: after[name] for name in names if name in after},
        sparsity_before=sparsity_before,
        sparsity_after=overall_sparsity(stripped, set(sparse)) if sparse else overall_sparsity(stripped),
        layers_sparsity=layer_sparsity(stripped),
    )
    log.info(
        "clustered %d kernels to %d values each; sparsity %.3f -> %.3f",
        len(names),
        params.number_of_clusters,
        result.sparsity_before,
        result.sparsity_after,
    )
    return stripped, result


def clustering_supports(layer: tf_keras.layers.Layer) -> bool:
    """Whether tfmot's clustering registry has weights to cluster in this layer.

    The registry is tfmot's own answer (a depthwise convolution, for one, is "supported" with no
    weight to cluster); its public API only offers the wrapping itself.
    """
    from tensorflow_model_optimization.python.core.clustering.keras import clustering_registry

    registry = clustering_registry.ClusteringRegistry
    return bool(registry.supports(layer) and registry._weight_names(layer))


def run(layout: Layout, params: Params) -> dict[str, Any]:
    """The cluster stage: data/models/clustered.keras, the pruned model with clustered weights (or as it is)."""
    fit, _ = images.load_fit_validation(layout, params.data)
    pruned = tuple(json.loads(layout.prune_report.read_text())["pruned_weights"])
    clustered, result = cluster_model(
        load_model(layout.pruned_model), fit, params.cluster, params.train.batch_size, params.train.seed, pruned
    )
    save_model(clustered, layout.clustered_model)
    write_json(layout.cluster_report, asdict(result))
    return {"enabled": result.enabled, "sparsity_after": result.sparsity_after}
