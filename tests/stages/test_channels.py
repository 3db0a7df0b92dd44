"""channels: equivalence with a model sliced by hand, one test per dependency rule, refusals, every model source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.stages.channels import (
    ChannelPruningError,
    apply_plan,
    count_params,
    kept_count,
    output_channels,
    plan_channels,
    prune_channels,
)
from tasks.stages.fit import keras
from tasks.stages.footprint import keras_macs
from tests.conftest import repo_params

k = keras()
L = k.layers


def randomise(model: Any, seed: int = 0) -> Any:
    """Random weights everywhere, BatchNorm statistics included, so every slice shows in the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = layer.get_weights()
        if isinstance(layer, L.BatchNormalization):
            # gamma, beta, mean, variance: variance positive, gamma away from 0
            values = [
                rng.uniform(0.2, 2.0, v.shape) if i in (0, 3) else rng.normal(0, 0.5, v.shape)
                for i, v in enumerate(values)
            ]
        else:
            values = [rng.normal(0, 0.5, v.shape) for v in values]
        layer.set_weights([v.astype("float32") for v in values])
    return model


def randomise_batchnorm(model: Any, x: np.ndarray, seed: int = 0) -> None:
    """Random BatchNorm gamma/beta, then moving statistics measured on `x` (momentum 0), so signals survive depth.

    Deep models keep their initial kernels; random statistics would collapse the output to a
    constant that no slicing error could change.
    """
    rng = np.random.default_rng(seed)
    norms = [layer for layer in model.layers if isinstance(layer, L.BatchNormalization)]
    for layer in norms:
        c = layer.gamma.shape[0]
        layer.gamma.assign(rng.uniform(0.5, 1.5, c))
        layer.beta.assign(rng.normal(0, 0.1, c))
        layer.momentum = 0.0
    model(x, training=True)  # moving statistics := this batch's
    for layer in norms:
        layer.momentum = 0.99


def images(shape: tuple[int, ...], count: int = 2, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (count, *shape)).astype("float32")


def outputs(model: Any, x: np.ndarray) -> np.ndarray:
    return model(x, training=False).numpy()


def block_model() -> Any:
    """Residual Add over a depthwise block, a Concatenate, a SeparableConv2D, a Dense classifier."""
    x = k.Input((8, 8, 3), name="img")
    a = L.Conv2D(8, 3, padding="same", use_bias=False, name="a")(x)
    a = L.BatchNormalization(name="a_bn")(a)
    a = L.ReLU(name="a_relu")(a)
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(a)
    d = L.BatchNormalization(name="dw_bn")(d)
    d = L.ReLU(6.0, name="dw_relu")(d)
    p = L.Conv2D(8, 1, name="p")(d)
    r = L.Add(name="add")([a, p])
    c = L.Conv2D(4, 1, activation="relu", name="c")(r)
    cat = L.Concatenate(name="cat")([r, c])
    s = L.SeparableConv2D(6, 3, padding="same", name="sep")(cat)
    g = L.GlobalAveragePooling2D(name="gap")(s)
    out = L.Dense(3, name="classes")(g)
    return randomise(k.Model(x, out, name="block"))


def everything_model() -> Any:
    """Every supported kind at once: residual, depthwise, concat, padding, dropout, reshape, flatten."""
    x = k.Input((8, 8, 3), name="img")
    y = L.Rescaling(1 / 127.5, offset=-1, name="scale")(x)
    y = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(y)
    y = L.BatchNormalization(name="stem_bn")(y)
    y = L.Activation("relu", name="stem_act")(y)
    z = L.ZeroPadding2D(1, name="pad")(y)
    z = L.DepthwiseConv2D(3, name="dw")(z)
    z = L.BatchNormalization(name="dw_bn")(z)
    z = L.Conv2D(8, 1, name="proj")(z)
    y = L.Add(name="add")([y, z])
    w = L.Conv2D(4, 1, name="side")(y)
    y = L.Concatenate(name="cat")([y, w])
    y = L.MaxPooling2D(2, name="pool")(y)
    y = L.Dropout(0.2, name="drop")(y)
    y = L.Reshape((16, 12), name="rows")(y)
    y = L.Dense(6, activation="relu", name="rowwise")(y)
    y = L.Flatten(name="flat")(y)
    y = L.Dense(10, activation="relu", name="hidden")(y)
    out = L.Dense(4, activation="softmax", name="classes")(y)
    return randomise(k.Model(x, out, name="everything"))


