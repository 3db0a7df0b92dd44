"""The answer of a sweep: the table (sweep.csv), the Pareto fronts (pareto.png), the Prefect markdown, MLflow."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from tasks.bookkeeping.tracking import configure, server_errors, tracking_uri
from tasks.layout import Layout
from tasks.search.sweep import METRICS, Constraints, Outcome, number_text


def columns(keys: tuple[str, ...]) -> list[str]:
    return [
        "trial",
        "status",
        "float_model",
        *keys,
        *METRICS,
        "gate",
        "constraints",
        "best",
        "pareto_param_bytes",
        "pareto_latency",
        "seconds",
        "same_as",
        "settings",
        "error",
    ]


def table_csv(outcomes: list[Outcome], keys: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(keys), lineterminator="\n")
    writer.writeheader()
    writer.writerows(outcome.row(keys) for outcome in outcomes)
    return buffer.getvalue()


def plot_pareto(outcomes: list[Outcome], constraints: Constraints, best: Outcome | None, path: Path) -> None:
    """Accuracy against int8 parameter bytes and against latency: each Pareto front drawn, the constraints
    shaded, trials that miss the gate or a constraint crossed, the best trial named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [o for o in outcomes if o.status == "ok"]
    figure, axes = plt.subplots(1, 2, figsize=(12, 5))
    panels = (
        (axes[0], "param_bytes", "int8 parameter bytes (dense, what the device holds)", "pareto_params",
         constraints.max_param_bytes),
        (axes[1], "latency_ms", "latency ms (1 thread, slower of XNNPACK and built-in kernels)", "pareto_latency",
         constraints.max_latency_ms),
    )  # fmt: skip
    for axis, cost, label, flag, limit in panels:
        shown = [o for o in measured if o.metrics.get(cost) is not None]
        for outcome in shown:
            on_front = getattr(outcome, flag)
            axis.scatter(
                outcome.metrics[cost],
                outcome.metrics["accuracy"],
                color="tab:blue" if on_front else "tab:gray",
                marker="o" if outcome.feasible else "x",
                zorder=3,
            )
            axis.annotate(outcome.trial.name, (outcome.metrics[cost], outcome.metrics["accuracy"]), fontsize=7)
        front = sorted((o.metrics[cost], o.metrics["accuracy"]) for o in shown if getattr(o, flag))
        if front:
            axis.plot(*zip(*front, strict=True), color="tab:blue", linewidth=1, label="Pareto front")
        if limit is not None:
            axis.axvline(limit, color="tab:red", linestyle="--", linewidth=1, label=f"limit {number_text(limit)}")
            right = max([limit, *(o.metrics[cost] for o in shown)]) * 1.05
            axis.axvspan(limit, right, color="tab:red", alpha=0.08)
        if best is not None and best.metrics.get(cost) is not None:
            axis.scatter(best.metrics[cost], best.metrics["accuracy"], marker="*", s=220, color="tab:green", zorder=4)
            axis.annotate(
                f"best: {best.trial.name}",
                (best.metrics[cost], best.metrics["accuracy"]),
                xytext=(8, -14),
                textcoords="offset points",
                color="tab:green",
                fontsize=9,
            )
        axis.set_xlabel(label)
        axis.set_ylabel("test accuracy")
        axis.grid(alpha=0.3)
        if front or limit is not None:
            axis.legend(fontsize=7, loc="lower right")
    axes[0].set_title("accuracy vs parameter bytes (o meets gate and constraints, x misses)", fontsize=9)
    axes[1].set_title("accuracy vs latency", fontsize=9)
    figure.suptitle(f"constraints: {constraints.describe()}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


def markdown(outcomes: list[Outcome], best: Outcome | None, constraints: Constraints, title: str) -> str:
    """The results table for a Prefect artifact."""

    def number(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rows = [
        f"| {o.trial.name} | {o.trial.settings} | "
        + (
            f"{o.metrics['accuracy']:.4f} | {number(o.metrics.get('param_bytes'), ',')} | "
            f"{number(o.metrics.get('macs'), ',')} | {number(o.metrics.get('on_chip_bytes'), ',')} | "
            f"{number(o.metrics.get('off_chip_bytes'), ',')} | {number(o.metrics.get('mapped_fraction'), '.0%')} | "
            f"{number(o.metrics.get('latency_ms_xnnpack'), '.3f')} | "
            f"{number(o.metrics.get('latency_ms_builtin'), '.3f')} | "
            f"{number(o.metrics.get('gzip_bytes'), ',')} | {o.verdict} |"
            if o.status == "ok"
            else f"- | - | - | - | - | - | - | - | - | failed: {o.error[:80]} |"
        )
        for o in outcomes
    ]
    chosen = (
        f"Best (most accurate that passes the gate and meets every constraint): **{best.trial.name}** "
        f"({best.trial.settings})."
        if best
        else "No trial passes the gate and meets every constraint."
    )
    return "\n".join(
        [
            f"# {title}",
            "",
            f"Constraints: {constraints.describe()}. {chosen}",
            "",
            "| trial | settings | accuracy | param bytes | MACs | on-chip B | off-chip B | TPU mapped | ms XNNPACK "
            "| ms built-in | gzip bytes | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


def write_answer(
    layout: Layout, outcomes: list[Outcome], keys: tuple[str, ...], constraints: Constraints, best: Outcome | None
) -> tuple[Path, Path]:
    """data/reports/sweep.csv (the table, `dvc plots show`'s data) and data/reports/pareto.png."""
    from tasks.fsutil import staging_file, write_text

    layout.reports.mkdir(parents=True, exist_ok=True)
    csv_path, plot_path = layout.reports / "sweep.csv", layout.reports / "pareto.png"
    write_text(csv_path, table_csv(outcomes, keys))
    with staging_file(plot_path) as tmp:
        plot_pareto(outcomes, constraints, best, tmp)
    return csv_path, plot_path


def log_sweep(
    root: Path, tags: dict[str, str], outcomes: list[Outcome], best: Outcome | None, artifacts: tuple[Path, ...]
) -> str:
    """A sweep as one MLflow run with a nested run per trial (its settings, metrics, or error); the run id."""
    import mlflow

    uri = tracking_uri(root)
    with server_errors(uri):
        configure(root)
        with mlflow.start_run(run_name="sweep") as parent:
            mlflow.set_tags({**tags, "sweep.best": best.trial.name if best else ""})
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
                        "float_model": outcome.float_key,
                        "gate.verdict": outcome.gate,
                        "constraints": "; ".join(outcome.unmet) or ("met" if outcome.status == "ok" else ""),
                        "best": str(outcome.best).lower(),
                        "pareto.param_bytes": str(outcome.pareto_params).lower(),
                        "pareto.latency": str(outcome.pareto_latency).lower(),
                        **({"error": outcome.error} if outcome.error else {}),
                    }
                )
                mlflow.end_run("FINISHED" if outcome.status == "ok" else "FAILED")
            for path in artifacts:
                mlflow.log_artifact(str(path), artifact_path="sweep")
            return str(parent.info.run_id)
