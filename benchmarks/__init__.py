"""Benchmarks: measurements reported against targets, never asserted (run them as `python -m benchmarks.NAME`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(out: Path, result: dict[str, Any]) -> None:
    """The benchmark's result as JSON at `out` (its folder made if missing)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def print_ratios(ratios: dict[str, dict[str, Any]], name_width: int, target_width: int) -> None:
    """One line per ratio: its value, its target, and pass/MISS (nothing for a ratio only reported)."""
    for name, ratio in ratios.items():
        verdict = "" if ratio["met"] is None else ("pass" if ratio["met"] else "MISS")
        print(f"{name:<{name_width}}{ratio['value']:>8.3f}   target {ratio['target']:<{target_width}}{verdict}")
