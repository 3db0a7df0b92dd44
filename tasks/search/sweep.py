"""A search over compression settings: a grid of params, each point run on the same float model.

The float model is trained once, by the normal pipeline. Each trial then runs the stages after
training (tasks.stages.STAGES from `prune` on) in a folder of its own whose data and float model
are the project's, with its settings laid over params.yaml. A trial takes a path and a list of
overrides and returns numbers, so it can run in any process that sees the project folder: a Dask
worker here, or on a team's cluster with a shared file system.

The answer: every trial's accuracy, size, gzip size, latency on both CPU kernel sets and Edge TPU
mapping; the Pareto front of accuracy against gzip size and against latency; and the best trial
that passes the gate (the smallest gzipped model, then the most accurate).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tasks.bookkeeping.tracking import configure, server_errors, tracking_uri
from tasks.errors import ParamsError
from tasks.layout import Layout
from tasks.params import Params, apply_overrides, parse_override, parse_params, read_params_file

log = logging.getLogger(__name__)

# The stages a trial runs: everything after the float model. data.* and train.* make the float
# model itself, so a sweep cannot vary them (one model is trained, once).
TRIAL_STAGES = ("prune", "cluster", "quantize", "evaluate", "edgetpu")
FIXED_SECTIONS = ("data", "train")
COLUMNS = (
    "trial",
    "status",
    "settings",
    "accuracy",
    "accuracy_drop",
    "size_bytes",
    "gzip_bytes",
    "latency_ms_xnnpack",
    "latency_ms_builtin",
    "edgetpu_mapped_fraction",
    "gate",
    "pareto_size",
    "pareto_latency",
    "error",
)


@dataclass(frozen=True)
class Trial:
    """One grid point: its name and the overrides that make it."""

    name: str
    overrides: tuple[str, ...]

    @property
    def settings(self) -> str:
        return " ".join(self.overrides)


@dataclass
class Outcome:
    """What a trial measured, or why it failed."""

    trial: Trial
    status: str  # "ok" | "failed"
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    gate: str = ""
    pareto_size: bool = False
    pareto_latency: bool = False
    seconds: float = 0.0

    def row(self) -> dict[str, Any]:
        return {
            "trial": self.trial.name,
            "status": self.status,
            "settings": self.trial.settings,
            **{key: self.metrics.get(key, "") for key in COLUMNS[3:10]},
            "gate": self.gate,
            "pareto_size": self.pareto_size,
            "pareto_latency": self.pareto_latency,
            "error": self.error,
        }


def parse_grid(texts: list[str]) -> dict[str, list[Any]]:
    """'-S section.key=v1,v2,...' options as {section.key: [v1, v2, ...]} (values parsed as YAML)."""
    if not texts:
        raise ParamsError("sweep: no grid; give at least one -S section.key=value1,value2")
    grid: dict[str, list[Any]] = {}
    for text in texts:
        section, name, _ = parse_override(text)
        key = f"{section}.{name}"
        if section in FIXED_SECTIONS:
            raise ParamsError(
                f"-S {key}: a sweep trains the float model once, so {section}.* cannot vary; "
                "sweep prune, cluster, quantize, evaluate or edgetpu settings"
            )
        raw = text.partition("=")[2].strip()
        try:
            values = yaml.safe_load(f"[{raw}]") if raw else []
        except yaml.YAMLError:
            raise ParamsError(f"-S {key}: cannot read {raw!r} as a comma-separated list of values") from None
        if not values:
            raise ParamsError(f"-S {key}: no values; give one or more, separated by commas")
        if key in grid:
            raise ParamsError(f"-S {key}: given twice; list all its values in one -S")
        grid[key] = values
    return grid


def expand(params_file: Path, grid: dict[str, list[Any]]) -> list[Trial]:
    """Every grid point as a Trial, each validated with the whole params file before any runs."""
    raw = read_params_file(params_file)
    parse_params(raw, origin=params_file.name)  # the file itself first: its errors are its own
    keys = list(grid)
    trials = []
    for index, values in enumerate(itertools.product(*(grid[key] for key in keys)), start=1):
        overrides = tuple(f"{key}={_yaml_value(value)}" for key, value in zip(keys, values, strict=True))
        try:
            parse_params(apply_overrides(raw, list(overrides)), origin="sweep")
        except ParamsError as error:
            raise ParamsError(f"{error} (in grid point {' '.join(overrides)})") from None
        trials.append(Trial(f"t{index:02d}", overrides))
    return trials


def _yaml_value(value: Any) -> str:
    """A value as -S takes it back (YAML flow style, one line)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def trial_layout(project: Layout, scratch: Path, trial: Trial) -> Layout:
    """A trial's folder: the project's data and float model (linked, never copied), its own outputs."""
    layout = Layout(scratch / trial.name)
    if layout.root.exists():
        shutil.rmtree(layout.root)
    layout.float_model.parent.mkdir(parents=True)
    for shared in (project.raw, project.calibration, project.float_model):
        (layout.root / shared.relative_to(project.root)).symlink_to(shared)
    layout.reports.mkdir(parents=True)
    shutil.copy2(project.train_report, layout.train_report)
    return layout


