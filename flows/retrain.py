"""Scheduled retraining: do nothing when nothing changed; otherwise compress, gate, register, push."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from flows.compress import SKIPPED, RunReport, compress, publish, quiet_expected_errors, show_domain_logs
from flows.server import die_with_parent_process
from tasks.bookkeeping import summary, tracking, versioning
from tasks.bookkeeping.lock import project_lock
from tasks.bookkeeping.plan import pending
from tasks.errors import EdgecompressError
from tasks.layout import Layout
from tasks.params import Params, load_params


class PushFailed(EdgecompressError):
    """The retrain registered its model but could not send its outputs to the DVC remote."""


@dataclass
class RetrainReport:
    """What a retrain did: why it ran (or that it did not), the run it made, what it pushed."""

    changes: dict[str, str]
    run: RunReport | None = None
    pushed: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    recorded: bool = True  # in Prefect (a skip decided without a Prefect server is not)

    @property
    def skipped(self) -> bool:
        return self.run is None


@task(cache_policy=NO_CACHE)
def what_changed(layout: Layout, params: Params) -> dict[str, str]:
    """Stages DVC (or the world outside the project) reports out of date, with the reason."""
    return pending(layout, params, tracking.tracking_uri(layout.root))


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def push(layout: Layout) -> int:
    """Send the run's outputs to the default DVC remote."""
    return versioning.push(layout.root)


@flow(name="retrain", log_prints=True)
def retrain(project: str = ".") -> Any:
    """One scheduled retrain of the project at `project`: skipped in seconds when nothing changed."""
    die_with_parent_process()  # a run `serve` started goes when `serve` goes
    quiet_expected_errors()
    show_domain_logs()
    layout = Layout(Path(project).resolve())
    params = load_params(layout.params_file)
    with project_lock(layout.root, params.retrain.wait_s):
        changes = what_changed(layout, params)
        if not changes:
            publish("retrain", summary.skipped_markdown(layout), SKIPPED)
            return Completed(message=SKIPPED, data=RetrainReport(changes={}))
        report = cast(RunReport, compress(project=str(layout.root)))
        pushed = None
        if params.retrain.push:
            try:
                pushed = push(layout)
            except EdgecompressError as error:
                assert report.version is not None  # compress returns only after registering
                raise PushFailed(
                    f"{params.registry.model_name} version {report.version.version} is registered, but its outputs "
                    f"were not pushed ({error}); run `dvc push` when the remote is reachable"
                ) from None
    publish("retrain", summary.retrain_markdown(changes, pushed), "retrained")
    return RetrainReport(changes=changes, run=report, pushed=pushed)
