"""Channel pruning: remove whole output channels of a tf_keras model and rebuild it smaller and dense.

Magnitude pruning leaves zeros that an int8 .tflite still stores and multiplies; removing whole
output channels (Conv2D filters, the pointwise filters of a SeparableConv2D, Dense units), and
everything that depends on them, shrinks what the device stores and computes. Two steps:

- `plan_channels` reads the functional graph, refuses (before anything changes) a layer it cannot
  follow, ties channels that must go together into groups (the inputs of an Add, ...) and picks,
  per group, the channels to keep by importance;
- `apply_plan` builds a new functional model from the layer configs with fewer filters/units and
  copies in the kept slices of every weight: an ordinary Keras model to fine-tune.

docs/ARCHITECTURE.md, "Channel pruning", has the design, the dependency rules and the measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.errors import StageError
from tasks.stages.fit import keras
from tasks.stages.footprint import keras_macs

if TYPE_CHECKING:
    import tf_keras

AVOID = "use prune.method: magnitude"
# gamma: |gamma| of the BatchNormalization after a producer (L1 where there is none); l1: filter L1.
CRITERIA = ("gamma", "l1")

# What each tf_keras layer class does to the channel axis (the last axis; channels_first is refused).
# Matched on the exact class: a subclass may compute anything, so it is refused like any unknown layer.
LAYER_KINDS: dict[str, str] = {
    "InputLayer": "input",
    # New output channels: the layers whose filters or units are removed.
    "Conv2D": "producer",
    "SeparableConv2D": "producer",
    "Dense": "producer",
    # Channel c of the output is computed from channel c of the input only: they follow.
    "BatchNormalization": "follow",
    "DepthwiseConv2D": "follow",
    "ReLU": "follow",
    "LeakyReLU": "follow",
    "ELU": "follow",
    "ThresholdedReLU": "follow",
    "Activation": "follow",
    "Dropout": "follow",
    "SpatialDropout2D": "follow",
    "GaussianNoise": "follow",
    "GaussianDropout": "follow",
    "AlphaDropout": "follow",
    "ActivityRegularization": "follow",
    "Identity": "follow",
    "MaxPooling2D": "follow",
    "AveragePooling2D": "follow",
    "GlobalAveragePooling2D": "follow",
    "GlobalMaxPooling2D": "follow",
    "ZeroPadding2D": "follow",
    "Cropping2D": "follow",
    "UpSampling2D": "follow",
    "Rescaling": "follow",
    "Resizing": "follow",
    "CenterCrop": "follow",
    "RandomFlip": "follow",
    "RandomRotation": "follow",
    "RandomTranslation": "follow",
    "RandomZoom": "follow",
    "RandomCrop": "follow",
    "RandomContrast": "follow",
    "RandomBrightness": "follow",
    # They mix all channels of their input (a normalisation over the channel axis, per-channel
    # statistics learnt from data), so their input keeps every channel.
    "Softmax": "pin",
    "Normalization": "pin",
    "LayerNormalization": "pin",
    "UnitNormalization": "pin",
    # Element-wise merges: all inputs lose the same channels.
    "Add": "merge",
    "Subtract": "merge",
    "Multiply": "merge",
    "Maximum": "merge",
    "Minimum": "merge",
    "Average": "merge",
    "Concatenate": "concat",
    "Flatten": "flatten",
    "Reshape": "reshape",
}


class ChannelPruningError(StageError):
    """A model, layer or setting channel pruning cannot handle, said in one line with what avoids it."""


@dataclass(frozen=True)
class LayerChannels:
    """Output channels of one layer before and after pruning."""

    name: str
    before: int
    after: int


@dataclass(frozen=True)
class ChannelPlan:
    """Which output channels each producing layer (Conv2D, SeparableConv2D, Dense) keeps."""

    keep: dict[str, np.ndarray]  # producer layer name -> kept output channel indices, ascending
    groups: tuple[tuple[str, ...], ...]  # producers that must keep the same channels (prunable groups)
    fixed: frozenset[str]  # producers that keep every channel (they reach an output, the input, ...)
    fraction: float
    multiple: int
    criterion: str


@dataclass(frozen=True)
class ChannelReport:
    """Per-layer channels and model totals before and after pruning."""

    layers: tuple[LayerChannels, ...]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


def prune_channels(
    model: tf_keras.Model, fraction: float, multiple: int = 1, criterion: str = "gamma"
) -> tuple[tf_keras.Model, ChannelReport]:
    """Plan, apply and report: the smaller model and what changed."""
    flat = _functional(model)  # flattened once here, not again in each step
    plan = plan_channels(flat, fraction, multiple, criterion)
    pruned = apply_plan(flat, plan)
    return pruned, channel_report(flat, pruned)


def plan_channels(model: tf_keras.Model, fraction: float, multiple: int = 1, criterion: str = "gamma") -> ChannelPlan:
    """Validate the model and choose the kept channels of every group; raises ChannelPruningError."""
    _check_settings(fraction, multiple, criterion)
    graph = _analyse(model)
    scores = _importance(graph, criterion)
    keep: dict[str, np.ndarray] = {}
    groups: list[tuple[str, ...]] = []
    fixed: set[str] = set()
    for root, members in graph.members().items():
        if root == _FIXED:
            for name in members:
                keep[name] = np.arange(graph.groups.size[graph.producers[name]])
            fixed.update(members)
            continue
        size = graph.groups.size[root]
        score = np.sum([scores[name] for name in members], axis=0)  # group importance: sum over members
        count = kept_count(size, fraction, multiple)
        # A stable sort of the negated scores: equal importance keeps the lower index, so the same
        # weights always give the same plan (`reproduce` rebuilds the model byte for byte).
        kept = np.sort(np.argsort(-score, kind="stable")[:count])
        for name in members:
            keep[name] = kept
        groups.append(tuple(members))
    return ChannelPlan(keep, tuple(groups), frozenset(fixed), fraction, multiple, criterion)


def kept_count(channels: int, fraction: float, multiple: int) -> int:
    """Channels a group keeps: (1 - fraction) of them to the nearest `multiple`, within [floor, original]."""
    if fraction == 0:  # exactly nothing, even where the original count is no multiple
        return channels
    count = math.floor(channels * (1.0 - fraction) / multiple + 0.5) * multiple  # nearest, ties up
    # A multiple above the original keeps the group whole (it never grows); the floor is one
    # multiple (or the whole group if it is narrower), so no layer is cut to nothing.
    return max(min(count, channels), min(channels, max(multiple, 1)))


def apply_plan(model: tf_keras.Model, plan: ChannelPlan) -> tf_keras.Model:
    """A new functional model with only the planned channels, weights sliced from `model`."""
    k = keras()
    layers = k.layers
    graph = _analyse(model)
    masks = _group_masks(graph, plan)
    config = graph.config
    weights: dict[str, list[np.ndarray]] = {}
    for entry in config["layers"]:
        node = graph.nodes[entry["name"]]
        ins = [graph.mask(graph.maps[source], masks) for source in node.inputs]
        out = graph.mask(graph.maps[node.name], masks)
        layer_config = entry["config"]
        if isinstance(node.layer, layers.Conv2D | layers.SeparableConv2D):  # DepthwiseConv2D is neither
            layer_config["filters"] = int(out.sum())
        elif isinstance(node.layer, layers.Dense):
            layer_config["units"] = int(out.sum())
        elif isinstance(node.layer, layers.Reshape):
            layer_config["target_shape"] = _reshape_target(layer_config["target_shape"], node, int(out.sum()))
        weights[node.name] = _slice_weights(node, ins, out)
    try:
        pruned = k.Model.from_config(config)
    except Exception as error:  # Keras raises anything from ValueError to TypeError on a config it cannot rebuild
        raise ChannelPruningError(
            f"prune: channel pruning could not rebuild the model: {_one_line(error)}; {AVOID}"
        ) from None
    for name, values in weights.items():
        if values:
            pruned.get_layer(name).set_weights(values)
    return pruned


def channel_report(original: tf_keras.Model, pruned: tf_keras.Model) -> ChannelReport:
    """Output channels of each Conv2D/SeparableConv2D/DepthwiseConv2D/Dense, parameters and MACs, before and after."""
    after = {layer.name: layer for layer in pruned.layers}
    weighted = _weighted_layers()
    layers = tuple(
        LayerChannels(layer.name, int(layer.output_shape[-1]), int(after[layer.name].output_shape[-1]))
        for layer in _functional(original).layers
        if isinstance(layer, weighted) and layer.name in after
    )
    return ChannelReport(layers, count_params(original), count_params(pruned), keras_macs(original), keras_macs(pruned))


def output_channels(model: tf_keras.Model) -> dict[str, int]:
    """Output channels of every Conv2D, SeparableConv2D, DepthwiseConv2D and Dense, nested models included.

    Any model: nothing is validated, so a model channel pruning refuses is still described.
    """
    k = keras()
    weighted = _weighted_layers()
    found: dict[str, int] = {}
    for layer in model.layers:
        if isinstance(layer, k.Model):
            found.update(output_channels(layer))
        elif isinstance(layer, weighted):
            found[layer.name] = int(layer.get_output_shape_at(0)[-1])  # a shared layer: its first call
    return found


def count_params(model: tf_keras.Model) -> int:
    """Every weight the model holds (BatchNorm's moving statistics included), as Keras counts them."""
    return int(model.count_params())


def _weighted_layers() -> tuple[Any, ...]:
    layers = keras().layers
    return (layers.Conv2D, layers.SeparableConv2D, layers.DepthwiseConv2D, layers.Dense)


@cache
def _kinds() -> dict[type, str]:
    """LAYER_KINDS keyed by the tf_keras classes themselves (tf_keras is imported on first use only)."""
    layers = keras().layers
    return {getattr(layers, name): kind for name, kind in LAYER_KINDS.items()}


# ---------------------------------------------------------------------------------------------
# The graph: each tensor's channel axis as (group, index) pairs; groups tied by union-find.

_FIXED = 0  # the group of channels nothing may remove (the model input, anything reaching an output)


class _Groups:
    """Union-find over channel groups; a group is the output channels of one producer, group 0 is fixed."""

    def __init__(self) -> None:
        self.parent = [_FIXED]
        self.size = [0]

    def new(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        return len(self.parent) - 1

    def find(self, group: int) -> int:
        while self.parent[group] != group:
            self.parent[group] = self.parent[self.parent[group]]
            group = self.parent[group]
        return group

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        if b == _FIXED:  # the fixed group stays the root, so "pinned" is find(g) == 0
            a, b = b, a
        self.parent[b] = a

    def pin(self, groups: np.ndarray) -> None:
        for group in np.unique(groups):
            self.union(_FIXED, int(group))


@dataclass
class _Node:
    name: str
    layer: Any
    kind: str
    inputs: list[str]
    in_shapes: list[tuple[Any, ...]]
    out_shape: tuple[Any, ...]


# A tensor's channel axis: for each position, the group it belongs to and its index in that group.
_Map = tuple[np.ndarray, np.ndarray]


@dataclass
class _Graph:
    model: Any  # the functional model (a Sequential as its functional equivalent)
    config: dict[str, Any]
    nodes: dict[str, _Node]  # in topological order
    maps: dict[str, _Map]  # layer name -> its output's channel map
    groups: _Groups
    producers: dict[str, int]  # producer layer name -> its own group
    norm_after: dict[str, str]  # producer -> the BatchNormalization that is its only consumer

    def members(self) -> dict[int, list[str]]:
        """Producers by root group, in graph order."""
        found: dict[int, list[str]] = {}
        for name, group in self.producers.items():
            found.setdefault(self.groups.find(group), []).append(name)
        return found

    def mask(self, channel_map: _Map, masks: dict[int, np.ndarray]) -> np.ndarray:
        """Which positions of a tensor's channel axis survive."""
        groups, index = channel_map
        unique, inverse = np.unique(groups, return_inverse=True)
        roots = np.array([self.groups.find(int(g)) for g in unique], dtype=np.int64)[inverse]
        kept = np.ones(len(groups), dtype=bool)
        for root in np.unique(roots):
            if root != _FIXED:
                where = roots == root
                kept[where] = masks[int(root)][index[where]]
        return kept


def _analyse(model: tf_keras.Model) -> _Graph:
    """Read and validate the graph: every layer known, each tensor's channels mapped to groups."""
    _check_classes(model)
    functional = _functional(model)
    config = functional.get_config()
    if "layers" not in config:
        raise ChannelPruningError(
            f"prune: channel pruning needs a functional or Sequential model; {model.name!r} "
            f"({type(model).__name__}) has a custom constructor; {AVOID}"
        )
    nodes = _nodes(functional, config)
    groups = _Groups()
    maps: dict[str, _Map] = {}
    producers: dict[str, int] = {}
    for node in nodes.values():
        ins = [maps[source] for source in node.inputs]
        maps[node.name] = _map_node(node, ins, groups, producers)
    for name, _node_index, _tensor_index in config["output_layers"]:
        groups.pin(maps[name][0])  # an output (the classifier's classes, a feature map) keeps its channels
    consumers: dict[str, list[str]] = {}
    for node in nodes.values():
        for source in node.inputs:
            consumers.setdefault(source, []).append(node.name)
    batch_norm = keras().layers.BatchNormalization
    norm_after = {}
    for name in producers:
        after = consumers.get(name, [])
        if len(after) == 1 and isinstance(nodes[after[0]].layer, batch_norm):
            norm_after[name] = after[0]
    return _Graph(functional, config, nodes, maps, groups, producers, norm_after)


def _cannot_follow(layer: Any, reason: str) -> ChannelPruningError:
    """The one-line refusal: the layer, its class, why, and the setting that avoids it."""
    return ChannelPruningError(
        f"prune: channel pruning cannot follow layer {layer.name!r} ({type(layer).__name__}): {reason}; {AVOID}"
    )


def _check_classes(model: tf_keras.Model) -> None:
    """Refuse an unknown layer class anywhere (nested models included) before asking any layer for its config."""
    k = keras()
    for layer in getattr(model, "layers", []):
        if isinstance(layer, k.Model):
            _check_classes(layer)
        elif type(layer) not in _kinds():  # exact class: a subclass may compute anything
            raise _cannot_follow(layer, "not a layer it knows how to slice")


def _functional(model: tf_keras.Model) -> tf_keras.Model:
    k = keras()
    if not isinstance(model, k.Model):
        raise ChannelPruningError(f"prune: channel pruning needs a tf_keras model, got {type(model).__name__}; {AVOID}")
    if isinstance(model, k.Sequential):
        if not model.inputs:
            raise ChannelPruningError(
                f"prune: channel pruning needs Sequential model {model.name!r} built with an Input; {AVOID}"
            )
        model = k.Model(model.inputs, model.outputs, name=model.name)
    if not getattr(model, "_is_graph_network", False):
        raise ChannelPruningError(
            f"prune: channel pruning needs a functional or Sequential model; {model.name!r} "
            f"({type(model).__name__}) is subclassed; {AVOID}"
        )
    if any(isinstance(layer, k.Model) for layer in model.layers):
        return flatten_model(model)
    return model


def flatten_model(model: tf_keras.Model) -> tf_keras.Model:
    """The same model with every nested model (a Model used as a layer) replaced by its own layers."""
    config, layers = _flat_config(_functional_only(model))
    try:
        flat = keras().Model.from_config(config)
    except Exception as error:  # as in apply_plan: Keras raises many kinds on a config it cannot rebuild
        raise ChannelPruningError(
            f"prune: channel pruning could not flatten {model.name!r}: {_one_line(error)}; {AVOID}"
        ) from None
    for layer in flat.layers:
        if layer.weights:
            layer.set_weights(layers[layer.name].get_weights())
    return flat


def _functional_only(model: tf_keras.Model) -> tf_keras.Model:
    k = keras()
    if isinstance(model, k.Sequential) and model.inputs:
        return k.Model(model.inputs, model.outputs, name=model.name)
    if not getattr(model, "_is_graph_network", False):
        raise _cannot_follow(model, "a subclassed or unbuilt nested model")
    return model


def _flat_config(model: tf_keras.Model) -> tuple[dict[str, Any], dict[str, Any]]:
    """A functional config with nested models inlined, and each layer object by name (for its weights)."""
    k = keras()
    config = model.get_config()
    entries: list[dict[str, Any]] = []
    objects: dict[str, Any] = {}
    outputs_of: dict[str, list[list[Any]]] = {}  # nested model -> the refs of its outputs, inlined
    for entry in config["layers"]:
        layer = model.get_layer(entry["name"])
        if not isinstance(layer, k.Model):
            entries.append(entry)
            objects[entry["name"]] = layer
            continue
        if len(entry["inbound_nodes"]) != 1:
            raise _cannot_follow(layer, f"a nested model called {len(entry['inbound_nodes'])} times")
        inner, inner_objects = _flat_config(_functional_only(layer))
        inbound = entry["inbound_nodes"][0]
        call = dict(inbound[0][3]) if inbound else {}
        given = {name: ref[:3] for (name, _node, _tensor), ref in zip(inner["input_layers"], inbound, strict=True)}
        for inner_entry in inner["layers"]:
            name = inner_entry["name"]
            if name in given:
                continue  # its InputLayer: the outer tensor takes its place
            if name in objects or any(e["name"] == name for e in config["layers"]):
                raise _cannot_follow(layer, f"its layer {name!r} has the name of another layer; rename one")
            # A backbone called with training=False stays frozen: each of its layers that takes a
            # training argument (BatchNormalization, Dropout) gets it in its own call.
            expects_training = getattr(inner_objects[name], "_expects_training_arg", False)
            for node in inner_entry["inbound_nodes"]:
                for ref in node:
                    if ref[0] in given:
                        ref[:3] = given[ref[0]]
                    if "training" in call and expects_training:
                        ref[3] = {**ref[3], "training": call["training"]}
            entries.append(inner_entry)
            objects[name] = inner_objects[name]
        outputs_of[layer.name] = [given.get(ref[0], ref[:3]) for ref in inner["output_layers"]]
    for entry in entries:  # references to a nested model's outputs now point at its inlined layers
        for node in entry["inbound_nodes"]:
            for ref in node:
                if ref[0] in outputs_of:
                    ref[:3] = list(outputs_of[ref[0]][ref[2]])
    config["output_layers"] = [
        list(outputs_of[ref[0]][ref[2]]) if ref[0] in outputs_of else ref for ref in config["output_layers"]
    ]
    config["layers"] = entries
    return config, objects


def _nodes(model: tf_keras.Model, config: dict[str, Any]) -> dict[str, _Node]:
    """The model's layers in topological order, validated one by one (the first refusal is raised)."""
    entries = {entry["name"]: entry for entry in config["layers"]}
    ordered: list[str] = []
    seen: set[str] = set()
    for start in entries:  # depth-first, sources before the layers they feed, without recursion
        stack = [(start, False)]
        while stack:
            name, expanded = stack.pop()
            if expanded:
                ordered.append(name)
                continue
            if name in seen:
                continue
            seen.add(name)
            stack.append((name, True))
            for inbound in entries[name]["inbound_nodes"][:1]:
                stack.extend((ref[0], False) for ref in reversed(inbound) if ref[0] not in seen)
    nodes: dict[str, _Node] = {}
    for name in ordered:
        layer = model.get_layer(name)
        entry = entries[name]
        if len(entry["inbound_nodes"]) > 1:
            raise _cannot_follow(layer, f"a shared layer, called {len(entry['inbound_nodes'])} times")
        kind = _kinds().get(type(layer))  # exact class: a subclass may compute anything
        if kind is None:
            raise _cannot_follow(layer, "not a layer it knows how to slice")
        reason = _refusal(layer)
        if reason:
            raise _cannot_follow(layer, reason)
        refs = entry["inbound_nodes"][0] if entry["inbound_nodes"] else []
        index = _node_index(model, layer)
        in_shapes = layer.get_input_shape_at(index) if refs else []
        in_shapes = list(in_shapes) if isinstance(in_shapes, list) else [in_shapes]
        out_shape = layer.get_output_shape_at(index)
        nodes[name] = _Node(
            name, layer, kind, [ref[0] for ref in refs], [tuple(s) for s in in_shapes], tuple(out_shape)
        )
    return nodes


def _node_index(model: tf_keras.Model, layer: Any) -> int:
    """Which of the layer's calls belongs to this model (a layer may also be called in other models)."""
    # Keras keys a functional model's own nodes as "<layer>_ib-<index>".
    for index in range(len(layer._inbound_nodes)):
        if f"{layer.name}_ib-{index}" in model._network_nodes:
            return index
    return 0


def _refusal(layer: Any) -> str:
    """Why a known layer class is still not followed in this configuration ('' if it is)."""
    layers = keras().layers
    config = layer.get_config()
    if config.get("data_format") == "channels_first":
        return "channels_first data format (channels must be the last axis)"
    if isinstance(layer, layers.Conv2D) and getattr(layer, "groups", 1) != 1:
        return f"a grouped convolution (groups={layer.groups})"
    if isinstance(layer, layers.BatchNormalization):
        rank = len(layer.get_input_shape_at(0))
        axis = layer.axis if isinstance(layer.axis, list | tuple) else [layer.axis]
        if [a % rank for a in axis] != [rank - 1]:
            return f"normalises axis {layer.axis}, not the channel (last) axis"
    return ""


def _activation(layer: Any) -> str:
    activation = layer.get_config().get("activation", "linear")
    return activation if isinstance(activation, str) else str(activation)


def _map_node(node: _Node, ins: list[_Map], groups: _Groups, producers: dict[str, int]) -> _Map:
    """The channel map of a layer's output; ties and pins groups as the layer requires."""
    channels = int(node.out_shape[-1])
    fixed: _Map = (np.zeros(channels, dtype=np.int64), np.arange(channels))
    if node.kind == "input":
        return fixed
    if node.kind == "producer":
        group = groups.new(channels)
        producers[node.name] = group
        if "softmax" in _activation(node.layer):
            groups.pin(np.array([group]))  # a softmax normalises over all its units
        return np.full(channels, group), np.arange(channels)
    if node.kind == "pin":
        groups.pin(ins[0][0])
        return fixed
    if node.kind == "follow":
        return _follow(node, ins[0], groups)
    if node.kind == "merge":
        # An input of width 1 broadcasts over the channels and has none to lose.
        full = [m for m, shape in zip(ins, node.in_shapes, strict=True) if int(shape[-1]) == channels]
        _tie(full, groups)
        return full[0]
    if node.kind == "concat":
        rank = len(node.out_shape)
        if node.layer.axis % rank == rank - 1:
            return np.concatenate([m[0] for m in ins]), np.concatenate([m[1] for m in ins])
        _tie(ins, groups)  # concatenated along another axis: channel c of every input meets
        return ins[0]
    if node.kind == "flatten":
        positions = math.prod(int(d) for d in node.in_shapes[0][1:-1])
        return np.tile(ins[0][0], positions), np.tile(ins[0][1], positions)
    return _reshape(node, ins[0], groups, fixed)


def _follow(node: _Node, channel_map: _Map, groups: _Groups) -> _Map:
    layers = keras().layers
    layer = node.layer
    if isinstance(layer, layers.DepthwiseConv2D):
        # Output channel c*m + j comes from input channel c (m: depth multiplier).
        m = layer.depth_multiplier
        return np.repeat(channel_map[0], m), np.repeat(channel_map[1], m)
    per_channel = False
    if isinstance(layer, layers.Activation):
        per_channel = "softmax" in _activation(layer)
    elif isinstance(layer, layers.Rescaling):
        per_channel = np.size(layer.scale) > 1 or np.size(layer.offset) > 1
    elif type(layer) is layers.Dropout:
        per_channel = layer.noise_shape is not None  # a noise shape may name the channel count
    if per_channel:  # it mixes channels or holds per-channel constants: its input keeps them all
        groups.pin(channel_map[0])
    return channel_map


def _tie(maps: list[_Map], groups: _Groups) -> None:
    """Element-wise inputs: channel c of each input meets channel c of the others, so they go together."""
    found = [_whole_group(m, groups) for m in maps]
    simple = [group for group in found if group is not None]
    if len(simple) == len(found):
        for group in simple[1:]:
            groups.union(simple[0], group)
        return
    # A mixture (a concatenation added to a convolution, a depthwise multiplier, ...): keep it all.
    # Conservative, never wrong: those producers keep their channels rather than the model refused.
    for channel_map in maps:
        groups.pin(channel_map[0])


def _whole_group(channel_map: _Map, groups: _Groups) -> int | None:
    """The group if the tensor holds exactly one whole group in its order, else None."""
    group_ids, index = channel_map
    if not len(group_ids) or not (group_ids == group_ids[0]).all() or not (index == np.arange(len(index))).all():
        return None
    group = int(group_ids[0])
    return group if group == _FIXED or groups.size[group] == len(index) else None


def _reshape(node: _Node, channel_map: _Map, groups: _Groups, fixed: _Map) -> _Map:
    in_shape, out_shape = node.in_shapes[0], node.out_shape
    if len(out_shape) == 2:  # to a vector: as Flatten, channel c at every position
        positions = math.prod(int(d) for d in in_shape[1:-1])
        return np.tile(channel_map[0], positions), np.tile(channel_map[1], positions)
    if int(out_shape[-1]) == int(in_shape[-1]):  # the channel axis stays the last axis, whole
        return channel_map
    groups.pin(channel_map[0])  # it splits or merges the channel axis: keep every channel
    return fixed


def _reshape_target(target: Any, node: _Node, channels: int) -> tuple[Any, ...]:
    """A Reshape's target shape after its input lost channels."""
    target = list(target)
    if len(node.out_shape) == 2:
        return tuple(target) if target[-1] == -1 else (channels,)
    if target[-1] != -1:
        target[-1] = channels
    return tuple(target)


# ---------------------------------------------------------------------------------------------
# Importance, masks and slicing.


def _check_settings(fraction: float, multiple: int, criterion: str) -> None:
    # params.yaml is validated on load (tasks/params.py); this guards callers of the library itself.
    if not 0.0 <= fraction < 1.0:
        raise ChannelPruningError(f"prune.channel_fraction must be at least 0 and below 1, got {fraction}")
    if isinstance(multiple, bool) or not isinstance(multiple, int | np.integer) or multiple < 1:
        raise ChannelPruningError(f"prune.channel_multiple must be a whole number of at least 1, got {multiple!r}")
    if criterion not in CRITERIA:
        raise ChannelPruningError(f"channel criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")


def _importance(graph: _Graph, criterion: str) -> dict[str, np.ndarray]:
    """Each producer's importance per output channel under `criterion`."""
    # gamma: |gamma| of the BatchNormalization right after the producer is the standard deviation
    # of the channel's normalised output, what the next layer sees (Network Slimming, Liu et al.
    # 2017); a producer without one (a Dense, a projection with a bias) falls back to l1. l1: the
    # L1 norm of each output filter (Li et al. 2017); behind a BatchNorm its scale is normalised away.
    separable = keras().layers.SeparableConv2D
    scores: dict[str, np.ndarray] = {}
    for name in graph.producers:
        layer = graph.nodes[name].layer
        norm = graph.nodes[graph.norm_after[name]].layer if name in graph.norm_after else None
        if criterion == "gamma" and norm is not None and norm.gamma is not None:
            scores[name] = np.abs(norm.gamma.numpy())
            continue
        kernel = layer.pointwise_kernel if isinstance(layer, separable) else layer.kernel
        kernel = np.abs(kernel.numpy())
        scores[name] = kernel.reshape(-1, kernel.shape[-1]).sum(axis=0)
    return scores


def _group_masks(graph: _Graph, plan: ChannelPlan) -> dict[int, np.ndarray]:
    """Kept-channel mask of each prunable root group, checked against the graph."""
    masks: dict[int, np.ndarray] = {}
    for root, members in graph.members().items():
        for name in members:
            if name not in plan.keep:
                raise ChannelPruningError(f"the channel plan has no entry for layer {name!r}; plan this model again")
        if root == _FIXED:
            for name in members:
                if len(plan.keep[name]) != graph.groups.size[graph.producers[name]]:
                    raise ChannelPruningError(f"the channel plan removes channels of {name!r}, which keeps them all")
            continue
        kept = np.asarray(plan.keep[members[0]])
        for name in members[1:]:
            if not np.array_equal(np.asarray(plan.keep[name]), kept):
                raise ChannelPruningError(
                    f"the channel plan keeps different channels in {members[0]!r} and {name!r}, which must match"
                )
        size = graph.groups.size[root]
        if not len(kept) or len(np.unique(kept)) != len(kept) or kept.min() < 0 or kept.max() >= size:
            raise ChannelPruningError(
                f"the channel plan for {members[0]!r} must list distinct channels of 0..{size - 1}, at least one"
            )
        mask = np.zeros(size, dtype=bool)
        mask[kept] = True
        masks[root] = mask
    return masks


def _slice_weights(node: _Node, ins: list[np.ndarray], out: np.ndarray) -> list[np.ndarray]:
    """The layer's weights restricted to its kept input and output channels."""
    layers = keras().layers
    layer = node.layer
    values = layer.get_weights()
    if not values:
        return []
    if isinstance(layer, layers.SeparableConv2D):
        m = layer.depth_multiplier
        depthwise = values[0][:, :, ins[0]]  # (kh, kw, in, m)
        pointwise = values[1][:, :, np.repeat(ins[0], m)][..., out]  # (1, 1, in*m, out)
        return [depthwise, pointwise, *(bias[out] for bias in values[2:])]
    if isinstance(layer, layers.DepthwiseConv2D):
        return [values[0][:, :, ins[0]], *(bias[out] for bias in values[1:])]  # bias: in*m, ordered as out
    if isinstance(layer, layers.Conv2D):
        return [values[0][:, :, ins[0]][..., out], *(bias[out] for bias in values[1:])]
    if isinstance(layer, layers.Dense):
        return [values[0][ins[0]][:, out], *(bias[out] for bias in values[1:])]
    if isinstance(layer, layers.BatchNormalization):
        return [value[out] for value in values]  # gamma, beta, moving mean, moving variance
    if ins and not all(mask.all() for mask in ins):  # a layer with weights of its own that lost inputs
        raise ChannelPruningError(f"prune: channel pruning cannot slice the weights of {node.name!r}; {AVOID}")
    return values


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:200]