def trial_params(project: Layout, trial: Trial) -> Params:
    return parse_params(apply_overrides(read_params_file(project.params_file), list(trial.overrides)), origin="sweep")


def run_trial(root: Path, scratch: Path, trial: Trial, threads: int | None = None) -> Outcome:
    """Run one trial's stages and measure it; a failure is an Outcome, never an exception."""
    started = time.perf_counter()
    try:
        if threads:
            _limit_threads(threads)
        from tasks.stages import STAGES

        project = Layout(root)
        layout = trial_layout(project, scratch, trial)
        params = trial_params(project, trial)
        for name in TRIAL_STAGES:
            STAGES[name](layout, params)
        metrics = measure(layout, params)
        return Outcome(trial, "ok", metrics, seconds=round(time.perf_counter() - started, 2))
    except Exception as error:  # a failed trial is a result: recorded with its error, the others go on
        log.warning("trial %s failed: %s", trial.name, error)
        last = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
        where = f" ({Path(last[0].filename).name}:{last[0].lineno})" if last else ""
        message = " ".join(f"{type(error).__name__}: {error}".split())[:300] + where
        return Outcome(trial, "failed", error=message, seconds=round(time.perf_counter() - started, 2))


def _limit_threads(threads: int) -> None:
    """TensorFlow's thread pools for this process (only possible before it runs anything)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # this worker ran a trial before: its pools exist already, sized the same way


def measure(layout: Layout, params: Params) -> dict[str, Any]:
    """The shipped model's accuracy, sizes, latency on both CPU kernel sets and Edge TPU mapping."""
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
        "size_bytes": shipped["size_bytes"],
        "gzip_bytes": shipped["gzip_bytes"],
        "float_gzip_bytes": metrics["variants"]["float_tflite"]["gzip_bytes"],
        "latency_ms_xnnpack": latency["xnnpack"],
        "latency_ms_builtin": latency["builtin"],
        "edgetpu_mapped_fraction": edgetpu["mapped_fraction"],
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


def judge(outcomes: list[Outcome], params: Params, champion_accuracy: float | None) -> Outcome | None:
    """Mark the Pareto fronts and each trial's gate verdict; the best trial that passes, or None."""
    from tasks.stages.gate import evaluate_gate

    measured = [outcome for outcome in outcomes if outcome.status == "ok"]
    by_size = pareto([(o.metrics["gzip_bytes"], o.metrics["accuracy"]) for o in measured])
    by_latency = pareto([(o.metrics["latency_ms_builtin"], o.metrics["accuracy"]) for o in measured])
    for outcome, on_size, on_latency in zip(measured, by_size, by_latency, strict=True):
        outcome.pareto_size, outcome.pareto_latency = on_size, on_latency
        verdict = evaluate_gate(
            outcome.metrics["variants"],
            params.gate,
            champion_accuracy,
            outcome.metrics["edgetpu"],
            outcome.metrics["shipped"],
        )
        outcome.gate = verdict.verdict
    passing = [outcome for outcome in measured if outcome.gate == "passed"]
    if not passing:
        return None
    return min(passing, key=lambda o: (o.metrics["gzip_bytes"], -o.metrics["accuracy"], o.trial.name))


