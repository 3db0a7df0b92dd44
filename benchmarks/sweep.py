"""Does a sweep scale with Dask workers? The same trials on 1 and on 2 local workers, side by side.

    python -m benchmarks.sweep [--out data/reports/sweep_benchmark.json]

In a scratch copy of the project, the float model is trained once (as any sweep does, by the
normal pipeline), then the same 8-trial grid runs through the sweep flow (Prefect, prefect-dask's
DaskTaskRunner, a local cluster of worker processes) with 1 worker and with 2. Each worker
process imports TensorFlow itself and receives paths and settings, never a live model. Target: 2
workers at least 1.6x faster than 1. The ratio is printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from benchmarks import write_report
from benchmarks.retrain import scratch_project

if TYPE_CHECKING:
    from flows.sweep import SweepReport

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.6
# Enough fine-tuning per trial for the trials, not the start-up, to dominate; no debugger pass.
SETTINGS = ["prune.epochs=8", "cluster.epochs=2", "quantize.debug_layers=false", "evaluate.latency_runs=50"]
GRID: dict[str, list[Any]] = {
    "prune.final_sparsity": [0.8, 0.9],
    "cluster.number_of_clusters": [8, 16],
    "quantize.io_dtype": ["int8", "uint8"],
}


def _progress(message: str) -> None:
    print(f"[sweep benchmark] {message}", file=sys.stderr, flush=True)


def sweep_seconds(project: Path, workers: int) -> tuple[float, list[Any]]:
    """Wall seconds of the sweep flow on `workers` local Dask workers (training already done)."""
    from prefect_dask import DaskTaskRunner

    from flows.sweep import sweep_flow
    from tasks.search.sweep import worker_threads

    cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1"}
    runner = DaskTaskRunner(cluster_kwargs={**cluster, "dashboard_address": None})
    flow = sweep_flow.with_options(task_runner=runner)  # type: ignore[arg-type]
    started = time.perf_counter()
    report = cast("SweepReport", flow(project=str(project), grid=GRID, threads=worker_threads(workers)))
    return time.perf_counter() - started, report.outcomes


def measure(project: Path) -> dict[str, Any]:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    import flows  # noqa: F401  (Prefect settings for a small machine)
    from flows.server import flush_prefect_services, prefect_api
    from tasks.params import write_overrides

    write_overrides(project / "params.yaml", SETTINGS)
    with prefect_api():
        from tasks.bookkeeping.plan import Plan, run_stage
        from tasks.layout import Layout
        from tasks.params import load_params

        layout = Layout(project)
        params = load_params(layout.params_file)
        _progress("training the float model once (prepare, train), recorded in dvc.lock as a sweep does")
        plan = Plan(layout, params)
        for stage in ("prepare", "train"):
            run_stage(layout, params, stage, plan)
        results = {}
        for workers in (1, 2):
            _progress(f"8 trials on {workers} worker(s)")
            seconds, outcomes = sweep_seconds(project, workers)
            failed = [o.trial.name for o in outcomes if o.status != "ok"]
            if failed:
                raise SystemExit(f"trials failed with {workers} worker(s): {failed}")
            results[workers] = {"seconds": round(seconds, 2), "trials": len(outcomes)}
        flush_prefect_services()
    speedup = results[1]["seconds"] / results[2]["seconds"]
    return {
        "settings": SETTINGS,
        "grid": GRID,
        "cores": os.cpu_count(),
        "one_worker_s": results[1]["seconds"],
        "two_workers_s": results[2]["seconds"],
        "ratios": {
            "speedup_2_over_1": {"value": round(speedup, 3), "target": f">= {TARGET}", "met": speedup >= TARGET}
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "reports" / "sweep_benchmark.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        result = measure(scratch_project(Path(folder)))
    write_report(args.out, result)
    print(f"{'8 trials, 1 worker':<32}{result['one_worker_s']:>8.1f} s")
    print(f"{'8 trials, 2 workers':<32}{result['two_workers_s']:>8.1f} s")
    ratio = result["ratios"]["speedup_2_over_1"]
    print(f"{'speedup':<32}{ratio['value']:>8.2f}   target {ratio['target']}   {'pass' if ratio['met'] else 'MISS'}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
