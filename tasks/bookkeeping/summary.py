"""Markdown summaries of a run, for Prefect artifacts: the UI tells the story without opening logs."""

from __future__ import annotations

from typing import Any

from tasks.bookkeeping.plan import StageOutcome
from tasks.layout import Layout
from tasks.stages.gate import GateResult


def mlflow_link(uri: str, experiment_id: str, run_id: str) -> str:
    """A clickable link when the tracking server has a UI, else where the run is stored."""
    if uri.startswith(("http://", "https://")):
        return f"[MLflow run {run_id}]({uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})"
    return f"MLflow run `{run_id}` in `{uri}` (browse with `mlflow ui --backend-store-uri {uri}`)"


def run_markdown(
    outcomes: list[StageOutcome], gate: GateResult, link: str, version: str | None, shipped: dict[str, Any]
) -> str:
    """What ran and why, what was skipped, the gate table and where the run is recorded."""
    rows = [f"| {o.name} | {'ran' if o.ran else 'skipped'} | {o.reason} | {o.seconds:.1f} |" for o in outcomes]
    registered = f"registered as version **{version}** (`candidate`)" if version else "nothing registered"
    return "\n".join(
        [
            "# Compression run",
            "",
            f"Shipped model accuracy **{shipped['accuracy']:.4f}**, {shipped['size_bytes']:,} bytes; {registered}.",
            "",
            "| stage | status | why | seconds |",
            "|---|---|---|---|",
            *rows,
            "",
            gate.markdown(),
            "",
            link,
        ]
    )


def retrain_markdown(changes: dict[str, str], pushed: int | None) -> str:
    """Why a retrain ran, and what it sent to the DVC remote."""
    rows = [f"| {stage} | {reason} |" for stage, reason in changes.items()]
    sent = (
        "outputs not pushed (retrain.push is false)" if pushed is None else f"{pushed} file(s) pushed to the DVC remote"
    )
    return "\n".join(["# Retrained", "", "| stage | what changed |", "|---|---|", *rows, "", sent])


def unchanged_markdown(last: dict[str, Any] | None) -> str:
    """Why a run did nothing, and which run it left standing."""
    standing = (
        f"The last successful run, MLflow run `{last['mlflow_run_id']}`, registered {last['model']} version "
        f"**{last['version']}**; it still stands."
        if last
        else ""
    )
    return "\n".join(
        [
            "# Skipped: no change",
            "",
            "DVC reports every stage up to date (data, calibration set, params and stage code all match "
            "dvc.lock), and no setting changed since the last successful run.",
            "",
            standing,
        ]
    )


def skipped_markdown(layout: Layout) -> str:
    """Why a retrain did nothing."""
    return "\n".join(
        [
            "# Skipped: no change",
            "",
            "DVC reports every stage up to date: the data, the calibration set, params.yaml and the "
            "stage code all match dvc.lock, so the last recorded run still stands.",
            "",
            f"Project: `{layout.root.name}`",
        ]
    )
