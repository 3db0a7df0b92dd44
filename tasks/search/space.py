"""What a sweep may vary, read from `-S` options: value lists (a grid, or choices) and ranges (for a sampler).

`-S prune.final_sparsity=0.5,0.75` lists values; `-S prune.final_sparsity=0.5:0.9` is a range (floats when
either end is a float, integers otherwise), which a sampler draws from (`--search optuna` or `random`).
Every value is checked with the whole params file before anything runs, and each distinct float model
(the data.* and train.* settings that make it) is named by a hash, so that it is trained once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import ParamsError
from tasks.params import Params, apply_overrides, parse_override, parse_params, read_params_file

# What trials read: the float model's settings (trained once per distinct value) and the stages after it.
FLOAT_SECTIONS = ("data", "train")
TRIAL_SECTIONS = ("prune", "cluster", "quantize", "evaluate", "edgetpu")
# Of data.*, what makes another float model; the rest would change the dataset trials are compared on.
DATA_KEYS = ("image_size", "channels")
# Sections no trial reads: varying them would give identical trials, and --apply would write the loosest.
NOT_READ = {
    "gate": "the gate judges the trials, it is not a setting of one; use the sweep's constraint flags "
    "(--max-param-bytes, --max-latency-ms, --max-off-chip-bytes, --min-mapped-fraction)",
    "registry": "no trial registers anything",
    "retrain": "no trial is scheduled",
}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*:\s*({_NUMBER})\s*$")


@dataclass(frozen=True)
class Axis:
    """One varied key: a list of values (`choices`), or a range from `low` to `high` (`kind` float or int)."""

    key: str
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    kind: str = "choices"  # choices | float | int

    @property
    def is_range(self) -> bool:
        return self.kind != "choices"

    @property
    def floats(self) -> bool:
        """Whether the key makes the float model (data.*, train.*), not a trial's compression."""
        return self.key.split(".")[0] in FLOAT_SECTIONS

    def describe(self) -> str:
        if self.is_range:
            return f"{self.key}={_text(self.low)}:{_text(self.high)}"
        return f"{self.key}={','.join(_text(value) for value in self.choices)}"


@dataclass(frozen=True)
class Space:
    """The axes of a sweep, in the order given, and what was said about them (duplicates dropped)."""

    axes: tuple[Axis, ...]
    notes: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(axis.key for axis in self.axes)

    @property
    def has_ranges(self) -> bool:
        return any(axis.is_range for axis in self.axes)

    def describe(self) -> str:
        return " ".join(axis.describe() for axis in self.axes)


@dataclass(frozen=True)
class Trial:
    """One point of the space: its name and the overrides that make it."""

    name: str
    overrides: tuple[str, ...]
    number: int | None = None  # the Optuna trial's number, for a sampled point

    @property
    def settings(self) -> str:
        return " ".join(self.overrides)

    def value(self, key: str) -> str:
        """The value this trial gives `key`, as written in its override ('' if it does not set it)."""
        return next((text.split("=", 1)[1] for text in self.overrides if text.split("=", 1)[0] == key), "")

    @property
    def float_overrides(self) -> tuple[str, ...]:
        """The overrides that make the float model (data.*, train.*)."""
        return tuple(text for text in self.overrides if text.split(".")[0] in FLOAT_SECTIONS)


@dataclass(frozen=True)
class Grid:
    """The grid's trials and what was said while expanding it."""

    trials: list[Trial]
    notes: list[str] = field(default_factory=list)


def parse_space(texts: list[str]) -> Space:
    """'-S section.key=v1,v2,...' (values, read as YAML) or 'section.key=low:high' (a range) as a Space."""
    if not texts:
        raise ParamsError("sweep: nothing to vary; give at least one -S section.key=value1,value2")
    axes: list[Axis] = []
    notes: list[str] = []
    for text in texts:
        section, name, _ = parse_override(text)
        key = f"{section}.{name}"
        _check_variable(section, name, key)
        if key in (axis.key for axis in axes):
            raise ParamsError(f"-S {key}: given twice; list all its values in one -S")
        raw = text.partition("=")[2].strip()
        span = _RANGE.match(raw)
        if span:
            axes.append(_range(key, span.group(1), span.group(2)))
            continue
        try:
            values = yaml.safe_load(f"[{raw}]") if raw else []
        except yaml.YAMLError:
            raise ParamsError(f"-S {key}: cannot read {raw!r} as a comma-separated list of values") from None
        if not values:
            raise ParamsError(f"-S {key}: no values; give one or more, separated by commas (or a range low:high)")
        distinct = _distinct(values)
        if len(distinct) < len(values):
            repeated = [_text(v) for v in distinct if sum(_same(v, other) for other in values) > 1]
            notes.append(f"-S {key}: {', '.join(repeated)} given more than once; each distinct value runs once")
        axes.append(Axis(key, tuple(distinct)))
    return Space(tuple(axes), tuple(notes))


def _check_variable(section: str, name: str, key: str) -> None:
    """The keys a trial reads; the others in one line naming why."""
    if section in NOT_READ:
        raise ParamsError(f"-S {key}: a sweep cannot vary {section}.*: {NOT_READ[section]}")
    if section == "data" and name not in DATA_KEYS:
        raise ParamsError(
            f"-S {key}: trials are compared on one dataset; of data.*, only "
            f"{' and '.join(f'data.{k}' for k in DATA_KEYS)} may vary"
        )


