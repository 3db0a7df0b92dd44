"""Beyond the grid: an Optuna study that proposes trials (multi-objective, constrained), stored to be resumed.

The sweep asks the study for a batch of points, runs them side by side on the Dask workers and tells
it what each measured: test accuracy (up) and int8 parameter bytes or latency (down), with every
constraint and the gate as Optuna constraints, so that a trial that misses one loses to any that
meets them all. A trial that failed is told as FAIL, with its error, and the study goes on. The study
lives in the project's `optuna.db` (SQLite) or the team's database (`--storage`,
EDGECOMPRESS_OPTUNA_STORAGE), and a second sweep with the same `--study NAME` continues it.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.errors import EdgecompressError, ParamsError
from tasks.search.space import Space, Trial, ignored, override, validated
from tasks.search.sweep import METRICS, Constraints, Outcome

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

STORAGE_ENV = "EDGECOMPRESS_OPTUNA_STORAGE"
STORAGE_FILE = "optuna.db"
# What a study minimises beside maximising accuracy: a trial's metric of that name.
OBJECTIVES = {"param-bytes": "param_bytes", "latency": "latency_ms"}
SAMPLERS = ("optuna", "random")


@dataclass(frozen=True)
class Asked:
    """A point the study proposed: Optuna's trial number and the sweep's Trial, or why it cannot run."""

    number: int
    trial: Trial
    error: str = ""
    handle: Any = field(default=None, repr=False, compare=False)  # Optuna's Trial, in the flow's process only


def storage_url(root: Path, given: str | None = None) -> str:
    """--storage, else EDGECOMPRESS_OPTUNA_STORAGE, else the project's own SQLite file."""
    return given or os.environ.get(STORAGE_ENV) or f"sqlite:///{root / STORAGE_FILE}"


def shown(url: str) -> str:
    """A storage URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: say it as given
        return url


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep reports trials itself
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _storage(url: str) -> optuna.storages.BaseStorage:
    """The RDB storage at `url`, or one line naming it and why not (unreachable, refused, not a URL)."""
    import optuna
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError

    _quiet()
    try:
        # One attempt, a few seconds: a database that does not answer is an answer.
        engine = {"connect_args": {"connect_timeout": 5}} if url.startswith("postgresql") else {}
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except (ArgumentError, NoSuchModuleError, ValueError) as error:
        raise EdgecompressError(
            f"--storage {shown(url)}: not a database URL Optuna can use ({_first(error)}); "
            "e.g. sqlite:///optuna.db or postgresql+psycopg2://USER:PASSWORD@HOST/DB"
        ) from None
    except (OperationalError, ProgrammingError) as error:
        raise EdgecompressError(f"study storage {shown(url)} is unreachable or refused ({_first(error)})") from None


def _first(error: BaseException) -> str:
    text = " ".join(str(getattr(error, "orig", None) or error).split())
    return text[:160] or type(error).__name__


def study_names(url: str) -> list[str]:
    import optuna

    return list(optuna.get_all_study_names(_storage(url)))


def fingerprint(space: Space, objective: str, method: str) -> dict[str, str]:
    """What a study searches, kept with it so that a resumed study is the same search."""
    return {"space": space.describe(), "objective": objective, "search": method}


def check_resume(root: Path, url: str, name: str, space: Space, objective: str, method: str) -> bool:
    """Whether study `name` exists (and then that it searches the same space the same way); one line if not.

    The project's own SQLite file is not created just to look: no file, no study.
    """
    import optuna

    if url == storage_url(root) and not (root / STORAGE_FILE).is_file():
        return False
    if name not in study_names(url):
        return False
    recorded = optuna.load_study(study_name=name, storage=_storage(url)).user_attrs
    wanted = fingerprint(space, objective, method)
    differs = [key for key, value in wanted.items() if recorded.get(key, value) != value]
    if differs:
        key = differs[0]
        raise ParamsError(
            f"--study {name}: it searched {key} {recorded[key]!r}, not {wanted[key]!r}; "
            "resume it with the same -S, --objective and --search, or name a new study"
        )
    return True


def open_study(url: str, name: str, space: Space, objective: str, method: str, batch: int, seed: int) -> optuna.Study:
    """Create or load the study; its sampler seeded from `seed` and the trials it holds already.

    Trials a killed sweep left RUNNING are marked FAIL: the project lock says no other sweep runs them.
    """
    import optuna
    from optuna.trial import TrialState

    storage = _storage(url)
    held = 0
    if name in optuna.get_all_study_names(storage):
        earlier = optuna.load_study(study_name=name, storage=storage)
        held = len(earlier.trials)
        for trial in earlier.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            earlier.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=["maximize", "minimize"],
        sampler=sampler(method, batch, seed + held),
        load_if_exists=True,
    )
    if not held:
        for key, value in fingerprint(space, objective, method).items():
            study.set_user_attr(key, value)
        study.set_metric_names(["accuracy", OBJECTIVES[objective]])
    return study


def sampler(method: str, batch: int, seed: int) -> optuna.samplers.BaseSampler:
    """optuna: multi-objective TPE (its first batch drawn at random, then modelled; constraints read from
    each trial); random: independent uniform draws, the baseline."""
    import optuna

    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(batch, 2))


def distributions(space: Space) -> dict[str, Any]:
    """Optuna's distributions: ranges as floats or integers; value lists as choices of their -S text."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    made: dict[str, Any] = {}
    for axis in space.axes:
        if axis.kind == "float":
            made[axis.key] = FloatDistribution(axis.low, axis.high)
        elif axis.kind == "int":
            made[axis.key] = IntDistribution(int(axis.low), int(axis.high))
        else:  # choices as their text: Optuna's choices must be plain scalars, a list value is not
            made[axis.key] = CategoricalDistribution([override(axis.key, v).split("=", 1)[1] for v in axis.choices])
    return made


