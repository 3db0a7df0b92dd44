"""prune: tfmot magnitude pruning reaches its target and strips cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.errors import StageError
from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import images
from tasks.stages.fit import load_model
from tasks.stages.prune import layer_sparsity, prune_model, schedule_steps
from tests.conftest import repo_params

EPS = 0.01


def test_pruned_layers_reach_the_target(trained: tuple[Layout, Params]) -> None:
    layout, params = trained
    report = json.loads(layout.prune_report.read_text())
    assert report["pruned_weights"], "some layer must have been pruned"
    assert report["sparsity"] >= params.prune.final_sparsity - EPS
    measured = layer_sparsity(load_model(layout.pruned_model))
    for name in report["pruned_weights"]:
        assert measured[name] >= params.prune.final_sparsity - EPS, name


def test_small_layers_stay_dense(trained: tuple[Layout, Params]) -> None:
    layout, params = trained
    report = json.loads(layout.prune_report.read_text())
    model = load_model(layout.pruned_model)
    for layer in model.layers:
        if layer.weights and sum(w.shape.num_elements() for w in layer.weights) < params.prune.min_layer_weights:
            assert not any(name.startswith(f"{layer.name}/") for name in report["pruned_weights"])
    assert "classes/kernel" not in report["pruned_weights"]
    assert "dense/kernel" in report["pruned_weights"]


def test_stripped_model_has_no_pruning_wrappers(trained: tuple[Layout, Params]) -> None:
    layout, _ = trained
    names = {type(layer).__name__ for layer in load_model(layout.pruned_model).layers}
    assert not any("Prune" in name for name in names)


def test_disabled_pruning_passes_the_model_through(trained: tuple[Layout, Params]) -> None:
    layout, _ = trained
    params = repo_params(["prune.enabled=false"])
    model = load_model(layout.float_model)
    fit, _ = images.load_fit_validation(layout, params.data)
    out, result = prune_model(model, fit, params.prune, params.train.batch_size, params.train.seed)
    assert out is model
    assert not result.enabled and result.pruned_weights == ()
    assert result.sparsity < 0.05


def test_no_layer_large_enough_is_a_clear_error(trained: tuple[Layout, Params]) -> None:
    layout, _ = trained
    params = repo_params(["prune.min_layer_weights=100000000"])
    fit, _ = images.load_fit_validation(layout, params.data)
    with pytest.raises(StageError, match=r"prune\.min_layer_weights"):
        prune_model(load_model(layout.float_model), fit, params.prune, params.train.batch_size, 0)


@pytest.mark.parametrize(
    ("samples", "batch", "epochs", "frequency"), [(1437, 32, 10, 10), (50, 32, 1, 100), (7, 1, 3, 4)]
)
def test_schedule_ends_on_a_pruning_step_before_training_ends(
    samples: int, batch: int, epochs: int, frequency: int
) -> None:
    end_step, used_frequency = schedule_steps(samples, batch, epochs, frequency)
    total = int(np.ceil(samples / batch)) * epochs
    assert 0 < end_step < total
    assert end_step % used_frequency == 0
