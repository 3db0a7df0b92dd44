"""Scheduled retraining: do nothing when nothing changed; otherwise compress, gate, register, push."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from flows.compress import RunReport, compress, quiet_expected_errors
from tasks import pipeline, summary, versioning
from tasks.layout import Layout
from tasks.locking import project_lock
from tasks.params import Params, load_params

SKIPPED = "skipped: no change"


@dataclass
class RetrainReport:
    """What a retrain did: why it ran (or that it did not), the run it made, what it pushed."""

    changes: dict[str, str]
    run: RunReport | None = None
    pushed: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return self.run is None


@task(cache_policy=NO_CACHE)
def what_changed(layout: Layout, params: Params) -> dict[str, str]:
    """Stages DVC (or the world outside the project) reports out of date, with the reason."""
    return pipeline.pending(layout, params)


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def push(layout: Layout) -> int:
    """Send the run's outputs to the default DVC remote."""
    return versioning.push(layout.root)


@flow(name="retrain", log_prints=True)
def retrain(project: str = ".") -> Any:
    """One scheduled retrain of the project at `project`: skipped in seconds when nothing changed."""
    quiet_expected_errors()
    layout = Layout(Path(project).resolve())
    params = load_params(layout.params_file)
    with project_lock(layout.root, params.retrain.wait_s):
        changes = what_changed(layout, params)
        if not changes:
            create_markdown_artifact(key="retrain", markdown=summary.skipped_markdown(layout), description=SKIPPED)
            return Completed(message=SKIPPED, data=RetrainReport(changes={}))
        report = compress(project=str(layout.root))
        pushed = push(layout) if params.retrain.push else None
    create_markdown_artifact(key="retrain", markdown=summary.retrain_markdown(changes, pushed), description="retrained")
    return RetrainReport(changes=changes, run=report, pushed=pushed)
