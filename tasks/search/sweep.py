"""A search over what the device pays for: float models trained once each, compression trials on top.

A point of the search (tasks/search/space.py) may set the float model's settings (train.*,
data.image_size, data.channels) and the compression stages' (prune, cluster, quantize, evaluate,
edgetpu). Each distinct float model, named by a hash of its settings and their code, is prepared and
trained once into a folder of its own under `.dvc/tmp/float-models/` (kept, the most recently used
FLOAT_CACHE_KEEP of them: a later sweep or a resumed study finds it there); each trial then runs the
stages after training in a scratch folder whose data and float model are that folder's, with its
settings laid over params.yaml. Both take
paths and settings and return numbers, so they run in any process that sees the project folder: a
Dask worker here, or on a team's cluster with a shared file system.

Every trial is measured as the device pays for it: test accuracy, int8 parameter bytes and
multiply-accumulates (what the Edge TPU caches and every CPU kernel reads), the preflight's on-chip
and off-chip bytes and mapped fraction, single-thread latency on both CPU kernel sets, and the
gzipped download. The best trial is the most accurate that passes the gate and meets every
constraint (then the smaller in parameter bytes).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tasks.bookkeeping.scratch import FLOAT_MODELS
from tasks.layout import Layout
from tasks.params import Params, apply_overrides, parse_params, read_params_file
from tasks.search.space import Space, Trial, float_key

log = logging.getLogger(__name__)

# The stages a trial runs: everything after the float model.
TRIAL_STAGES = ("prune", "cluster", "quantize", "evaluate", "edgetpu")
FLOAT_STAGES = ("prepare", "train")
# Where float models are kept between sweeps. Not a sweep-* scratch folder: those go when a sweep ends.
FLOAT_CACHE = Path(".dvc") / "tmp" / FLOAT_MODELS
# How many float models a sweep leaves there: the most recently used (at least all of its own). Each
# holds its prepared data and model (a few MB for the digits, the images' size for a folder), so a
# cache that only grew would fill the disk over a season of sweeps; retraining one costs a minute or so.
FLOAT_CACHE_KEEP = 8
# What a trial records, in the table's order.
METRICS = (
    "accuracy",
    "accuracy_drop",
    "param_bytes",
    "macs",
    "on_chip_bytes",
    "off_chip_bytes",
    "mapped_fraction",
    "latency_ms",
    "latency_ms_xnnpack",
    "latency_ms_builtin",
    "gzip_bytes",
    "size_bytes",
)


@dataclass(frozen=True)
class FloatSpec:
    """A float model to train: its key (a hash of its settings and code) and the overrides that make it."""

    key: str
    overrides: tuple[str, ...]

    @property
    def settings(self) -> str:
        return " ".join(self.overrides) or "(params.yaml)"


@dataclass(frozen=True)
class FloatModel:
    """A trained float model's folder (data/raw, data/calibration, the model, train.json), or why not."""

    spec: FloatSpec
    folder: str
    status: str  # trained | cached | failed
    error: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Constraints:
    """What the device allows; None switches a constraint off.

    `max_latency_ms` holds the slower of the two CPU kernel sets (XNNPACK and the built-in
    kernels), single thread, batch 1, on the machine that ran the trial.
    """

    max_off_chip_bytes: int | None = None
    min_mapped_fraction: float | None = None
    max_latency_ms: float | None = None
    max_param_bytes: int | None = None

    def any(self) -> bool:
        return any(value is not None for value in self.__dict__.values())

    def describe(self) -> str:
        parts = [
            f"off-chip bytes <= {self.max_off_chip_bytes:,}" if self.max_off_chip_bytes is not None else "",
            f"mapped fraction >= {self.min_mapped_fraction:g}" if self.min_mapped_fraction is not None else "",
            f"latency <= {self.max_latency_ms:g} ms" if self.max_latency_ms is not None else "",
            f"parameter bytes <= {self.max_param_bytes:,}" if self.max_param_bytes is not None else "",
        ]
        return ", ".join(part for part in parts if part) or "none"

    def values(self, metrics: dict[str, Any]) -> dict[str, float]:
        """Each constraint as Optuna counts it: at most 0 when met, the relative excess when not, 1 if unknown."""

        def excess(observed: Any, limit: float, upper: bool) -> float:
            if observed is None:
                return 1.0
            over = (observed - limit) if upper else (limit - observed)
            return float(over) / max(abs(limit), 1.0)

        checks = {
            "off_chip_bytes": (metrics.get("off_chip_bytes"), self.max_off_chip_bytes, True),
            "mapped_fraction": (metrics.get("mapped_fraction"), self.min_mapped_fraction, False),
            "latency_ms": (metrics.get("latency_ms"), self.max_latency_ms, True),
            "param_bytes": (metrics.get("param_bytes"), self.max_param_bytes, True),
        }
        return {name: excess(seen, limit, upper) for name, (seen, limit, upper) in checks.items() if limit is not None}

    def unmet(self, metrics: dict[str, Any]) -> list[str]:
        """The constraints a trial misses, each as a few words (an unknown value misses: it is not a guess)."""
        words = {
            "off_chip_bytes": ("off-chip bytes", "<=", self.max_off_chip_bytes),
            "mapped_fraction": ("mapped fraction", ">=", self.min_mapped_fraction),
            "latency_ms": ("latency ms", "<=", self.max_latency_ms),
            "param_bytes": ("parameter bytes", "<=", self.max_param_bytes),
        }
        missed = []
        for name, value in self.values(metrics).items():
            if value <= 0:
                continue
            label, sign, limit = words[name]
            observed = metrics.get(name)
            missed.append(
                f"{label} unknown"
                if observed is None
                else f"{label} {number_text(observed)} (not {sign} {number_text(limit)})"
            )
        return missed