# Keys that decide whether others are read at all (space.ignored): sampled first.
SWITCHES = ("prune.enabled", "prune.method", "cluster.enabled")


def ask(study: optuna.Study, space: Space, count: int, raw: dict[str, Any]) -> list[Asked]:
    """`count` new points, each checked with the whole params file (a point that is not valid is not run).

    A conditional space, as Optuna's define-by-run API allows: the switches first, then only the keys
    the point's own settings read. A channel fraction is not drawn for a magnitude trial, which would
    otherwise repeat one model under several values and teach the sampler that the fraction matters.
    """
    asked = []
    made = distributions(space)
    order = sorted(space.axes, key=lambda axis: axis.key not in SWITCHES)  # stable: the rest as given
    for _ in range(count):
        trial = study.ask()
        chosen: dict[str, str] = {}
        for axis in order:
            if axis.key not in SWITCHES and _unread(raw, list(chosen.values()), axis.key):
                continue
            value = _suggest(trial, axis.key, made[axis.key])
            if axis.kind == "float":
                chosen[axis.key] = override(axis.key, round(float(value), 6))
            else:
                chosen[axis.key] = f"{axis.key}={value}"
        overrides = [chosen[axis.key] for axis in space.axes if axis.key in chosen]
        spec = Trial(f"t{trial.number + 1:02d}", tuple(overrides), number=trial.number)
        try:
            validated(raw, spec.overrides)
            asked.append(Asked(trial.number, spec, handle=trial))
        except ParamsError as error:
            asked.append(Asked(trial.number, spec, error=str(error), handle=trial))
    return asked


def _unread(raw: dict[str, Any], overrides: list[str], key: str) -> bool:
    """Whether the point so far leaves `key` unread (a point not valid so far samples everything)."""
    try:
        return bool(ignored(validated(raw, overrides), key))
    except ParamsError:
        return False


def _suggest(trial: optuna.Trial, key: str, distribution: Any) -> Any:
    """One value of `distribution` for `key`, through the trial's public suggest API."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(key, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(key, distribution.low, distribution.high)
    return trial.suggest_float(key, distribution.low, distribution.high)


def runnable(asked: list[Asked]) -> list[Trial]:
    """The points that can run (the others failed validation already)."""
    return [point.trial for point in asked if not point.error]


def pair(asked: list[Asked], ran: list[Outcome]) -> list[tuple[Asked, Outcome]]:
    """Each asked point with its outcome: what ran, in order, or a failure naming why it could not run."""
    results = iter(ran)
    return [
        (point, Outcome(point.trial, "failed", error=point.error) if point.error else next(results)) for point in asked
    ]


def tell(study: optuna.Study, asked: Asked, outcome: Outcome, objective: str, constraints: Constraints) -> None:
    """What the trial measured (accuracy, cost), its constraints and gate, or FAIL with its error."""
    from optuna.trial import TrialState

    trial, number = asked.handle, asked.number
    trial.set_user_attr("name", outcome.trial.name)
    trial.set_user_attr("settings", outcome.trial.settings)
    trial.set_user_attr("float_model", outcome.float_key)
    trial.set_user_attr("seconds", outcome.seconds)
    cost = outcome.metrics.get(OBJECTIVES[objective])
    if outcome.status != "ok" or cost is None:
        trial.set_user_attr("error", outcome.error or f"no {OBJECTIVES[objective]} measured")
        study.tell(number, state=TrialState.FAIL)
        return
    trial.set_user_attr("metrics", {key: outcome.metrics.get(key) for key in METRICS})
    trial.set_user_attr("gate", outcome.gate)
    for name, value in constraints.values(outcome.metrics).items():
        trial.set_constraint(name, value)
    trial.set_constraint("gate", 0.0 if outcome.gate == "passed" else 1.0)
    study.tell(number, [float(outcome.metrics["accuracy"]), float(cost)])


def earlier(study: optuna.Study, told: set[int]) -> list[Outcome]:
    """The study's finished trials from earlier sweeps, as Outcomes (their metrics, their gate verdict)."""
    from optuna.trial import TrialState

    outcomes = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if frozen.number in told:
            continue
        attrs = frozen.user_attrs
        overrides = tuple(str(attrs.get("settings", "")).split())
        spec = Trial(str(attrs.get("name", f"t{frozen.number + 1:02d}")), overrides, number=frozen.number)
        seconds = float(attrs.get("seconds", 0.0))
        if frozen.state == TrialState.COMPLETE:
            metrics = dict(attrs.get("metrics", {}))
            outcome = Outcome(spec, "ok", metrics, float_key=str(attrs.get("float_model", "")), seconds=seconds)
            outcome.gate = str(attrs.get("gate", ""))
        else:
            error = str(attrs.get("error", "failed (no error recorded)"))
            outcome = Outcome(spec, "failed", error=error, float_key=str(attrs.get("float_model", "")), seconds=seconds)
        outcomes.append(outcome)
    return outcomes


def batches(total: int, size: int) -> list[int]:
    """How many points to ask at a time: `size` (the workers), the last batch what is left."""
    size = max(size, 1)
    return [min(size, total - start) for start in range(0, total, size)]


def summary(study: optuna.Study) -> str:
    """The study's name and how many trials it holds, finished and failed."""
    from optuna.trial import TrialState

    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    done, failed = states.count(TrialState.COMPLETE), states.count(TrialState.FAIL)
    return f"study {study.study_name}: {done} trial(s) complete, {failed} failed"


def default_name() -> str:
    import time

    return time.strftime("sweep-%Y%m%d-%H%M%S", time.gmtime())


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