def _range(key: str, low_text: str, high_text: str) -> Axis:
    low, high = _number(low_text), _number(high_text)
    if not low < high:
        raise ParamsError(f"-S {key}={low_text}:{high_text}: a range goes from low to high")
    if isinstance(low, int) and isinstance(high, int):
        return Axis(key, low=low, high=high, kind="int")
    return Axis(key, low=float(low), high=float(high), kind="float")


def _number(text: str) -> int | float:
    """An end of a range: an integer when written as one (1e-3 is a float, as YAML 1.1 would not say)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _same(a: Any, b: Any) -> bool:
    """Equal as settings: 1 and 1.0 are, true and 1 are not."""
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def _distinct(values: list[Any]) -> list[Any]:
    kept: list[Any] = []
    for value in values:
        if not any(_same(value, other) for other in kept):
            kept.append(value)
    return kept


def _text(value: Any) -> str:
    """A value as -S takes it back (YAML flow style, one line)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def override(key: str, value: Any) -> str:
    return f"{key}={_text(value)}"


def validated(raw: dict[str, Any], overrides: tuple[str, ...] | list[str]) -> Params:
    return parse_params(apply_overrides(raw, list(overrides)), origin="sweep")


def base_params(params_file: Path) -> dict[str, Any]:
    """params.yaml as a mapping, checked first: its own errors are its own."""
    raw = read_params_file(params_file)
    parse_params(raw, origin=params_file.name)
    return raw


def check_read(raw: dict[str, Any], space: Space) -> None:
    """Every axis is read by some trial: a key its pruning method ignores would make identical trials."""
    from tasks.params import PruneParams

    methods = next((axis.choices for axis in space.axes if axis.key == "prune.method"), None)
    tried = {str(m) for m in methods} if methods else {str(raw["prune"]["method"])}
    for axis in space.axes:
        section, _, name = axis.key.partition(".")
        readers = [m for m, keys in PruneParams.METHOD_KEYS.items() if name in keys] if section == "prune" else []
        if readers and not tried & set(readers):
            method = " or ".join(sorted(tried))
            raise ParamsError(
                f"-S {axis.key}: no trial reads it (prune.method: {method} ignores it), so every trial would be "
                f"the same; add -S prune.method={readers[0]}"
            )


def ignored(params: Params, key: str) -> str:
    """Why a trial with these settings does not read `key`, as the start of a phrase ending in it ('' when it does)."""
    from tasks.params import PruneParams

    section, _, name = key.partition(".")
    if section in ("prune", "cluster") and name != "enabled" and not getattr(params, section).enabled:
        return f"{section}.enabled: false ignores"
    if section == "prune":
        own = PruneParams.METHOD_KEYS[params.prune.method]
        if name not in own and any(name in keys for keys in PruneParams.METHOD_KEYS.values()):
            return f"prune.method: {params.prune.method} ignores"
    return ""


def check_space(params_file: Path, space: Space) -> None:
    """Every value of every axis, and both ends of every range, valid with the rest of params.yaml."""
    raw = base_params(params_file)
    check_read(raw, space)
    for axis in space.axes:
        values = (axis.low, axis.high) if axis.is_range else axis.choices
        for value in values:
            try:
                validated(raw, [override(axis.key, value)])
            except ParamsError as error:
                raise ParamsError(f"{error} (in -S {axis.describe()})") from None


def expand(params_file: Path, space: Space) -> Grid:
    """Every grid point as a Trial, each validated with the whole params file before any runs.

    Points that validate to the same settings (e.g. 8 and 8.0 for an integer), or that differ only
    in keys their own settings ignore (prune.channel_fraction under prune.method: magnitude), run
    once, and say so.
    """
    ranged = [axis.describe() for axis in space.axes if axis.is_range]
    if ranged:
        raise ParamsError(
            f"-S {ranged[0]}: a range is for a sampler (--search optuna or random); a grid lists its values"
        )
    raw = base_params(params_file)
    check_read(raw, space)
    trials: list[Trial] = []
    notes = list(space.notes)
    seen: dict[tuple[Any, ...], str] = {}
    for values in itertools.product(*(axis.choices for axis in space.axes)):
        overrides = tuple(override(axis.key, value) for axis, value in zip(space.axes, values, strict=True))
        try:
            params = validated(raw, overrides)
        except ParamsError as error:
            raise ParamsError(f"{error} (in grid point {' '.join(overrides)})") from None
        flat = params.flat()
        # A key the trial's own settings ignore is no difference: left out of the comparison.
        unread = {key: why for key in space.keys if (why := ignored(params, key))}
        signature = tuple(
            None if key in unread else json.dumps(flat[key], sort_keys=True, default=str) for key in space.keys
        )
        name = f"t{len(trials) + 1:02d}"
        if signature in seen:
            why = "; ".join(f"{reason} {key}" for key, reason in unread.items()) or "once validated"
            notes.append(f"grid point {' '.join(overrides)} is {seen[signature]} ({why}); it runs once")
            continue
        seen[signature] = name
        trials.append(Trial(name, overrides))
    return Grid(trials, notes)


def float_key(params: Params, fingerprint: str) -> str:
    """The name of the float model these settings make: a hash of data.*, train.* and their code."""
    settings = {"data": params.data.model_dump(), "train": params.train.model_dump(), "code": fingerprint}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