def test_fraction_zero_changes_nothing() -> None:
    model = everything_model()
    plan = plan_channels(model, 0.0, 8)
    assert all(len(kept) == model.get_layer(name).output_shape[-1] for name, kept in plan.keep.items())
    same = apply_plan(model, plan)
    x = images((8, 8, 3))
    np.testing.assert_allclose(outputs(same, x), outputs(model, x), rtol=1e-6, atol=1e-6)
    assert count_params(same) == count_params(model)
    assert [layer.name for layer in same.layers] == [layer.name for layer in model.layers]


def test_everything_model_prunes_and_runs() -> None:
    model = everything_model()
    pruned, report = prune_channels(model, 0.5)
    assert report.params_after < report.params_before and report.macs_after < report.macs_before
    assert outputs(pruned, images((8, 8, 3))).shape == (2, 4)


def test_matches_reference_sliced_by_hand() -> None:
    """The pruned model computes what a model built by hand from the kept channels' weights computes."""
    model = block_model()
    plan = plan_channels(model, 0.5, 1)
    w = {layer.name: layer.get_weights() for layer in model.layers}

    # Importance by hand: the a/p group sums |gamma| of a's BatchNorm and p's filter L1 (p has no BatchNorm).
    score = np.abs(w["a_bn"][0]) + np.abs(w["p"][0]).sum(axis=(0, 1, 2))
    ka = np.sort(np.argsort(-score)[:4])
    np.testing.assert_array_equal(plan.keep["a"], ka)
    by_l1 = np.abs(w["a"][0]).sum(axis=(0, 1, 2)) + np.abs(w["p"][0]).sum(axis=(0, 1, 2))
    np.testing.assert_array_equal(plan_channels(model, 0.5, 1, "l1").keep["a"], np.sort(np.argsort(-by_l1)[:4]))
    kc = np.sort(np.argsort(-np.abs(w["c"][0]).sum(axis=(0, 1, 2)))[:2])
    ks = np.sort(np.argsort(-np.abs(w["sep"][1]).sum(axis=(0, 1, 2)))[:3])
    np.testing.assert_array_equal(plan.keep["c"], kc)
    np.testing.assert_array_equal(plan.keep["sep"], ks)

    x = k.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", use_bias=False, name="a")(x)
    a = L.BatchNormalization(name="a_bn")(a)
    a = L.ReLU()(a)
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(a)
    d = L.BatchNormalization(name="dw_bn")(d)
    d = L.ReLU(6.0)(d)
    p = L.Conv2D(4, 1, name="p")(d)
    r = L.Add()([a, p])
    c = L.Conv2D(2, 1, activation="relu", name="c")(r)
    cat = L.Concatenate()([r, c])
    s = L.SeparableConv2D(3, 3, padding="same", name="sep")(cat)
    out = L.Dense(3, name="classes")(L.GlobalAveragePooling2D()(s))
    reference = k.Model(x, out)
    rows = np.concatenate([ka, 8 + kc])  # the concatenation's kept positions
    reference.get_layer("a").set_weights([w["a"][0][:, :, :, ka]])
    reference.get_layer("a_bn").set_weights([v[ka] for v in w["a_bn"]])
    reference.get_layer("dw").set_weights([w["dw"][0][:, :, ka, :], w["dw"][1][ka]])
    reference.get_layer("dw_bn").set_weights([v[ka] for v in w["dw_bn"]])
    reference.get_layer("p").set_weights([w["p"][0][:, :, ka, :][:, :, :, ka], w["p"][1][ka]])
    reference.get_layer("c").set_weights([w["c"][0][:, :, ka, :][:, :, :, kc], w["c"][1][kc]])
    reference.get_layer("sep").set_weights(
        [w["sep"][0][:, :, rows, :], w["sep"][1][:, :, rows, :][:, :, :, ks], w["sep"][2][ks]]
    )
    reference.get_layer("classes").set_weights([w["classes"][0][ks, :], w["classes"][1]])

    pruned = apply_plan(model, plan)
    xs = images((8, 8, 3), 4)
    expected = outputs(reference, xs)
    assert np.ptp(expected, axis=0).min() > 1e-2  # the output depends on the input
    np.testing.assert_allclose(outputs(pruned, xs), expected, rtol=1e-5, atol=1e-5)


def test_equal_importance_keeps_the_lower_channels() -> None:
    """Ties are broken by channel index, so the same weights always give the same plan."""
    x = k.Input((4, 4, 2))
    y = L.Conv2D(8, 1, name="a", kernel_initializer="ones", use_bias=False)(x)
    model = k.Model(x, L.Dense(2, name="classes")(L.Flatten()(y)))
    np.testing.assert_array_equal(plan_channels(model, 0.5, 1).keep["a"], [0, 1, 2, 3])


