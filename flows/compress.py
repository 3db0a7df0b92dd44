"""The compression flow: prepare -> train -> prune -> quantize -> evaluate, tracked in MLflow."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks import pipeline, tracking
from tasks.errors import EdgecompressError
from tasks.layout import Layout
from tasks.params import Params, load_params
from tasks.timing import Timings


@dataclass
class RunReport:
    """What a flow run did: per-stage outcomes, the metrics, the MLflow run, where time went."""

    run_id: str
    tracking_uri: str
    stages: list[pipeline.StageOutcome]
    metrics: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0


class _ExpectedErrorsInOneLine(logging.Filter):
    """Drop the traceback from Prefect's log of an EdgecompressError: its message says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], EdgecompressError):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_expected_errors() -> None:
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ExpectedErrorsInOneLine) for f in logger.filters):
            logger.addFilter(_ExpectedErrorsInOneLine())


@task(cache_policy=NO_CACHE)
def stage(layout: Layout, params: Params, name: str) -> pipeline.StageOutcome:
    """One pipeline stage, skipped when DVC reports it up to date."""
    return pipeline.run_stage(layout, params, name)


def _stage(name: str, layout: Layout, params: Params) -> pipeline.StageOutcome:
    return stage.with_options(name=name, task_run_name=name)(layout, params, name)


@flow(name="compress", log_prints=True)
def compress(project: str = ".") -> RunReport:
    """Run the pipeline in-process on the project at `project`, one MLflow run per flow run."""
    started_at = time.time()
    _quiet_expected_errors()
    layout = Layout(Path(project).resolve())
    params = load_params(layout.params_file)
    timings = Timings()
    with tracking.pipeline_run(layout.root, params, timings) as run:
        outcomes = [
            _stage("prepare", layout, params),
            _stage("train", layout, params),
            _stage("prune", layout, params),
            _stage("quantize", layout, params),
            _stage("evaluate", layout, params),
        ]
        metrics = run.log_outcome(layout, outcomes)
    return RunReport(
        run_id=run.run_id,
        tracking_uri=tracking.tracking_uri(layout.root),
        stages=outcomes,
        metrics=metrics,
        seconds=dict(timings.seconds),
        started_at=started_at,
    )
