"""prune: magnitude pruning reaches its target and strips cleanly; channel pruning shrinks what the device holds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tasks.errors import StageError
from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import STAGES, images
from tasks.stages.fit import keras, load_model, save_model
from tasks.stages.prune import check_prunable, layer_sparsity, prune_model, schedule_steps
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


# --- prune.method: channels -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def channel_pruned(trained: tuple[Layout, Params], tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """The prune stage with prune.method: channels, run on a copy that shares the trained data and float model."""
    layout, _ = trained
    copy = Layout(tmp_path_factory.mktemp("channels"))
    (copy.root / "data" / "models").mkdir(parents=True)
    (copy.root / "data" / "raw").symlink_to(layout.raw, target_is_directory=True)
    shutil.copy(layout.float_model, copy.float_model)
    STAGES["prune"](copy, repo_params(CHANNELS))
    return copy


CHANNELS = ["prune.method=channels", "prune.channel_fraction=0.5", "prune.channel_multiple=8"]


def test_channel_pruning_reports_every_layer_and_what_shrank(channel_pruned: Layout) -> None:
    report = json.loads(channel_pruned.prune_report.read_text())
    assert report["method"] == "channels" and report["pruned_weights"] == []  # nothing sparse for later steps
    channels = {row["name"]: (row["before"], row["after"]) for row in report["channels"]}
    model = load_model(channel_pruned.pruned_model)
    assert channels["classes"][0] == channels["classes"][1]  # the classifier keeps its classes
    assert any(after < before for before, after in channels.values())
    for name, (_, after) in channels.items():
        assert model.get_layer(name).output_shape[-1] == after
    totals = report["totals"]
    for key in ("parameters", "macs", "int8_param_bytes"):
        assert totals[key]["after"] < totals[key]["before"], key
    assert totals["parameters"]["after"] == model.count_params()


def test_magnitude_pruning_keeps_every_shape_and_every_byte(trained: tuple[Layout, Params]) -> None:
    layout, _ = trained
    report = json.loads(layout.prune_report.read_text())
    assert report["method"] == "magnitude"
    assert all(row["before"] == row["after"] for row in report["channels"])
    assert report["totals"]["int8_param_bytes"]["after"] == report["totals"]["int8_param_bytes"]["before"]


def test_channel_pruning_is_deterministic(trained: tuple[Layout, Params], channel_pruned: Layout, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same float model and settings give the same bytes: `reproduce` rebuilds a channel-pruned model."""
    layout, _ = trained
    params = repo_params(CHANNELS)
    fit, _ = images.load_fit_validation(layout, params.data)
    again, _ = prune_model(
        load_model(layout.float_model), fit, params.prune, params.train.batch_size, params.train.seed
    )
    save_model(again, tmp_path / "again.keras")
    assert (tmp_path / "again.keras").read_bytes() == channel_pruned.pruned_model.read_bytes()


def test_the_unpruned_model_teaches_the_fine_tune_unless_its_weight_is_zero(
    trained: tuple[Layout, Params], channel_pruned: Layout, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """prune.distill_weight is read: 0 fine-tunes on the labels alone, and that gives other weights."""
    layout, _ = trained
    assert repo_params(CHANNELS).prune.distill_weight > 0  # the fixture distilled
    params = repo_params([*CHANNELS, "prune.distill_weight=0"])
    fit, _ = images.load_fit_validation(layout, params.data)
    labels_only, _ = prune_model(
        load_model(layout.float_model), fit, params.prune, params.train.batch_size, params.train.seed
    )
    distilled = load_model(channel_pruned.pruned_model)
    assert [w.shape for w in labels_only.get_weights()] == [w.shape for w in distilled.get_weights()]
    assert any(not np.allclose(a, b) for a, b in zip(labels_only.get_weights(), distilled.get_weights(), strict=True))


def test_a_layer_channel_pruning_cannot_follow_stops_the_stage_and_writes_nothing(
    trained: tuple[Layout, Params], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    layout, _ = trained
    k = keras()
    inputs = k.Input((8, 8, 1))
    x = k.layers.Conv2DTranspose(4, 3, name="upsample")(inputs)
    outputs = k.layers.Dense(10, activation="softmax", name="classes")(k.layers.Flatten()(x))
    copy = Layout(tmp_path)
    (copy.root / "data" / "models").mkdir(parents=True)
    (copy.root / "data" / "raw").symlink_to(layout.raw, target_is_directory=True)
    save_model(k.Model(inputs, outputs), copy.float_model)
    with pytest.raises(StageError) as raised:
        STAGES["prune"](copy, repo_params(CHANNELS))
    assert str(raised.value) == (
        "prune: channel pruning cannot follow layer 'upsample' (Conv2DTranspose): not a layer it knows how "
        "to slice; use prune.method: magnitude"
    )
    assert not copy.pruned_model.exists() and not copy.prune_report.exists()
    assert sorted(p.name for p in (copy.root / "data" / "models").iterdir()) == ["float.keras"]


def test_the_run_refuses_a_model_it_cannot_follow_before_anything_trains(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A `python:` builder is called (a `file:` model loaded) and planned at the run's start, nothing written."""
    (tmp_path / "lambda_model.py").write_text(
        "import tf_keras as k\n\n\n"
        "def build(shape, classes):\n"
        "    x = k.Input(shape)\n"
        "    y = k.layers.Lambda(lambda t: t * 2.0, name='double')(k.layers.Conv2D(8, 3)(x))\n"
        "    return k.Model(x, k.layers.Dense(classes, activation='softmax')(k.layers.Flatten()(y)))\n"
    )
    params = repo_params([*CHANNELS, "train.model=python:lambda_model:build"])
    with pytest.raises(StageError, match=r"'double' \(Lambda\).*use prune\.method: magnitude"):
        check_prunable(params, tmp_path)
    check_prunable(repo_params(["train.model=python:lambda_model:build"]), tmp_path)  # magnitude: nothing to check
    check_prunable(repo_params(CHANNELS), tmp_path)  # the built-in cnn: followed whole (tests/stages/test_channels.py)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("__")) == ["lambda_model.py"]