def test_add_inputs_form_one_group() -> None:
    model = block_model()
    plan = plan_channels(model, 0.5, 1)
    assert ("a", "p") in plan.groups
    np.testing.assert_array_equal(plan.keep["a"], plan.keep["p"])
    pruned = apply_plan(model, plan)
    assert pruned.get_layer("add").output_shape[-1] == 4


def test_depthwise_follows_its_input() -> None:
    x = k.Input((6, 6, 2))
    y = L.Conv2D(6, 1, name="a")(x)
    y = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(y)
    y = L.Conv2D(3, 1, name="b")(y)
    model = randomise(k.Model(x, L.GlobalAveragePooling2D()(y)))
    plan = plan_channels(model, 0.5, 1)
    kept = plan.keep["a"]
    pruned = apply_plan(model, plan)
    kernel, bias = model.get_layer("dw").get_weights()
    new_kernel, new_bias = pruned.get_layer("dw").get_weights()
    np.testing.assert_array_equal(new_kernel, kernel[:, :, kept, :])
    np.testing.assert_array_equal(new_bias, bias.reshape(6, 2)[kept].ravel())  # output c*2+j comes from input c
    rows = (2 * kept[:, None] + np.arange(2)).ravel()
    np.testing.assert_array_equal(
        pruned.get_layer("b").get_weights()[0], model.get_layer("b").get_weights()[0][:, :, rows]
    )


def test_batchnorm_follows_its_input() -> None:
    x = k.Input((4, 4, 2))
    y = L.Conv2D(6, 1, name="a")(x)
    y = L.BatchNormalization(name="bn")(y)
    model = randomise(k.Model(x, L.Dense(2, name="classes")(L.GlobalAveragePooling2D()(y))))
    plan = plan_channels(model, 0.5, 1)
    pruned = apply_plan(model, plan)
    for new, old in zip(pruned.get_layer("bn").get_weights(), model.get_layer("bn").get_weights(), strict=True):
        np.testing.assert_array_equal(new, old[plan.keep["a"]])  # gamma, beta, moving mean and variance


def test_concatenate_maps_channel_ranges() -> None:
    x = k.Input((4, 4, 3))
    a = L.Conv2D(6, 1, name="a")(x)
    b = L.Conv2D(4, 1, name="b")(x)
    y = L.Conv2D(5, 1, name="after")(L.Concatenate(name="cat")([a, b]))
    model = randomise(k.Model(x, L.Flatten()(y)))
    plan = plan_channels(model, 0.5, 1)
    pruned = apply_plan(model, plan)
    rows = np.concatenate([plan.keep["a"], 6 + plan.keep["b"]])
    before = model.get_layer("after").get_weights()[0]
    np.testing.assert_array_equal(
        pruned.get_layer("after").get_weights()[0], before[:, :, rows][..., plan.keep["after"]]
    )


def test_flatten_maps_positions() -> None:
    x = k.Input((2, 3, 1))
    y = L.Conv2D(4, 1, name="conv")(x)
    y = L.Flatten(name="flat")(y)
    y = L.Dense(6, name="hidden")(y)
    model = randomise(k.Model(x, L.Dense(2, name="classes")(y)))
    plan = plan_channels(model, 0.5, 1)
    pruned = apply_plan(model, plan)
    kc, kh = plan.keep["conv"], plan.keep["hidden"]
    rows = [position * 4 + c for position in range(6) for c in kc]  # channel c at each of the 2x3 positions
    np.testing.assert_array_equal(
        pruned.get_layer("hidden").get_weights()[0], model.get_layer("hidden").get_weights()[0][rows][:, kh]
    )


def test_reshape_keeps_or_pins_the_channel_axis() -> None:
    x = k.Input((4, 4, 2))
    a = L.Conv2D(8, 1, name="a")(x)
    rows = L.Reshape((16, 8), name="rows")(a)  # channel axis stays last: a is prunable
    b = L.Conv2D(8, 1, name="b")(x)
    split = L.Reshape((4, 4, 4, 2), name="split")(b)  # splits the channel axis: b keeps all
    y = L.Concatenate()([L.Flatten()(rows), L.Flatten()(split)])
    model = randomise(k.Model(x, L.Dense(2, name="classes")(y)))
    plan = plan_channels(model, 0.5, 1)
    assert "b" in plan.fixed and "a" not in plan.fixed
    pruned = apply_plan(model, plan)
    assert pruned.get_layer("rows").output_shape == (None, 16, 4)
    assert outputs(pruned, images((4, 4, 2))).shape == (2, 2)