@dataclass(frozen=True)
class Search:
    """What a sweep is asked: the space, how to search it (grid, random, optuna), the constraints."""

    space: Space
    method: str = "grid"  # grid | random | optuna
    trials: int = 0  # random, optuna: how many points this sweep runs
    objective: str = "param-bytes"  # random, optuna: what goes down while accuracy goes up
    study: str = ""  # random, optuna: the study's name (a new one, or one to continue)
    storage: str = ""  # random, optuna: its database URL ('' = EDGECOMPRESS_OPTUNA_STORAGE or optuna.db)
    batch: int = 1  # random, optuna: points asked at a time and run side by side
    constraints: Constraints = field(default_factory=Constraints)
    apply: bool = False


@dataclass
class Outcome:
    """What a trial measured, or why it failed, and how it was judged."""

    trial: Trial
    status: str  # "ok" | "failed"
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    gate: str = ""
    unmet: list[str] = field(default_factory=list)
    float_key: str = ""
    pareto_params: bool = False
    pareto_latency: bool = False
    best: bool = False
    seconds: float = 0.0
    same_as: str = ""  # a sampled point with the settings of one measured before: that trial's name

    @property
    def feasible(self) -> bool:
        return self.status == "ok" and self.gate == "passed" and not self.unmet

    @property
    def verdict(self) -> str:
        """'meets all', or what it misses: the gate, the constraints."""
        if self.status != "ok":
            return "failed"
        missed = ([] if self.gate == "passed" else [f"gate {self.gate or 'not judged'}"]) + self.unmet
        return "; ".join(missed) or "meets all"

    def row(self, keys: tuple[str, ...]) -> dict[str, Any]:
        return {
            "trial": self.trial.name,
            "status": self.status,
            "float_model": self.float_key,
            **{key: self.trial.value(key) for key in keys},
            **{key: _cell(self.metrics.get(key)) for key in METRICS},
            "gate": self.gate,
            "constraints": "; ".join(self.unmet) if self.unmet else ("met" if self.status == "ok" else ""),
            "best": self.best,
            "pareto_param_bytes": self.pareto_params,
            "pareto_latency": self.pareto_latency,
            "seconds": self.seconds,
            "same_as": self.same_as,
            "settings": self.trial.settings,
            "error": self.error,
        }

    def repeated_as(self, trial: Trial) -> Outcome:
        """This outcome for `trial`, which has the same settings: the same measurements, nothing run.

        Every stage is seeded and deterministic, so running the settings again would measure the same
        model; a sampler that draws them again (a magnitude trial has no channel fraction to vary) is
        told the same numbers.
        """
        return Outcome(
            trial,
            self.status,
            copy.deepcopy(self.metrics),
            self.error,
            self.gate,
            list(self.unmet),
            self.float_key,
            same_as=self.same_as or self.trial.name,
        )


