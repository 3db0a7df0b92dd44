"""The compression flow: the stages (prepare to edgetpu), then gate, register, (promote)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from tasks import registry
from tasks.bookkeeping import journal, summary, tracking
from tasks.bookkeeping.lock import project_lock
from tasks.bookkeeping.plan import Plan, StageOutcome, run_stage
from tasks.bookkeeping.timing import Timings
from tasks.errors import EdgecompressError
from tasks.layout import Layout
from tasks.params import Params, load_params
from tasks.stages.gate import GateFailed, GateResult, run_gate
from tasks.stages.train import check_given_model

SKIPPED = "skipped: no change"


@dataclass
class RunReport:
    """What a flow run did: stages, metrics, gate, registry changes, the MLflow run, where time went.

    A run with nothing to do (`skipped`) names the last successful run it left standing instead.
    """

    run_id: str
    tracking_uri: str
    stages: list[StageOutcome]
    metrics: dict[str, Any]
    gate: GateResult | None
    version: registry.Registered | None = None
    promoted: registry.Moved | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0
    skipped: bool = False
    recorded: bool = True  # in Prefect (a skipped run without a Prefect server is not)

    @classmethod
    def unchanged(cls, uri: str, last: dict[str, Any], started_at: float, recorded: bool = True) -> RunReport:
        """The report of a run that found nothing changed since the last successful one."""
        version = registry.Registered(str(last["version"]), new=False)
        return cls(
            last["mlflow_run_id"], uri, [], {}, None, version, started_at=started_at, skipped=True, recorded=recorded
        )


class _ExpectedErrorsInOneLine(logging.Filter):
    """Drop the traceback from Prefect's log of an EdgecompressError: its message says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], EdgecompressError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_expected_errors() -> None:
    """Log EdgecompressErrors from task and flow runs as their one-line message, without a traceback."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ExpectedErrorsInOneLine) for f in logger.filters):
            logger.addFilter(_ExpectedErrorsInOneLine())


def show_domain_logs() -> None:
    """The project's own log lines (loggers `tasks.*`, INFO and up) in the Prefect UI and on the console.

    flows/__init__.py names the `tasks` logger in PREFECT_LOGGING_EXTRA_LOGGERS, which Prefect reads
    once, when it configures logging at its import. A worker's flow-run process imports Prefect
    before the flow's module, so there the variable comes too late and the logger gets no API
    handler; and Prefect sets the extra loggers no level, so everywhere (`serve`'s flow runs too)
    their INFO lines stopped at the root logger's WARNING. Every flow does both here first.
    """
    logger = logging.getLogger("tasks")
    logger.setLevel(logging.INFO)
    for handler in logging.getLogger("prefect.extra").handlers:  # Prefect's API handler
        if handler not in logger.handlers:
            logger.addHandler(handler)


@task(cache_policy=NO_CACHE)
def plan(layout: Layout, params: Params, uri: str) -> Plan:
    """What must run and why: DVC's status of every stage, and whether the last successful run still stands."""
    return Plan(layout, params, uri)


def publish(key: str, markdown: str, description: str) -> None:
    """A markdown artifact on the Prefect server; a server that stopped answering is one line naming it."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    try:
        create_markdown_artifact(key=key, markdown=markdown, description=description)
    except httpx.TransportError:
        api = PREFECT_API_URL.value() or "(embedded)"
        raise EdgecompressError(f"Prefect server {api} is unreachable; check PREFECT_API_URL") from None


@task(cache_policy=NO_CACHE)
def stage(layout: Layout, params: Params, name: str, plan: Plan) -> StageOutcome:
    """One pipeline stage, skipped when DVC reports it up to date."""
    return run_stage(layout, params, name, plan)


def pipeline_stage(name: str, layout: Layout, params: Params, plan: Plan) -> StageOutcome:
    """The stage task under the stage's own name, as the Prefect UI shows it."""
    return stage.with_options(name=name, task_run_name=name)(layout, params, name, plan)


@task(cache_policy=NO_CACHE)
def given_model(layout: Layout, params: Params) -> None:
    """A model compressed as it is (train.epochs 0) meets gate.min_accuracy before compression can hide it."""
    check_given_model(layout, params)


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def champion(uri: str, params: Params) -> float | None:
    """The current champion's int8 accuracy, if there is a champion."""
    return registry.champion_accuracy(uri, params.registry.model_name)


@task(cache_policy=NO_CACHE)
def gate(layout: Layout, params: Params, champion_accuracy: float | None, run: tracking.TrackedRun) -> GateResult:
    """Check the int8 model against every threshold; record the verdict in gate.json, MLflow and Prefect."""
    result = run_gate(layout, params.gate, champion_accuracy)
    run.log_gate(layout, result)
    publish("gate", result.markdown(), result.summary())
    return result


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def register(
    uri: str, layout: Layout, params: Params, run: tracking.TrackedRun, result: GateResult
) -> registry.Registered:
    """Register the gated model as a version aliased `candidate` (reusing an identical one)."""
    return registry.register(uri, layout, params, run.run_id, result)


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def promote_if_better(uri: str, params: Params, version: str, accuracy: float) -> registry.Moved | None:
    """With registry.auto_promote, make the candidate champion when it beats the current one."""
    if not registry.beats_champion(uri, params.registry.model_name, accuracy):
        return None
    return registry.promote(uri, params.registry.model_name, version)


@flow(name="compress", log_prints=True)
def compress(project: str = ".") -> Any:
    """Run the pipeline in-process on the project at `project`; register the model if it passes the gate."""
    started_at = time.time()
    quiet_expected_errors()
    show_domain_logs()
    layout = Layout(Path(project).resolve())
    params = load_params(layout.params_file)
    uri = tracking.tracking_uri(layout.root)
    timings = Timings()
    version = promoted = None
    with project_lock(layout.root, params.retrain.wait_s):
        todo = plan(layout, params, uri)
        if not todo.pending:
            assert todo.last is not None  # without a successful run on record, something is pending
            publish("run", summary.unchanged_markdown(todo.last), SKIPPED)
            return Completed(message=SKIPPED, data=RunReport.unchanged(uri, todo.last, started_at))
        with tracking.pipeline_run(layout.root, params, timings) as run:
            outcomes = [pipeline_stage("prepare", layout, params, todo), pipeline_stage("train", layout, params, todo)]
            given_model(layout, params)
            outcomes += [
                pipeline_stage("prune", layout, params, todo),
                pipeline_stage("cluster", layout, params, todo),
                pipeline_stage("quantize", layout, params, todo),
                pipeline_stage("evaluate", layout, params, todo),
                pipeline_stage("edgetpu", layout, params, todo),
            ]
            metrics = run.log_outcome(layout, outcomes)
            verdict = gate(layout, params, champion(uri, params), run)
            if verdict.passed:
                version = register(uri, layout, params, run, verdict)
                if params.registry.auto_promote:
                    promoted = promote_if_better(uri, params, version.version, metrics["evaluate"]["shipped_accuracy"])
            shipped = metrics["evaluate"][metrics["evaluate"]["shipped"]]
            publish(
                "run",
                summary.run_markdown(outcomes, verdict, run.link(uri), version.version if version else None, shipped),
                verdict.summary(),
            )
        if not verdict.passed:
            raise GateFailed(verdict.summary())
        assert version is not None  # the gate passed
        journal.record_success(layout.root, params.flat(), uri, params.registry.model_name, version.version, run.run_id)
    return RunReport(
        run_id=run.run_id,
        tracking_uri=uri,
        stages=outcomes,
        metrics=metrics,
        gate=verdict,
        version=version,
        promoted=promoted,
        seconds=dict(timings.seconds),
        started_at=started_at,
    )