def test_squeeze_excite_multiply_ties_the_gate_to_its_input() -> None:
    """x * sigmoid(Dense(Dense(GAP(x)))) reshaped to (1, 1, C): the gate's units go with x's channels."""
    x = k.Input((4, 4, 3))
    f = L.Conv2D(8, 1, name="f")(x)
    g = L.GlobalAveragePooling2D(name="squeeze")(f)
    g = L.Dense(4, activation="relu", name="reduce")(g)
    g = L.Dense(8, activation="sigmoid", name="expand")(g)
    y = L.Multiply(name="excite")([f, L.Reshape((1, 1, 8), name="gate")(g)])
    model = randomise(k.Model(x, L.Dense(2, name="classes")(L.Flatten()(y))))
    plan = plan_channels(model, 0.5, 1)
    assert ("f", "expand") in plan.groups
    pruned = apply_plan(model, plan)
    assert pruned.get_layer("gate").output_shape == (None, 1, 1, 4)
    np.testing.assert_array_equal(
        pruned.get_layer("expand").get_weights()[1], model.get_layer("expand").get_weights()[1][plan.keep["f"]]
    )


def test_a_concatenation_added_to_a_convolution_keeps_its_channels() -> None:
    """A tie that is not one whole group to another pins every group in it: conservative, never wrong."""
    x = k.Input((4, 4, 3))
    a = L.Conv2D(4, 1, name="a")(x)
    b = L.Conv2D(4, 1, name="b")(x)
    c = L.Conv2D(8, 1, name="c")(x)
    y = L.Add()([L.Concatenate()([a, b]), c])
    plan = plan_channels(k.Model(x, L.Dense(2, name="classes")(L.Flatten()(L.Conv2D(8, 1, name="d")(y)))), 0.5, 1)
    assert {"a", "b", "c"} <= plan.fixed and "d" not in plan.fixed


@pytest.mark.parametrize("mixer", [L.Softmax, L.LayerNormalization, lambda: L.Activation("softmax")])
def test_layers_that_mix_channels_keep_their_input(mixer: Any) -> None:
    x = k.Input((4, 4, 3))
    y = L.Conv2D(8, 1, name="mixed")(x)
    y = mixer()(y)
    y = L.Conv2D(8, 1, name="free")(y)
    plan = plan_channels(k.Model(x, L.Dense(2)(L.Flatten()(y))), 0.5, 1)
    assert "mixed" in plan.fixed and "free" not in plan.fixed


def test_outputs_keep_their_channels() -> None:
    model = block_model()
    plan = plan_channels(model, 0.5, 1)
    assert "classes" in plan.fixed
    assert apply_plan(model, plan).output_shape == (None, 3)
    x = k.Input((4, 4, 3))
    features = L.Conv2D(8, 1, name="features")(L.Conv2D(8, 1, name="hidden")(x))
    plan = plan_channels(k.Model(x, features), 0.5, 1)
    assert "features" in plan.fixed and len(plan.keep["hidden"]) == 4


def test_input_keeps_its_channels() -> None:
    x = k.Input((4, 4, 4), name="img")
    c = L.Conv2D(4, 1, name="c")(x)
    y = L.Add(name="add")([x, c])  # tied to the input: c must keep every channel
    y = L.Conv2D(8, 1, name="d")(y)
    model = randomise(k.Model(x, L.Dense(2, name="classes")(L.GlobalAveragePooling2D()(y))))
    plan = plan_channels(model, 0.5, 1)
    assert "c" in plan.fixed and len(plan.keep["d"]) == 4
    pruned = apply_plan(model, plan)
    assert pruned.input_shape == (None, 4, 4, 4)
    assert pruned.get_layer("c").get_weights()[0].shape == (1, 1, 4, 4)


