"""Run one stage the way the flow does: skip it when DVC says it is current, else run and record it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import OUTSIDE_CHANGES, STAGES
from tasks.versioning import changed_stages, record_stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageOutcome:
    """Whether a stage ran or was skipped, why, and how long it took."""

    name: str
    ran: bool
    reason: str
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)


def why_run(layout: Layout, params: Params, name: str) -> str:
    """Why the stage must run ('' when DVC reports it up to date)."""
    outside = OUTSIDE_CHANGES.get(name)
    reason = outside(layout, params) if outside else ""
    if reason:
        return reason
    changes = changed_stages(layout.root, [name])[name]
    return describe_changes(changes)


def describe_changes(changes: list[Any]) -> str:
    """DVC's status entries for one stage as a short phrase, e.g. 'changed deps: data/raw modified'."""

    def items(entries: dict[str, Any]) -> str:
        return ", ".join(
            items(status) if isinstance(status, dict) else f"{path} {status}" for path, status in entries.items()
        )

    parts: list[str] = []
    for change in changes:
        if isinstance(change, dict):
            parts.extend(
                f"{kind}: {items(entries) if isinstance(entries, dict) else entries}"
                for kind, entries in change.items()
            )
        else:
            parts.append(str(change))
    return "; ".join(parts)


def run_stage(layout: Layout, params: Params, name: str) -> StageOutcome:
    """Run the named stage unless DVC reports it current; record what ran in dvc.lock."""
    started = time.perf_counter()
    reason = why_run(layout, params, name)
    if not reason:
        log.info("%s: up to date, skipped", name)
        return StageOutcome(name, ran=False, reason="up to date", seconds=time.perf_counter() - started)
    log.info("%s: running (%s)", name, reason)
    summary = STAGES[name](layout, params)
    record_stage(layout.root, name)
    return StageOutcome(name, ran=True, reason=reason, seconds=time.perf_counter() - started, summary=summary)


def pending(layout: Layout, params: Params) -> dict[str, str]:
    """{stage: why it would run} for every stage that is not up to date (empty: nothing changed)."""
    reasons = {name: why_run(layout, params, name) for name in STAGES}
    return {name: reason for name, reason in reasons.items() if reason}
