"""The sweep flow: float models trained once each, trials on Dask, answered with the Pareto fronts.

```
grid | study (ask) ─► float model per distinct data.*/train.* (a task each, or from the cache)
                   ─► trials on Dask workers, each after its float model ─► (tell the study, next batch)
                   ─► table, Pareto fronts, best under the gate and the constraints ─► (apply)
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.compress import publish, quiet_expected_errors, show_domain_logs
from tasks import registry
from tasks.bookkeeping import tracking
from tasks.bookkeeping.lock import project_lock
from tasks.layout import Layout
from tasks.params import Params, load_params, read_params_file, write_overrides
from tasks.search import answer, space, sweep
from tasks.search import study as studies


@dataclass
class SweepReport:
    """The trials, the best one, the float models, and where the answer was written."""

    outcomes: list[sweep.Outcome]
    best: sweep.Outcome | None
    csv: Path
    plot: Path
    run_id: str
    applied: bool
    floats: list[sweep.FloatModel] = field(default_factory=list)
    study: str = ""
    constraints: sweep.Constraints = field(default_factory=sweep.Constraints)


@task(cache_policy=NO_CACHE)
def float_model(root: str, spec: sweep.FloatSpec, threads: int | None) -> sweep.FloatModel:
    """Prepare and train one float model in its own folder (a failure is a result)."""
    return sweep.train_float(Path(root), spec, threads)


@task(cache_policy=NO_CACHE)
def trial(root: str, scratch: str, spec: space.Trial, model: sweep.FloatModel, threads: int | None) -> sweep.Outcome:
    """One point: the stages after training on its float model, in its own folder, measured."""
    return sweep.run_trial(Path(root), Path(scratch), spec, model, threads)


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def champion(uri: str, name: str) -> float | None:
    return registry.champion_accuracy(uri, name)


def run_points(
    root: Path, scratch: Path, points: list[space.Trial], threads: int | None, models: dict[str, Any]
) -> list[sweep.Outcome]:
    """Each point after its float model: one task per float model not trained yet (`models` remembers
    them across batches), then a task per point that waits for it."""
    specs = sweep.float_specs(root, points)
    for spec in specs.values():
        if spec.key not in models:
            models[spec.key] = sweep.cached_float(root, spec) or float_model.with_options(
                task_run_name=f"float model {spec.key[:8]}"
            ).submit(str(root), spec, threads)
    futures = [
        trial.with_options(task_run_name=f"trial {point.name}").submit(
            str(root), str(scratch), point, models[specs[point.name].key], threads
        )
        for point in points
    ]
    return [future.result() for future in futures]


def run_study(
    layout: Layout,
    params: Params,
    search: sweep.Search,
    scratch: Path,
    threads: int | None,
    champion_accuracy: float | None,
    models: dict[str, Any],
) -> tuple[list[sweep.Outcome], list[sweep.Outcome], str]:
    """Ask a batch, run it on the workers, tell the study; again until `search.trials` ran. Returns every
    trial the study holds, those of this sweep, and a line about the study."""
    url = studies.storage_url(layout.root, search.storage)
    study = studies.open_study(
        url, search.study, search.space, search.objective, search.method, search.batch, params.train.seed
    )
    raw = read_params_file(layout.params_file)
    new: list[sweep.Outcome] = []
    # Settings measured already (this study's earlier trials, then this sweep's): a point drawn again
    # reuses the measurement rather than run the same deterministic stages twice.
    measured = {outcome.trial.overrides: outcome for outcome in studies.earlier(study, set()) if outcome.status == "ok"}
    for size in studies.batches(search.trials, search.batch):
        asked = studies.ask(study, search.space, size, raw)
        points = studies.runnable(asked)
        ran = run_points(layout.root, scratch, sweep.unmeasured(points, measured), threads, models)
        ran = sweep.with_repeats(points, ran, measured)
        measured.update({o.trial.overrides: o for o in ran if o.status == "ok" and o.trial.overrides not in measured})
        for point, outcome in studies.pair(asked, ran):
            sweep.assess(outcome, params, champion_accuracy, search.constraints)
            studies.tell(study, point, outcome, search.objective, search.constraints)
            new.append(outcome)
    told = {outcome.trial.number for outcome in new if outcome.trial.number is not None}
    return studies.earlier(study, told) + new, new, f"{studies.summary(study)} in {studies.shown(url)}"


@flow(name="sweep", log_prints=True)
def sweep_flow(project: str, search: sweep.Search, threads: int | None = None) -> Any:
    """Float models once each, trials on the flow's task runner (Dask), judged under the gate and constraints."""
    quiet_expected_errors()
    show_domain_logs()
    layout = Layout(Path(project).resolve())
    params = load_params(layout.params_file)
    uri = tracking.tracking_uri(layout.root)
    models: dict[str, Any] = {}
    line = ""
    with project_lock(layout.root, params.retrain.wait_s):
        champion_accuracy = champion(uri, params.registry.model_name)
        with sweep.scratch_folder(layout) as scratch:
            if search.method == "grid":
                points = space.expand(layout.params_file, search.space).trials
                outcomes = new = run_points(layout.root, scratch, points, threads, models)
            else:
                outcomes, new, line = run_study(layout, params, search, scratch, threads, champion_accuracy, models)
        floats = [model.result() if hasattr(model, "result") else model for model in models.values()]
        sweep.prune_float_cache(layout.root, {model.spec.key for model in floats})
        best = sweep.judge(outcomes, params, champion_accuracy, search.constraints)
        written = answer.write_answer(layout, outcomes, search.space.keys, search.constraints, best)
        tags = {"sweep.space": search.space.describe(), "sweep.search": search.method, "sweep.study": search.study}
        run_id = answer.log_sweep(layout.root, tags, new, best, written)
        publish(
            "sweep", answer.markdown(outcomes, best, search.constraints, f"Sweep ({search.method})"), "sweep results"
        )
        if search.apply and best is not None:
            write_overrides(layout.params_file, list(best.trial.overrides))
    applied = search.apply and best is not None
    return SweepReport(outcomes, best, written[0], written[1], run_id, applied, floats, line, search.constraints)
