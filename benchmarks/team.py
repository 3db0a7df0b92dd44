"""What does the team setup cost? A retrain through a Prefect worker beside the same retrain run directly.

Run from the project root: `python -m benchmarks.team [--out data/reports/team_benchmark.json]`.
It needs PostgreSQL's initdb/pg_ctl (Debian's postgresql package). It starts the team setup of
README "Scaling out" on 127.0.0.1 (PostgreSQL, `mlflow server`, `prefect server`, a process
pool, the retrain deployment, one worker), then, on two identical scratch copies of the project
with the default params, times in one go:

- direct: `edgecompress retrain` in the project, against the same MLflow and Prefect servers;
- worker: `prefect deployment run` of the retrain deployment, until the worker's run is final.

Target: the worker's overhead (worker minus direct) under 20% of the direct (default) run.
The one-time start of the servers, pool, deployment and worker is reported beside it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import print_ratios, write_report
from benchmarks.retrain import ROOT, scratch_project

TARGET = 0.20


def _progress(message: str) -> None:
    print(f"[team benchmark] {message}", file=sys.stderr, flush=True)


def measure(folder: Path) -> dict[str, Any]:
    """Seconds of the setup, a direct retrain and a retrain through the worker, on identical projects."""
    sys.path.insert(0, str(ROOT))
    from tests.integration import servers

    bin_dir = servers.postgres_bin()
    if bin_dir is None:
        raise SystemExit("needs PostgreSQL's initdb and pg_ctl (Debian: apt-get install postgresql)")
    (folder / "direct").mkdir()
    (folder / "worker").mkdir()
    direct = scratch_project(folder / "direct")
    worked = scratch_project(folder / "worker")
    shutil.copy(ROOT / "prefect.yaml", worked / "prefect.yaml")
    team = servers.TeamSetup(folder, worked, bin_dir)
    try:
        _progress("starting PostgreSQL, MLflow and Prefect servers, pool, deployment, worker")
        started = time.perf_counter()
        team.start(workers=1)
        setup = time.perf_counter() - started

        # Both retrains then find TensorFlow's files in the page cache: the first is not charged for it.
        subprocess.run([sys.executable, "-c", "import tasks, tensorflow"], cwd=ROOT, check=True, capture_output=True)
        _progress("direct: `edgecompress retrain` against the same servers (default params)")
        started = time.perf_counter()
        result = subprocess.run(
            [str(servers.BIN / "edgecompress"), "retrain"], cwd=direct, env=team.env(), capture_output=True, text=True
        )
        direct_s = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"direct retrain failed:\n{result.stderr[-3000:]}")

        _progress("worker: `prefect deployment run`, until the flow run is final")
        started = time.perf_counter()
        run = team.prefect.wait_final(servers.trigger(team.env()), timeout=1800)
        worker_s = time.perf_counter() - started
        if run["state"]["type"] != "COMPLETED":
            raise SystemExit(f"worker retrain ended {run['state']['type']}: {run['state']['message']}")
    finally:
        team.stop()
    overhead = (worker_s - direct_s) / direct_s
    return {
        "setup_s": round(setup, 2),
        "direct_retrain_s": round(direct_s, 2),
        "worker_retrain_s": round(worker_s, 2),
        "ratios": {
            "worker_overhead_over_direct": {
                "value": round(overhead, 4),
                "target": f"< {TARGET}",
                "met": overhead < TARGET,
            },
            "setup_over_direct": {"value": round(setup / direct_s, 4), "target": "(reported, once)", "met": None},
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Measure, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "reports" / "team_benchmark.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        result = measure(Path(folder))
    write_report(args.out, result)
    print(f"{'setup (servers, pool, deployment, worker)':<44}{result['setup_s']:>8.2f} s")
    print(f"{'retrain, direct (edgecompress retrain)':<44}{result['direct_retrain_s']:>8.2f} s")
    print(f"{'retrain, through the worker':<44}{result['worker_retrain_s']:>8.2f} s")
    print_ratios(result["ratios"], 44, 17)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
