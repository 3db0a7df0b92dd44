"""How cheap is a scheduled retrain when nothing changed? Measured beside a full run, in one go.

Run from the project root: `python -m benchmarks.retrain [--out data/reports/retrain_benchmark.json]`.
It copies the project into a scratch git + DVC repository, then, in one process (as a served
schedule runs them): a full compression run, and a retrain with nothing changed. It also times
the same skipped retrain, and `edgecompress run` with nothing changed, each from a fresh process,
which pays Python and DVC start-up again (best of three). Targets: the skipped retrain at most 10% of
the full run; a run with nothing to do at most 5 seconds of wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import print_ratios, write_report

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("params.yaml", "dvc.yaml", "pyproject.toml", ".dvcignore", ".gitignore", "tasks", "flows", ".dvc")
TARGET = 0.10
NO_OP_SECONDS = 5.0  # `edgecompress run` with nothing changed, wall time of the whole command


def _progress(message: str) -> None:
    print(f"[retrain benchmark] {message}", file=sys.stderr, flush=True)


def scratch_project(folder: Path) -> Path:
    """The project as a fresh clone has it, in its own git + DVC repository, with a local DVC remote."""
    project = folder / "project"
    project.mkdir()
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "tmp", "cache", "config.local")
            shutil.copytree(source, project / name, ignore=ignore)
        else:
            shutil.copy2(source, project / name)
    git = ["git", "-c", "user.name=benchmark", "-c", "user.email=benchmark@example.com"]
    for command in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", "project"]):
        subprocess.run(command, cwd=project, check=True)
    remote = folder / "dvcstore"
    subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "add", "--local", "-d", "-f", "local", str(remote)],
        cwd=project,
        check=True,
    )
    return project


def measure(project: Path) -> dict[str, Any]:
    """Seconds of a full run and of skipped retrains, warm (same process) and cold (new process)."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import flows  # noqa: F401  (Prefect settings for a small machine)
    from flows.compress import compress
    from flows.retrain import RetrainReport, retrain
    from flows.server import flush_prefect_services

    _progress("full run (in process; includes the embedded Prefect server's start-up)")
    started = time.perf_counter()
    compress(project=str(project))
    full = time.perf_counter() - started
    _progress("retrain with nothing changed (same process)")
    started = time.perf_counter()
    report: RetrainReport = retrain(project=str(project))  # type: ignore[assignment]
    warm = time.perf_counter() - started
    if not report.skipped:
        raise SystemExit("the second run was not skipped: something changed between the two runs")
    flush_prefect_services()
    edgecompress = str(Path(sys.executable).parent / "edgecompress")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    cold: dict[str, float] = {}
    for command in ("retrain", "run"):
        _progress(f"`edgecompress {command}` with nothing changed, in a fresh process (best of 3)")
        times = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run([edgecompress, command], cwd=project, check=True, capture_output=True, env=env)
            times.append(time.perf_counter() - started)
        cold[command] = min(times)
    return {
        "full_run_s": round(full, 2),
        "skipped_retrain_warm_s": round(warm, 2),
        "skipped_retrain_cold_s": round(cold["retrain"], 2),
        "unchanged_run_cold_s": round(cold["run"], 2),
        "ratios": {
            "skipped_warm_over_full": {
                "value": round(warm / full, 4),
                "target": f"<= {TARGET}",
                "met": warm / full <= TARGET,
            },
            "skipped_cold_over_full": {"value": round(cold["retrain"] / full, 4), "target": "(reported)", "met": None},
            "unchanged_run_seconds": {
                "value": round(cold["run"], 2),
                "target": f"<= {NO_OP_SECONDS}",
                "met": cold["run"] <= NO_OP_SECONDS,
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Measure, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "reports" / "retrain_benchmark.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        result = measure(scratch_project(Path(folder)))
    write_report(args.out, result)
    print(f"{'full run':<40}{result['full_run_s']:>8.2f} s")
    print(f"{'skipped retrain, same process':<40}{result['skipped_retrain_warm_s']:>8.2f} s")
    print(f"{'skipped retrain, new process':<40}{result['skipped_retrain_cold_s']:>8.2f} s")
    print(f"{'run with nothing changed, new process':<40}{result['unchanged_run_cold_s']:>8.2f} s")
    print_ratios(result["ratios"], 40, 10)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