def test_rounding_to_multiple_and_floor() -> None:
    assert kept_count(30, 0.5, 8) == 16  # 15 -> nearest multiple of 8
    assert kept_count(32, 0.4, 8) == 16  # 19.2 -> 16
    assert kept_count(32, 0.3, 8) == 24  # 22.4 -> 24
    assert kept_count(30, 0.05, 8) == 30  # 28.5 -> 32 exceeds the original: kept whole
    assert kept_count(16, 0.9, 8) == 8  # floor: at least one multiple
    assert kept_count(4, 0.5, 8) == 4  # smaller than a multiple: untouched
    assert kept_count(10, 0.95, 1) == 1  # floor of one channel
    assert kept_count(27, 0.0, 8) == 27  # fraction 0 keeps everything
    plan = plan_channels(block_model(), 0.5, 4)
    assert {name: len(kept) for name, kept in plan.keep.items()} == {"a": 4, "p": 4, "c": 4, "sep": 4, "classes": 3}


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ((-0.1, 1, "l1"), "prune.channel_fraction"),
        ((1.0, 1, "l1"), "prune.channel_fraction"),
        ((0.5, 0, "l1"), "prune.channel_multiple"),
        ((0.5, 1, "random"), "criterion"),
    ],
)
def test_bad_settings(setting: tuple[float, int, str], named: str) -> None:
    with pytest.raises(ChannelPruningError, match=named):
        plan_channels(block_model(), *setting)


class Scale(L.Layer):  # type: ignore[misc,name-defined]
    """A custom layer with an argument and no get_config: refused before any config is asked for."""

    def __init__(self, factor: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs: Any) -> Any:
        return inputs * self.factor


def unsupported(case: str) -> Any:
    x = k.Input((8, 8, 3), name="img")
    y = L.Conv2D(4, 3, padding="same", name="conv")(x)
    if case == "Lambda":
        y = L.Lambda(lambda t: t * 2.0, name="odd")(y)
    elif case == "Scale":
        y = Scale(2.0, name="odd")(y)
    elif case == "Conv2DTranspose":
        y = L.Conv2DTranspose(4, 3, name="odd")(y)
    elif case == "LSTM":
        y = L.LSTM(4, name="odd")(L.Reshape((64, 4))(y))
    elif case == "Conv2D":  # shared: called twice
        shared = L.Conv2D(4, 1, name="odd")
        y = shared(shared(y))
    elif case == "Functional":  # a nested model called twice
        inner_x = k.Input((8, 8, 4))
        inner = k.Model(inner_x, L.ReLU()(inner_x), name="odd")
        y = inner(inner(y))
    return k.Model(x, L.Dense(2)(L.Flatten()(y)))


@pytest.mark.parametrize("case", ["Lambda", "Scale", "Conv2DTranspose", "LSTM", "Conv2D", "Functional"])
def test_unsupported_layer_is_named_in_one_line(case: str) -> None:
    model = unsupported(case)
    before = [v.copy() for v in model.get_weights()]
    with pytest.raises(ChannelPruningError) as raised:
        prune_channels(model, 0.5)
    message = str(raised.value)
    assert "\n" not in message
    assert f"'odd' ({case})" in message and "prune.method: magnitude" in message
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_nested_models_are_flattened() -> None:
    """A frozen backbone called with training=False and a Sequential head, inlined with their layer names."""
    inner_x = k.Input((8, 8, 3))
    f = L.Conv2D(8, 3, padding="same", use_bias=False, name="backbone_conv")(inner_x)
    f = L.BatchNormalization(name="backbone_bn")(f)
    backbone = k.Model(inner_x, L.ReLU(name="backbone_relu")(f), name="backbone")
    head = k.Sequential(
        [k.Input((8, 8, 8)), L.GlobalAveragePooling2D(name="gap"), L.Dense(3, name="classes")], name="head"
    )
    x = k.Input((8, 8, 3), name="img")
    model = randomise(k.Model(x, head(backbone(x, training=False))))
    randomise(backbone)
    randomise(head)
    xs = images((8, 8, 3))
    same = apply_plan(model, plan_channels(model, 0.0))
    assert [layer.name for layer in same.layers] == [
        "img",
        "backbone_conv",
        "backbone_bn",
        "backbone_relu",
        "gap",
        "classes",
    ]
    # training=True would normalise with the batch statistics: the frozen call must survive flattening.
    np.testing.assert_allclose(same(xs, training=True).numpy(), model(xs, training=True).numpy(), rtol=1e-5, atol=1e-6)
    _pruned, report = prune_channels(model, 0.5)
    assert {c.name: (c.before, c.after) for c in report.layers} == {"backbone_conv": (8, 4), "classes": (3, 3)}
    assert report.macs_before == keras_macs(model)
    assert output_channels(model) == {"backbone_conv": 8, "classes": 3}


