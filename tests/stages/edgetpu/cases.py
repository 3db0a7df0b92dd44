"""The real compiler cases the edgetpu tests read (beside the repository, never copied in), and the test double."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.stages.edgetpu import MAPPED, ONE_SUBGRAPH, UNSPECIFIED, UNSUPPORTED_OP, UNSUPPORTED_TYPE
from tests.conftest import REPO

# Real edgetpu_compiler verdicts, kept beside the repository (see its README); never copied in.
CASES = REPO.parent / "shared" / "edgetpu-cases"
CASE_NAMES = sorted(p.parent.name for p in CASES.glob("*/model.tflite")) if CASES.is_dir() else []
# retinanet was compiled with `-m 13 -s -da` (README, source.txt): several Edge TPU subgraphs allowed,
# runtime 13; predict it with the same settings. The others used the compiler's defaults.
MULTIPLE_SUBGRAPHS = {"retinanet_padded_multisubgraph"}
MIN_RUNTIME = {"retinanet_padded_multisubgraph": 13}
# Per-case floors below 1.0 where the compiler did what no rule foresees (none today: retinanet's FPN
# ADD, which the -a -d delegate search left on the CPU, is now `one-sided-pad-operand`, not documented).
CASE_FLOOR: dict[str, float] = {}
# Held-out cases are scored the same way: at least this much of all operators, pooled.
POOLED_FLOOR = 0.99
KNOWN_STATUSES = {
    MAPPED,
    ONE_SUBGRAPH,
    UNSPECIFIED,
    UNSUPPORTED_OP,
    UNSUPPORTED_TYPE,
    "Tensor has unsupported rank (up to 3 innermost dimensions mapped)",
}
# The default CNN's int8 operators: its global average pooling is a MEAN over height and width.
PIPELINE_OPERATORS = {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"}
FAKE = Path(__file__).with_name("fake_edgetpu_compiler.py")


def need_cases() -> None:
    if not CASE_NAMES:
        pytest.skip(f"no real compiler cases at {CASES}")