def table_csv(outcomes: list[Outcome]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(outcome.row() for outcome in outcomes)
    return buffer.getvalue()


def plot_pareto(outcomes: list[Outcome], path: Path) -> None:
    """Accuracy against gzip size and against latency, the Pareto front of each drawn and the rest dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [o for o in outcomes if o.status == "ok"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for axis, cost, label, flag in (
        (axes[0], "gzip_bytes", "gzipped .tflite (bytes)", "pareto_size"),
        (axes[1], "latency_ms_builtin", "latency, 1 thread, built-in kernels (ms)", "pareto_latency"),
    ):
        for outcome in measured:
            on_front = getattr(outcome, flag)
            axis.scatter(
                outcome.metrics[cost],
                outcome.metrics["accuracy"],
                color="tab:blue" if on_front else "tab:gray",
                marker="o" if outcome.gate == "passed" else "x",
            )
            axis.annotate(outcome.trial.name, (outcome.metrics[cost], outcome.metrics["accuracy"]), fontsize=7)
        front = sorted((o.metrics[cost], o.metrics["accuracy"]) for o in measured if getattr(o, flag))
        if front:
            axis.plot(*zip(*front, strict=True), color="tab:blue", linewidth=1)
        axis.set_xlabel(label)
        axis.set_ylabel("test accuracy")
        axis.grid(alpha=0.3)
    axes[0].set_title("Pareto front: accuracy vs size (o passes the gate, x fails)")
    axes[1].set_title("Pareto front: accuracy vs latency")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


def markdown(outcomes: list[Outcome], best: Outcome | None) -> str:
    """The results table for a Prefect artifact."""
    rows = [
        f"| {o.trial.name} | {o.trial.settings} | {o.status} | "
        + (
            f"{o.metrics['accuracy']:.4f} | {o.metrics['gzip_bytes']:,} | {o.metrics['latency_ms_builtin']:.3f} | "
            f"{o.metrics['edgetpu_mapped_fraction']:.0%} | {o.gate} | {'yes' if o.pareto_size else ''} |"
            if o.status == "ok"
            else f"- | - | - | - | - | {o.error[:80]} |"
        )
        for o in outcomes
    ]
    chosen = (
        f"Best trial that passes the gate: **{best.trial.name}** ({best.trial.settings})."
        if best
        else ("No trial passes the gate.")
    )
    return "\n".join(
        [
            "# Compression sweep",
            "",
            chosen,
            "",
            "| trial | settings | status | accuracy | gzip bytes | latency ms | Edge TPU | gate | Pareto (size) |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


@contextmanager
def scratch_folder(layout: Layout) -> Iterator[Path]:
    """Where the trials work, inside the project (workers must see it), removed afterwards."""
    tmp = layout.root / ".dvc" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="sweep-", dir=tmp))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_answer(layout: Layout, outcomes: list[Outcome]) -> tuple[Path, Path]:
    """data/reports/sweep.csv (the table, `dvc plots show`'s data) and data/reports/pareto.png."""
    from tasks.fsutil import staging_file, write_text

    csv_path, plot_path = layout.reports / "sweep.csv", layout.reports / "pareto.png"
    write_text(csv_path, table_csv(outcomes))
    with staging_file(plot_path) as tmp:
        plot_pareto(outcomes, tmp)
    return csv_path, plot_path


def worker_threads(workers: int) -> int:
    """TensorFlow threads per trial: the machine's cores shared between the local workers."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


def log_sweep(
    root: Path, grid: dict[str, list[Any]], outcomes: list[Any], best: Any | None, artifacts: tuple[Path, ...]
) -> str:
    """A sweep as one MLflow run with a nested run per trial (its settings, metrics, or error); the run id."""
    import mlflow

    uri = tracking_uri(root)
    with server_errors(uri):
        configure(root)
        with mlflow.start_run(run_name="sweep") as parent:
            mlflow.set_tags({"sweep.grid": json.dumps(grid), "sweep.best": best.trial.name if best else ""})
            for outcome in outcomes:
                mlflow.start_run(run_name=f"sweep/{outcome.trial.name}", nested=True)
                mlflow.log_params(dict(text.split("=", 1) for text in outcome.trial.overrides))
                numbers = {
                    key: float(value)
                    for key, value in outcome.metrics.items()
                    if isinstance(value, int | float) and not isinstance(value, bool)
                }
                mlflow.log_metrics({**numbers, "seconds": outcome.seconds})
                mlflow.set_tags(
                    {
                        "trial": outcome.trial.name,
                        "gate.verdict": outcome.gate,
                        "pareto.size": str(outcome.pareto_size).lower(),
                        "pareto.latency": str(outcome.pareto_latency).lower(),
                        **({"error": outcome.error} if outcome.error else {}),
                    }
                )
                mlflow.end_run("FINISHED" if outcome.status == "ok" else "FAILED")
            for path in artifacts:
                mlflow.log_artifact(str(path), artifact_path="sweep")
            return str(parent.info.run_id)