def test_sequential_is_pruned_as_its_functional_equivalent() -> None:
    """A CNN written as a Sequential: Flatten rows and a hidden Dense, the classifier whole."""
    model = randomise(
        k.Sequential(
            [
                k.Input((12, 12, 1)),
                L.Rescaling(1 / 255.0, name="rescale"),
                L.Conv2D(8, 3, padding="same", use_bias=False, name="conv"),
                L.BatchNormalization(name="conv_bn"),
                L.ReLU(name="conv_relu"),
                L.SeparableConv2D(16, 3, padding="same", use_bias=False, name="sepconv"),
                L.BatchNormalization(name="sepconv_bn"),
                L.ReLU(name="sepconv_relu"),
                L.MaxPooling2D(2, name="pool"),
                L.Flatten(name="flatten"),
                L.Dense(16, activation="relu", name="dense"),
                L.Dense(10, activation="softmax", name="classes"),
            ]
        )
    )
    x = np.random.default_rng(0).uniform(0, 255, (2, 12, 12, 1)).astype("float32")
    np.testing.assert_allclose(
        outputs(apply_plan(model, plan_channels(model, 0.0)), x), outputs(model, x), rtol=1e-6, atol=1e-7
    )
    pruned, report = prune_channels(model, 0.5, 4)
    assert {c.name: (c.before, c.after) for c in report.layers} == {
        "conv": (8, 4),
        "sepconv": (16, 8),
        "dense": (16, 8),
        "classes": (10, 10),
    }
    assert pruned.get_layer("dense").get_weights()[0].shape == (6 * 6 * 8, 8)


def zero_removed_inputs(model: Any, keep: dict[str, np.ndarray]) -> None:
    """In the original, zero every Conv2D/Dense input row of a removed channel (found by walking back to its conv)."""
    for layer in model.layers:
        if type(layer) in (L.Conv2D, L.Dense):
            source = layer._inbound_nodes[0].inbound_layers
            while not isinstance(source, L.Conv2D | L.InputLayer):  # followers, and an Add's first input
                source = source._inbound_nodes[0].inbound_layers
                source = source[0] if isinstance(source, list) else source
            if isinstance(source, L.Conv2D):
                values = layer.get_weights()
                removed = np.setdiff1d(np.arange(source.filters), keep[source.name])
                values[0][..., removed, :] = 0.0
                layer.set_weights(values)


# The MobileNets take 10 to 20 s each to build, plan, check and convert on 2 busy cores: `slow`.
@pytest.mark.parametrize(
    "source",
    [
        "cnn",
        pytest.param("mobilenet_v2", marks=pytest.mark.slow),
        pytest.param("mobilenet_v3_small", marks=pytest.mark.slow),
    ],
)
def test_every_built_in_source_is_followed_whole(source: str, tmp_path: Path) -> None:
    """The built-in models are planned without a refusal, lose half their parameters and convert to int8.

    The run's start does not check these sources (tasks/stages/prune.py check_prunable): this is why.
    """
    from tasks.stages.models import SOURCES
    from tasks.stages.quantize import int8_tflite_bytes

    size = 8 if source == "cnn" else 32  # the MobileNets' smallest input
    params = repo_params([f"train.model={source}", "train.alpha=0.35"]).train
    model = SOURCES[source]((size, size, 3), 10, params, tmp_path).model
    xs = np.random.default_rng(0).uniform(0, 255, (4, size, size, 3)).astype("float32")
    randomise_batchnorm(model, xs)
    plan = plan_channels(model, 0.5, 8)
    pruned = apply_plan(model, plan)
    assert count_params(pruned) < 0.5 * count_params(model)
    assert keras_macs(pruned) < 0.6 * keras_macs(model)
    assert pruned.output_shape == (None, 10)
    assert len(int8_tflite_bytes(pruned, xs)) > 0  # an ordinary model: it converts to full int8
    if source == "cnn":
        return  # its separable convolution and Flatten rows: test_sequential_is_pruned_as_its_functional_equivalent
    # An independent whole-network check: in the original, the removed channels' input rows are
    # zeroed in every Conv2D and Dense; the pruned model, sliced from that, must then compute the
    # same function through every BatchNorm, depthwise and Add (a wrong slice anywhere breaks it).
    zero_removed_inputs(model, plan.keep)
    unseen = xs[:2] + np.random.default_rng(1).normal(0, 20, (2, size, size, 3)).astype("float32")
    expected = outputs(model, unseen)
    assert np.ptp(expected, axis=0).max() > 1e-4  # the output depends on the input
    np.testing.assert_allclose(outputs(pruned, unseen), expected, rtol=1e-4, atol=1e-5)