def unmeasured(points: list[Trial], measured: dict[tuple[str, ...], Outcome]) -> list[Trial]:
    """The points to run: the first of each setting not measured yet, in the order asked."""
    seen, fresh = set(measured), []
    for point in points:
        if point.overrides not in seen:
            seen.add(point.overrides)
            fresh.append(point)
    return fresh


def with_repeats(points: list[Trial], ran: list[Outcome], measured: dict[tuple[str, ...], Outcome]) -> list[Outcome]:
    """An outcome for every point, in order: what it ran, or the earlier measurement of its settings."""
    by_settings = {outcome.trial.overrides: outcome for outcome in ran}
    outcomes = []
    for point in points:
        first = by_settings.get(point.overrides)
        if first is not None and first.trial.name == point.name:
            outcomes.append(first)
        else:
            outcomes.append((measured.get(point.overrides) or by_settings[point.overrides]).repeated_as(point))
    return outcomes


def _cell(value: Any) -> Any:
    return "" if value is None else value


def number_text(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


# -- float models ------------------------------------------------------------------------------------------


def code_fingerprint(root: Path, params: Params) -> str:
    """What besides its settings makes a float model: the prepare and train stages' code (their deps in
    dvc.yaml), a model, weights file or builder named in params, and a folder source's file listing."""
    from tasks.stages import models

    digest = hashlib.sha256()
    stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {})
    code = sorted(
        {dep for name in FLOAT_STAGES for dep in stages.get(name, {}).get("deps", []) if not dep.startswith("data/")}
    )
    for relative in code:
        path = root / relative
        digest.update(relative.encode())
        digest.update(path.read_bytes() if path.is_file() else b"missing")
    digest.update(json.dumps(models.source_files(params.train, root), sort_keys=True).encode())
    if params.data.kind == "folder":
        source = (root / Path(params.data.location).expanduser()).resolve()
        for item in sorted(source.rglob("*")) if source.is_dir() else []:
            stat = item.stat()
            digest.update(f"{item.relative_to(source)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def float_specs(root: Path, trials: list[Trial]) -> dict[str, FloatSpec]:
    """Each trial's float model (trial name -> spec); trials that share settings share the spec."""
    raw = read_params_file(root / "params.yaml")
    specs: dict[str, FloatSpec] = {}
    by_settings: dict[tuple[str, ...], FloatSpec] = {}
    by_key: dict[str, FloatSpec] = {}
    for trial in trials:
        overrides = trial.float_overrides
        if overrides not in by_settings:
            params = parse_params(apply_overrides(raw, list(overrides)), origin="sweep")
            key = float_key(params, code_fingerprint(root, params))
            by_settings[overrides] = by_key.setdefault(key, FloatSpec(key, overrides))
        specs[trial.name] = by_settings[overrides]
    return specs


def float_folder(root: Path, key: str) -> Layout:
    return Layout(root / FLOAT_CACHE / key)


def cached_float(root: Path, spec: FloatSpec) -> FloatModel | None:
    """The float model if an earlier sweep (or study) trained it; None otherwise."""
    layout = float_folder(root, spec.key)
    if layout.float_model.is_file() and layout.train_report.is_file():
        os.utime(layout.root)  # used now: the cache keeps the most recently used (prune_float_cache)
        return FloatModel(spec, str(layout.root), "cached")
    return None


def prune_float_cache(root: Path, used: set[str], keep: int = FLOAT_CACHE_KEEP) -> list[str]:
    """Remove the cached float models beyond the `keep` most recently used, never one in `used`; their keys.

    Call it with the project lock held, after the sweep's float models exist. A folder's time is
    when it was trained or last found in the cache.
    """
    folder = root / FLOAT_CACHE
    if not folder.is_dir():
        return []
    entries = sorted(
        (entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.stat().st_mtime,
        reverse=True,
    )
    kept, removed = 0, []
    for entry in entries:
        if entry.name in used or kept < keep:
            kept += 1
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    if removed:
        log.info("removed %d cached float model(s) no sweep used recently (kept: the newest %d)", len(removed), kept)
    return removed


def anchored(raw: dict[str, Any], root: Path) -> dict[str, Any]:
    """Params whose relative paths (a folder source, a model or weights file) point into the project,
    for stages that run in another folder."""
    out = {section: dict(values or {}) for section, values in raw.items()}
    data, train = out.get("data", {}), out.get("train", {})
    kind, _, location = str(data.get("source", "")).partition(":")
    if kind == "folder" and not Path(location).expanduser().is_absolute():
        data["source"] = f"folder:{root / location}"
    kind, _, location = str(train.get("model", "")).partition(":")
    if kind == "file" and not Path(location).is_absolute():
        train["model"] = f"file:{root / location}"
    if train.get("weights") and not Path(str(train["weights"])).is_absolute():
        train["weights"] = str(root / str(train["weights"]))
    return out


def train_float(root: Path, spec: FloatSpec, threads: int | None = None) -> FloatModel:
    """Prepare the data and train the float model of `spec` in its own folder; a failure is a result."""
    found = cached_float(root, spec)
    if found is not None:
        return found
    started = time.perf_counter()
    final = float_folder(root, spec.key)
    final.root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.key}-", dir=final.root.parent))
    try:
        if threads:
            _limit_threads(threads)
        from tasks.stages import STAGES

        if str(root) not in sys.path:
            sys.path.insert(0, str(root))  # a python:<module>:<function> builder lives in the project
        params = parse_params(
            anchored(apply_overrides(read_params_file(root / "params.yaml"), list(spec.overrides)), root), "sweep"
        )
        for name in FLOAT_STAGES:
            STAGES[name](Layout(staging), params)
        try:
            staging.rename(final.root)
            os.utime(final.root)  # trained now (prune_float_cache keeps the most recently used)
        except OSError:  # another process trained the same model meanwhile: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
        seconds = round(time.perf_counter() - started, 2)
        return FloatModel(spec, str(final.root), "trained", seconds=seconds)
    except Exception as error:  # a float model that cannot be trained fails its trials, not the sweep
        shutil.rmtree(staging, ignore_errors=True)
        log.warning("float model %s (%s) failed: %s", spec.key, spec.settings, error)
        return FloatModel(spec, "", "failed", error=_one_line(error), seconds=round(time.perf_counter() - started, 2))


# -- trials ------------------------------------------------------------------------------------------------


def trial_layout(source: Layout, scratch: Path, trial: Trial) -> Layout:
    """A trial's folder: its float model's data and model (linked, never copied), its own outputs."""
    layout = Layout(scratch / trial.name)
    if layout.root.exists():
        shutil.rmtree(layout.root)
    layout.float_model.parent.mkdir(parents=True)
    for shared in (source.raw, source.calibration, source.float_model):
        (layout.root / shared.relative_to(source.root)).symlink_to(shared)
    layout.reports.mkdir(parents=True)
    shutil.copy2(source.train_report, layout.train_report)
    return layout


def trial_params(root: Path, trial: Trial) -> Params:
    raw = anchored(apply_overrides(read_params_file(root / "params.yaml"), list(trial.overrides)), root)
    return parse_params(raw, origin="sweep")


def run_trial(root: Path, scratch: Path, trial: Trial, model: FloatModel, threads: int | None = None) -> Outcome:
    """Run one trial's stages on its float model and measure it; a failure is an Outcome, never an exception."""
    started = time.perf_counter()
    if model.status == "failed":
        return Outcome(trial, "failed", error=f"float model failed: {model.error}", float_key=model.spec.key)
    try:
        if threads:
            _limit_threads(threads)
        from tasks.stages import STAGES

        layout = trial_layout(Layout(Path(model.folder)), scratch, trial)
        params = trial_params(root, trial)
        for name in TRIAL_STAGES:
            STAGES[name](layout, params)
        metrics = measure(layout, params)
        return Outcome(trial, "ok", metrics, float_key=model.spec.key, seconds=round(time.perf_counter() - started, 2))
    except Exception as error:  # a failed trial is a result: recorded with its error, the others go on
        log.warning("trial %s failed: %s", trial.name, error)
        return Outcome(
            trial,
            "failed",
            error=_one_line(error),
            float_key=model.spec.key,
            seconds=round(time.perf_counter() - started, 2),
        )


def _one_line(error: BaseException) -> str:
    last = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    where = f" ({Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return " ".join(f"{type(error).__name__}: {error}".split())[:300] + where


def _limit_threads(threads: int) -> None:
    """TensorFlow's thread pools for this process (only possible before it runs anything)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # this worker ran a trial before: its pools exist already, sized the same way


def edgetpu_memory(report: dict[str, Any]) -> dict[str, Any]:
    """On-chip and off-chip bytes from an edgetpu.json: the memory model's prediction where the report
    has one, the compiler's figures when it ran; None where neither says."""
    memory = report.get("memory") or (report.get("preflight") or {}).get("memory") or {}
    compiler = report.get("compiler") or {}
    on_chip = memory.get("on_chip_bytes", compiler.get("on_chip_bytes"))
    off_chip = memory.get("off_chip_bytes", report.get("off_chip_bytes"))
    if report.get("source") == "compiler":  # the compiler's own figure beats any prediction
        on_chip = compiler.get("on_chip_bytes", on_chip)
        off_chip = report.get("off_chip_bytes", off_chip)
    return {"on_chip_bytes": on_chip, "off_chip_bytes": off_chip}


def measure(layout: Layout, params: Params) -> dict[str, Any]:
    """The shipped model as the device pays for it: accuracy, parameter bytes, MACs, Edge TPU memory and
    mapping, latency on both CPU kernel sets, the gzipped download."""
    from tasks.stages import images
    from tasks.stages.inference import TFLiteModel

    metrics = json.loads(layout.metrics.read_text())
    shipped = metrics["variants"][metrics["shipped"]]
    model_path = layout.quantized_tflite(params.quantize.ptq_mode)
    sample = images.load_test(layout, params.data).head(1).arrays()[0][0]
    latency = {
        resolver: round(
            TFLiteModel(model_path, num_threads=1, op_resolver=resolver).latency_ms(
                sample, runs=params.evaluate.latency_runs
            ),
            4,
        )
        for resolver in ("xnnpack", "builtin")
    }
    edgetpu = json.loads(layout.edgetpu_report.read_text())
    return {
        "accuracy": shipped["accuracy"],
        "accuracy_drop": metrics["summary"]["accuracy_drop"],
        "param_bytes": shipped.get("param_bytes"),
        "macs": shipped.get("macs"),
        **edgetpu_memory(edgetpu),
        "mapped_fraction": edgetpu.get("mapped_fraction"),
        "latency_ms": max(latency.values()),
        "latency_ms_xnnpack": latency["xnnpack"],
        "latency_ms_builtin": latency["builtin"],
        "gzip_bytes": shipped["gzip_bytes"],
        "size_bytes": shipped["size_bytes"],
        "float_gzip_bytes": metrics["variants"]["float_tflite"]["gzip_bytes"],
        "variants": metrics["variants"],
        "shipped": metrics["shipped"],
        "edgetpu": {
            **{
                key: edgetpu.get(key)
                for key in ("mapped_fraction", "subgraphs", "off_chip_bytes", "segments", "source")
            },
            "memory": {"source": (edgetpu.get("memory") or {}).get("source")},
        },
    }


# -- judging -----------------------------------------------------------------------------------------------


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """For each (cost, accuracy), whether no other point is at least as good in both and better in one."""
    front = []
    for i, (cost, accuracy) in enumerate(points):
        dominated = any(
            other_cost <= cost and other_accuracy >= accuracy and (other_cost < cost or other_accuracy > accuracy)
            for j, (other_cost, other_accuracy) in enumerate(points)
            if j != i
        )
        front.append(not dominated)
    return front


def assess(outcome: Outcome, params: Params, champion_accuracy: float | None, constraints: Constraints) -> Outcome:
    """The trial's gate verdict (from its metrics, as a run would judge it) and the constraints it misses."""
    from tasks.stages.gate import evaluate_gate

    if outcome.status != "ok":
        return outcome
    if "variants" in outcome.metrics:  # a trial read back from a study keeps the verdict it was given
        verdict = evaluate_gate(
            outcome.metrics["variants"],
            params.gate,
            champion_accuracy,
            outcome.metrics["edgetpu"],
            outcome.metrics["shipped"],
        )
        outcome.gate = verdict.verdict
    outcome.unmet = constraints.unmet(outcome.metrics)
    return outcome


def _cost(outcome: Outcome, key: str) -> float:
    value = outcome.metrics.get(key)
    return float("inf") if value is None else float(value)


def judge(
    outcomes: list[Outcome], params: Params, champion_accuracy: float | None, constraints: Constraints | None = None
) -> Outcome | None:
    """Judge every trial (gate, constraints), mark the Pareto fronts; the best trial, or None.

    The best is the most accurate trial that passes the gate and meets every constraint, then the
    smaller in int8 parameter bytes, then in gzipped bytes.
    """
    constraints = constraints or Constraints()
    measured = [assess(o, params, champion_accuracy, constraints) for o in outcomes if o.status == "ok"]
    by_params = pareto([(_cost(o, "param_bytes"), o.metrics["accuracy"]) for o in measured])
    by_latency = pareto([(_cost(o, "latency_ms"), o.metrics["accuracy"]) for o in measured])
    for outcome, on_params, on_latency in zip(measured, by_params, by_latency, strict=True):
        outcome.pareto_params, outcome.pareto_latency = on_params, on_latency
        outcome.best = False
    feasible = [o for o in measured if o.feasible]
    if not feasible:
        return None
    best = min(
        feasible,
        key=lambda o: (-o.metrics["accuracy"], _cost(o, "param_bytes"), _cost(o, "gzip_bytes"), o.trial.name),
    )
    best.best = True
    return best


@contextmanager
def scratch_folder(layout: Layout) -> Iterator[Path]:
    """Where the trials work, inside the project (workers must see it), removed afterwards.

    Call it with the project lock held: the next lock holder removes what a killed sweep left here
    (tasks/bookkeeping/scratch.py).
    """
    from tasks.bookkeeping.scratch import SWEEP_PREFIX

    tmp = layout.root / ".dvc" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=SWEEP_PREFIX, dir=tmp))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def worker_threads(workers: int) -> int:
    """TensorFlow threads per trial: the machine's cores shared between the local workers."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))
