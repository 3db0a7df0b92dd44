"""Grid, random sampling and Optuna at the same budget of trials, on a space with a real trade-off, side by side.

    python -m benchmarks.sweep [--trials 8] [--space cnn|channels] [--max-param-bytes N] [--workers 2]
    python -m benchmarks.sweep --scaling      # the same 8 grid trials on 1 and on 2 Dask workers

In a scratch copy of the project, each method runs the sweep flow (Prefect, prefect-dask's
DaskTaskRunner, a local cluster of worker processes) for the same number of trials over the same
space: the built-in cnn's width (train.conv_filters, train.dense_units) and input size
(data.image_size), which move its int8 parameter bytes and its accuracy together, and a pruning
setting (prune.final_sparsity; with `--space channels`, prune.method=channels and
prune.channel_fraction, once channel pruning is in params.yaml). The grid takes two values on
each of its first axes, as many axes as the budget allows (4 trials: width alone; 8: width and
input size); random and optuna draw from the ranges. Each method starts
with no float model cached, so its wall time includes training every float model it asks for.
Reported: trials, float models trained, wall time and the best test accuracy among trials at or
under the parameter-byte limit (and passing the gate). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from benchmarks import write_report
from benchmarks.retrain import scratch_project

if TYPE_CHECKING:
    from flows.sweep import SweepReport
    from tasks.search.sweep import Search

ROOT = Path(__file__).resolve().parent.parent
# Small budgets: the float models and the trials, not start-up, make the time; no debugger pass; the gate
# judges accuracy only loosely, so that the parameter-byte limit decides.
SETTINGS = [
    "train.epochs=6",
    "prune.epochs=2",
    "cluster.epochs=1",
    "quantize.debug_layers=false",
    "evaluate.latency_runs=20",
    "gate.min_accuracy=0.5",
    "gate.max_accuracy_drop=0.2",
    "gate.max_regression_vs_champion=null",
]
# Each space, as -S texts: what every trial sets, the grid's axes (two values each) and the samplers'
# ranges or choices.
SPACES: dict[str, dict[str, list[str]]] = {
    "cnn": {
        "fixed": [],
        "grid": [
            "train.conv_filters=8,32",
            "train.dense_units=16,128",
            "data.image_size=8,16",
        ],
        "sampled": [
            "train.conv_filters=4:40",
            "train.dense_units=8:160",
            "data.image_size=8,12,16",
            "prune.final_sparsity=0.5:0.9",
        ],
    },
    "channels": {
        "fixed": ["prune.method=channels"],
        "grid": [
            "train.conv_filters=8,32",
            "data.image_size=8,16",
            "prune.channel_fraction=0.0,0.5",
        ],
        "sampled": [
            "train.conv_filters=4:40",
            "data.image_size=8,12,16",
            "prune.channel_fraction=0.0:0.7",
        ],
    },
}
# About a third of the cnn space's corners fit under it (the grid's 8 trials: 4 do).
MAX_PARAM_BYTES = 40_000
SCALING_GRID = ["prune.final_sparsity=0.8,0.9", "cluster.number_of_clusters=8,16", "quantize.io_dtype=int8,uint8"]


def _progress(message: str) -> None:
    print(f"[sweep benchmark] {message}", file=sys.stderr, flush=True)


def run(project: Path, search: Search, workers: int) -> tuple[float, SweepReport]:
    """Wall seconds of the sweep flow on `workers` local Dask workers, and its report."""
    from prefect_dask import DaskTaskRunner

    from flows.sweep import sweep_flow
    from tasks.search.sweep import worker_threads

    cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1"}
    runner = DaskTaskRunner(cluster_kwargs={**cluster, "dashboard_address": None})
    flow = sweep_flow.with_options(task_runner=runner)  # type: ignore[arg-type]
    started = time.perf_counter()
    report = cast("SweepReport", flow(project=str(project), search=search, threads=worker_threads(workers)))
    return time.perf_counter() - started, report


def _forget_float_models(project: Path) -> None:
    from tasks.search.sweep import FLOAT_CACHE

    shutil.rmtree(project / FLOAT_CACHE, ignore_errors=True)


def compare(project: Path, space: str, trials: int, limit: int, workers: int) -> dict[str, Any]:
    """The three methods over `space` at `trials` trials each, one after the other in one process."""
    from tasks.search import space as spaces
    from tasks.search.study import storage_url
    from tasks.search.sweep import Constraints, Search

    constraints = Constraints(max_param_bytes=limit)
    axes = SPACES[space]["grid"]
    used = max(1, min(len(axes), round(math.log2(max(trials, 2)))))  # two values on each of the first axes
    grid_space = spaces.parse_space([*SPACES[space]["fixed"], *axes[:used]])
    sampled_space = spaces.parse_space([*SPACES[space]["fixed"], *SPACES[space]["sampled"]])
    grid = spaces.expand(project / "params.yaml", grid_space).trials
    if len(grid) != trials:
        _progress(f"a grid of {len(grid)} points (two values on {used} axes); random and optuna get as many")
        trials = len(grid)
    searches = {
        "grid": Search(grid_space, constraints=constraints),
        **{
            method: Search(
                sampled_space, method, trials, "param-bytes", f"benchmark-{method}", storage_url(project), workers,
                constraints,
            )
            for method in ("random", "optuna")
        },
    }  # fmt: skip
    results = {}
    for method, search in searches.items():
        _forget_float_models(project)
        _progress(f"{method}: {trials} trials on {workers} workers")
        seconds, report = run(project, search, workers)
        best = report.best
        results[method] = {
            "trials": len(report.outcomes),
            "failed": sum(o.status != "ok" for o in report.outcomes),
            "float_models_trained": sum(f.status == "trained" for f in report.floats),
            "seconds": round(seconds, 1),
            "feasible": sum(o.feasible for o in report.outcomes),
            "best_accuracy": best.metrics["accuracy"] if best else None,
            "best_param_bytes": best.metrics.get("param_bytes") if best else None,
            "best_settings": best.trial.settings if best else None,
        }
    return {
        "space": space,
        "grid": SPACES[space]["grid"],
        "sampled": SPACES[space]["sampled"],
        "settings": SETTINGS,
        "max_param_bytes": limit,
        "workers": workers,
        "cores": os.cpu_count(),
        "methods": results,
    }


def scaling(project: Path) -> dict[str, Any]:
    """The same 8 grid trials on 1 and on 2 workers (the float model trained once, before either)."""
    from tasks.search import space as spaces
    from tasks.search.sweep import Search

    search = Search(spaces.parse_space(SCALING_GRID))
    results = {}
    run(project, Search(spaces.parse_space(["prune.final_sparsity=0.9"])), 1)  # trains and caches the float model
    for workers in (1, 2):
        _progress(f"8 trials on {workers} worker(s)")
        seconds, report = run(project, search, workers)
        results[workers] = {"seconds": round(seconds, 2), "trials": len(report.outcomes)}
    speedup = results[1]["seconds"] / results[2]["seconds"]
    return {
        "grid": SCALING_GRID,
        "one_worker_s": results[1]["seconds"],
        "two_workers_s": results[2]["seconds"],
        "ratios": {"speedup_2_over_1": {"value": round(speedup, 3), "target": ">= 1.6", "met": speedup >= 1.6}},
    }


def measure(project: Path, args: argparse.Namespace) -> dict[str, Any]:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    import flows  # noqa: F401  (Prefect settings for a small machine)
    from flows.server import flush_prefect_services, prefect_api
    from tasks.params import write_overrides

    write_overrides(project / "params.yaml", SETTINGS)
    with prefect_api():
        result = (
            scaling(project)
            if args.scaling
            else compare(project, args.space, args.trials, args.max_param_bytes, args.workers)
        )
        flush_prefect_services()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", choices=sorted(SPACES), default="cnn")
    parser.add_argument("--trials", type=int, default=8, help="budget of each method: 2, 4 or 8 (the grid's size)")
    parser.add_argument("--max-param-bytes", type=int, default=MAX_PARAM_BYTES)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scaling", action="store_true", help="1 against 2 workers on one grid instead")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "reports" / "sweep_benchmark.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        result = measure(scratch_project(Path(folder)), args)
    write_report(args.out, result)
    if args.scaling:
        print(f"{'8 trials, 1 worker':<32}{result['one_worker_s']:>8.1f} s")
        print(f"{'8 trials, 2 workers':<32}{result['two_workers_s']:>8.1f} s")
        ratio = result["ratios"]["speedup_2_over_1"]
        print(
            f"{'speedup':<32}{ratio['value']:>8.2f}   target {ratio['target']}   {'pass' if ratio['met'] else 'MISS'}"
        )
    else:
        print(f"space {result['space']}, parameter bytes <= {result['max_param_bytes']:,}, {result['workers']} workers")
        print(f"{'method':<8}{'trials':>7}{'failed':>7}{'floats':>7}{'seconds':>9}{'in limit':>9}{'best acc':>9}  best")
        for method, r in result["methods"].items():
            accuracy = "-" if r["best_accuracy"] is None else f"{r['best_accuracy']:.4f}"
            print(
                f"{method:<8}{r['trials']:>7}{r['failed']:>7}{r['float_models_trained']:>7}{r['seconds']:>9.1f}"
                f"{r['feasible']:>9}{accuracy:>9}  {r['best_settings'] or '-'} ({r['best_param_bytes'] or '-'} B)"
            )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
