"""The sweep flow: train once, run every grid point as a task on Dask, answer with the Pareto front.

```
prepare ─► train ─► N trials (on Dask workers) ─► results table, Pareto front, best under the gate ─► (apply)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.compress import pipeline_stage, publish, quiet_expected_errors, show_domain_logs
from tasks import registry
from tasks.bookkeeping import tracking
from tasks.bookkeeping.lock import project_lock
from tasks.bookkeeping.plan import Plan
from tasks.layout import Layout
from tasks.params import load_params, write_overrides
from tasks.search import sweep


@dataclass
class SweepReport:
    """The trials, the best one that passes the gate, and where the answer was written."""

    outcomes: list[sweep.Outcome]
    best: sweep.Outcome | None
    csv: Path
    plot: Path
    run_id: str
    applied: bool


@task(cache_policy=NO_CACHE)
def trial(root: str, scratch: str, spec: sweep.Trial, threads: int | None) -> sweep.Outcome:
    """One grid point: the stages after training, in its own folder, measured (a failure is a result)."""
    return sweep.run_trial(Path(root), Path(scratch), spec, threads)


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def champion(uri: str, name: str) -> float | None:
    return registry.champion_accuracy(uri, name)


@flow(name="sweep", log_prints=True)
def sweep_flow(project: str, grid: dict[str, list[Any]], threads: int | None = None, apply: bool = False) -> Any:
    """Train once, then every grid point as a task on the flow's task runner (Dask)."""
    quiet_expected_errors()
    show_domain_logs()
    layout = Layout(Path(project).resolve())
    params = load_params(layout.params_file)
    specs = sweep.expand(layout.params_file, grid)
    uri = tracking.tracking_uri(layout.root)
    with project_lock(layout.root, params.retrain.wait_s):
        todo = Plan(layout, params)
        pipeline_stage("prepare", layout, params, todo)
        pipeline_stage("train", layout, params, todo)
        with sweep.scratch_folder(layout) as scratch:
            futures = [
                trial.with_options(task_run_name=f"trial {spec.name}").submit(
                    str(layout.root), str(scratch), spec, threads
                )
                for spec in specs
            ]
            outcomes = [future.result() for future in futures]
        best = sweep.judge(outcomes, params, champion(uri, params.registry.model_name))
        written = sweep.write_answer(layout, outcomes)
        run_id = sweep.log_sweep(layout.root, grid, outcomes, best, written)
        publish("sweep", sweep.markdown(outcomes, best), "sweep results")
        if apply and best is not None:
            write_overrides(layout.params_file, list(best.trial.overrides))
    return SweepReport(outcomes, best, written[0], written[1], run_id, applied=apply and best is not None)
