"""What does deterministic training cost? The train stage with and without op determinism, side by side.

    python -m benchmarks.determinism [--rounds 2] [--out data/reports/determinism_benchmark.json]

Each measurement is the train stage (params.yaml's own settings, the bundled digits) in a fresh
process, the two modes taking turns. "off" keeps the seeds but replaces TensorFlow's
enable_op_determinism with a no-op for that process. Reports the seconds of each, their ratio, and
whether two "on" runs wrote byte-identical models. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from benchmarks import write_report

ROOT = Path(__file__).resolve().parent.parent

TRAIN = textwrap.dedent(
    """
    import hashlib, json, sys, time
    from pathlib import Path

    import tasks
    import tensorflow as tf
    from tasks.layout import Layout
    from tasks.params import load_params
    from tasks.stages import STAGES

    if sys.argv[2] == "off":
        tf.config.experimental.enable_op_determinism = lambda: None
    layout = Layout(Path(sys.argv[1]))
    params = load_params(Path(sys.argv[3]))
    started = time.perf_counter()
    STAGES["train"](layout, params)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "md5": hashlib.md5(layout.float_model.read_bytes()).hexdigest()}))
    """
)


def _progress(message: str) -> None:
    print(f"[determinism benchmark] {message}", file=sys.stderr, flush=True)


def train_once(folder: Path, mode: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", TRAIN, str(folder), mode, str(ROOT / "params.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "reports" / "determinism_benchmark.json")
    args = parser.parse_args(argv)
    import tasks  # noqa: F401
    from tasks.layout import Layout
    from tasks.params import load_params
    from tasks.stages import STAGES

    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        STAGES["prepare"](Layout(folder), load_params(ROOT / "params.yaml"))
        for round_ in range(args.rounds):
            for mode in ("on", "off"):
                _progress(f"round {round_ + 1}: train stage, op determinism {mode}")
                runs[mode].append(train_once(folder, mode))
    best = {mode: min(run["seconds"] for run in measured) for mode, measured in runs.items()}
    result = {
        "seconds_on": round(best["on"], 2),
        "seconds_off": round(best["off"], 2),
        "on_over_off": round(best["on"] / best["off"], 3),
        "identical_models_on": len({run["md5"] for run in runs["on"]}) == 1,
        "identical_models_off": len({run["md5"] for run in runs["off"]}) == 1,
    }
    write_report(args.out, result)
    print(f"{'train stage, op determinism on':<40}{result['seconds_on']:>8.2f} s (best of {args.rounds})")
    print(f"{'train stage, op determinism off':<40}{result['seconds_off']:>8.2f} s")
    print(f"{'on / off':<40}{result['on_over_off']:>8.3f}")
    print(f"byte-identical float models: on {result['identical_models_on']}, off {result['identical_models_off']}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
