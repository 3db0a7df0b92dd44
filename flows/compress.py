"""The compression flow: prepare, train, prune, quantize, evaluate, edgetpu -> gate -> register -> (promote)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks import pipeline, registry, summary, tracking
from tasks.errors import EdgecompressError
from tasks.gate import GateFailed, GateResult, run_gate
from tasks.layout import Layout
from tasks.locking import project_lock
from tasks.params import Params, load_params
from tasks.timing import Timings


@dataclass
class RunReport:
    """What a flow run did: stages, metrics, gate, registry changes, the MLflow run, where time went."""

    run_id: str
    tracking_uri: str
    stages: list[pipeline.StageOutcome]
    metrics: dict[str, Any]
    gate: GateResult
    version: registry.Registered | None = None
    promoted: registry.Moved | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0


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


def flush_prefect_services(timeout: float = 30.0) -> None:
    """Deliver Prefect's queued logs and events now, before the interpreter starts shutting down.

    Prefect 3.8 drops its last strong reference to a queue service's asyncio task when it drains
    the service. If the garbage collector runs in that window (likelier after a TensorFlow run
    has filled the heap), the task is finalised from the main thread, its wake-up never reaches
    the event loop, and the drain Prefect registers for interpreter exit waits forever. Freezing
    the objects alive now keeps the task reachable until it has finished.
    """
    import gc

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    gc.freeze()
    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)


@contextmanager
def prefect_server(timeout: float = 180.0) -> Iterator[str]:
    """The Prefect API to use: PREFECT_API_URL when set, else a `prefect server` started here and stopped after."""
    import os
    import socket
    import subprocess
    import sys
    import urllib.request

    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    command = [
        str(Path(sys.executable).parent / "prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise EdgecompressError(
                        f"could not start a Prefect server on port {port}; set PREFECT_API_URL"
                    ) from None
                time.sleep(0.5)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@task(cache_policy=NO_CACHE)
def stage(layout: Layout, params: Params, name: str) -> pipeline.StageOutcome:
    """One pipeline stage, skipped when DVC reports it up to date."""
    return pipeline.run_stage(layout, params, name)


def _stage(name: str, layout: Layout, params: Params) -> pipeline.StageOutcome:
    return stage.with_options(name=name, task_run_name=name)(layout, params, name)


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def champion(uri: str, params: Params) -> float | None:
    """The current champion's int8 accuracy, if there is a champion."""
    return registry.champion_accuracy(uri, params.registry.model_name)


@task(cache_policy=NO_CACHE)
def gate(layout: Layout, params: Params, champion_accuracy: float | None, run: tracking.TrackedRun) -> GateResult:
    """Check the int8 model against every threshold; record the verdict in gate.json, MLflow and Prefect."""
    result = run_gate(layout, params.gate, champion_accuracy)
    run.log_gate(layout, result)
    create_markdown_artifact(key="gate", markdown=result.markdown(), description=result.summary())
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
def compress(project: str = ".") -> RunReport:
    """Run the pipeline in-process on the project at `project`; register the model if it passes the gate."""
    started_at = time.time()
    quiet_expected_errors()
    layout = Layout(Path(project).resolve())
    params = load_params(layout.params_file)
    uri = tracking.tracking_uri(layout.root)
    timings = Timings()
    version = promoted = None
    with project_lock(layout.root, params.retrain.wait_s), tracking.pipeline_run(layout.root, params, timings) as run:
        outcomes = [
            _stage("prepare", layout, params),
            _stage("train", layout, params),
            _stage("prune", layout, params),
            _stage("quantize", layout, params),
            _stage("evaluate", layout, params),
            _stage("edgetpu", layout, params),
        ]
        metrics = run.log_outcome(layout, outcomes)
        verdict = gate(layout, params, champion(uri, params), run)
        if verdict.passed:
            version = register(uri, layout, params, run, verdict)
            if params.registry.auto_promote:
                promoted = promote_if_better(uri, params, version.version, metrics["evaluate"]["shipped_accuracy"])
        shipped = metrics["evaluate"][metrics["evaluate"]["shipped"]]
        create_markdown_artifact(
            key="run",
            markdown=summary.run_markdown(
                outcomes, verdict, run.link(uri), version.version if version else None, shipped
            ),
            description=verdict.summary(),
        )
    if not verdict.passed:
        raise GateFailed(verdict.summary())
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
