"""Run the stages the way the flow does: skip what DVC says is current, run and record the rest."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.bookkeeping import journal
from tasks.bookkeeping.versioning import changed_stages, record_stage
from tasks.errors import StageError, no_room, no_room_error
from tasks.layout import Layout
from tasks.params import Params, load_params
from tasks.stages import OUTSIDE_CHANGES, STAGES

log = logging.getLogger(__name__)

# What `pending` calls the gate and registry steps when only they have work left.
LAST_RUN = "gate and registry"


@dataclass(frozen=True)
class StageOutcome:
    """Whether a stage ran or was skipped, why, and how long it took."""

    name: str
    ran: bool
    reason: str
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)


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


def _why(layout: Layout, params: Params, names: list[str]) -> dict[str, str]:
    """{stage: why it must run} for the named stages ('' when current): one DVC pass, plus what DVC cannot see."""
    outside = {name: OUTSIDE_CHANGES[name](layout, params) if name in OUTSIDE_CHANGES else "" for name in names}
    dvc = changed_stages(layout.root, names)
    return {name: outside[name] or describe_changes(dvc[name]) for name in names}


class Plan:
    """Why each stage must run, asked of DVC once for the whole pipeline.

    A stage's status can only change during a run when a stage before it ran (its deps are the
    code, the params and earlier stages' outputs), so the answer for every stage is computed in one
    DVC pass up front, and asked again, for one stage, only after an earlier stage ran: an earlier
    stage that rewrote identical bytes leaves the later ones current.
    """

    def __init__(self, layout: Layout, params: Params, tracking_uri: str | None = None) -> None:
        self.layout, self.params = layout, params
        self.reasons = _why(layout, params, list(STAGES))
        # With every stage current, a run still has work if the last successful run does not stand
        # for today's project (other gate thresholds, another tracking store, no such run at all).
        self.last = journal.last_success(layout.root)
        self.standing = journal.changed_since_success(layout.root, params.flat(), tracking_uri) if tracking_uri else ""
        self._stale = False  # an earlier stage ran: the up-front answers may be out of date

    def why(self, name: str) -> str:
        """Why the stage must run now ('' when DVC reports it up to date)."""
        if self._stale:
            return _why(self.layout, self.params, [name])[name]
        return self.reasons[name]

    def ran(self) -> None:
        self._stale = True

    @property
    def pending(self) -> dict[str, str]:
        """{step: why} for every stage not up to date at planning time, and for the gate and registry
        when the last successful run does not stand (empty: nothing changed, nothing to do)."""
        stages = {name: reason for name, reason in self.reasons.items() if reason}
        return {**stages, LAST_RUN: self.standing} if self.standing else stages


def run_stage(layout: Layout, params: Params, name: str, plan: Plan) -> StageOutcome:
    """Run the named stage unless DVC reports it current; record what ran in dvc.lock."""
    started = time.perf_counter()
    reason = plan.why(name)
    if not reason:
        log.info("%s: up to date, skipped", name)
        return StageOutcome(name, ran=False, reason="up to date", seconds=time.perf_counter() - started)
    log.info("%s: running (%s)", name, reason)
    summary = _stage(layout, params, name)
    check_params_unchanged(layout, params, name)
    record_stage(layout.root, name)
    plan.ran()
    return StageOutcome(name, ran=True, reason=reason, seconds=time.perf_counter() - started, summary=summary)


def _stage(layout: Layout, params: Params, name: str) -> dict[str, Any]:
    """The stage's summary; a disk with no room for its outputs is one line (they are staged: nothing is
    half-written, the previous outputs stay)."""
    try:
        return STAGES[name](layout, params)
    except Exception as error:
        if no_room(error):
            raise StageError(str(no_room_error(error, f"in stage {name} (its previous outputs are kept)"))) from None
        raise


def run_alone(root: Path, name: str) -> dict[str, Any]:
    """One stage without DVC's bookkeeping, as `dvc repro` runs it (DVC records it itself)."""
    layout = Layout(root)
    return _stage(layout, load_params(layout.params_file), name)


def check_params_unchanged(layout: Layout, params: Params, stage: str) -> None:
    """dvc.lock records params.yaml as it is now: refuse to record values the stage did not run with."""
    if load_params(layout.params_file) != params:
        raise StageError(
            f"params.yaml changed while stage {stage} ran; its outputs were made with the values loaded at the "
            "start, so nothing more is recorded - run again"
        )


def pending(layout: Layout, params: Params, tracking_uri: str | None = None) -> dict[str, str]:
    """{step: why it would run} for everything not up to date (empty: nothing changed)."""
    return Plan(layout, params, tracking_uri).pending
