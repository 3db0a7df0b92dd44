"""The gate: a pure function from metrics to a verdict that lists every check."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.params import GateParams
from tasks.stages.gate import evaluate_gate
from tests.conftest import repo_params


def variants(int8: float = 0.975, float_: float = 0.98, size: int = 150_000, latency: float = 0.2) -> dict[str, Any]:
    return {
        "float_tflite": {"accuracy": float_, "size_bytes": 500_000, "gzip_bytes": 450_000},
        "int8_tflite": {"accuracy": int8, "size_bytes": size, "gzip_bytes": 50_000, "latency_ms": latency},
        "pruned": {"accuracy": int8, "sparsity": 0.8},
    }


def gate_params(**changes: Any) -> GateParams:
    return repo_params([f"gate.{key}={'null' if value is None else value}" for key, value in changes.items()]).gate


def verdicts(result: Any) -> dict[str, str]:
    return {check.name: check.verdict for check in result.checks}


def test_a_good_candidate_passes_and_every_check_is_listed() -> None:
    result = evaluate_gate(variants(), gate_params(), champion_accuracy=None)
    assert result.passed
    names = [check.name for check in result.checks]
    assert names == [
        "accuracy",
        "accuracy_drop",
        "relative_accuracy_drop",
        "regression_vs_champion",
        "size_bytes",
        "latency_ms",
        "edgetpu_mapped_fraction",
        "edgetpu_subgraphs",
        "edgetpu_off_chip_bytes",
    ]
    assert verdicts(result)["regression_vs_champion"] == "skipped"
    assert "no champion" in result.to_dict()["checks"][3]["note"]


def test_unreachable_floor_fails_and_names_the_check() -> None:
    result = evaluate_gate(variants(int8=0.975), gate_params(min_accuracy=0.9999), None)
    assert not result.passed
    assert [check.name for check in result.failed] == ["accuracy"]
    assert "accuracy 0.975 >= 0.9999: fail" in result.summary()


def test_drop_against_the_float_baseline() -> None:
    result = evaluate_gate(variants(int8=0.95, float_=0.98), gate_params(max_accuracy_drop=0.01), None)
    assert verdicts(result)["accuracy_drop"] == "fail"
    relative = evaluate_gate(variants(int8=0.95, float_=0.98), gate_params(max_relative_drop=0.05), None)
    assert verdicts(relative)["relative_accuracy_drop"] == "pass"


@pytest.mark.parametrize(("champion", "expected"), [(0.99, "fail"), (0.978, "pass"), (0.90, "pass")])
def test_regression_against_the_champion(champion: float, expected: str) -> None:
    result = evaluate_gate(variants(int8=0.975), gate_params(max_regression_vs_champion=0.005), champion)
    assert verdicts(result)["regression_vs_champion"] == expected
    assert result.passed == (expected == "pass")


def test_size_and_latency_budgets() -> None:
    result = evaluate_gate(
        variants(size=200_000, latency=3.0), gate_params(max_size_bytes=100_000, max_latency_ms=1), None
    )
    assert verdicts(result)["size_bytes"] == "fail"
    assert verdicts(result)["latency_ms"] == "fail"


def test_edgetpu_checks_use_the_measured_source() -> None:
    params = gate_params(min_edgetpu_mapped_fraction=1.0, max_edgetpu_subgraphs=1)
    edgetpu = {"mapped_fraction": 0.75, "subgraphs": 1, "source": "preflight"}
    result = evaluate_gate(variants(), params, None, edgetpu)
    checks = {check.name: check for check in result.checks}
    assert checks["edgetpu_mapped_fraction"].verdict == "fail"
    assert checks["edgetpu_subgraphs"].verdict == "pass"
    assert "preflight" in checks["edgetpu_mapped_fraction"].note
    assert checks["edgetpu_off_chip_bytes"].verdict == "skipped"
    # required but not measured (no Edge TPU report): skipped, and said so
    unmeasured = evaluate_gate(variants(), params, None, None)
    assert {c.name: c.note for c in unmeasured.checks}["edgetpu_subgraphs"] == "not measured"


def test_markdown_lists_every_check() -> None:
    result = evaluate_gate(variants(), gate_params(min_accuracy=0.99), None)
    table = result.markdown()
    assert table.startswith("## Gate failed")
    assert all(check.name in table for check in result.checks)


def test_streaming_parameters_fail_with_the_figure_and_the_fixes_in_one_line() -> None:
    edgetpu = {
        "mapped_fraction": 1.0,
        "subgraphs": 1,
        "source": "compiler",
        "off_chip_bytes": 2_747_392,
        "segments": 2,
        "memory": {"source": "compiler"},
    }
    result = evaluate_gate(variants(), gate_params(), None, edgetpu)  # the default: max_edgetpu_off_chip_bytes 0
    assert [check.name for check in result.failed] == ["edgetpu_off_chip_bytes"]
    line = result.summary()
    assert "\n" not in line and line.startswith("gate failed: edgetpu_off_chip_bytes")
    for part in ("2.62MiB of parameters", "from the compiler", "prune.method: channels",
                 "train.alpha for the MobileNets", "train.conv_filters and train.dense_units for the cnn",
                 "edgetpu_compiler --num_segments 2"):  # fmt: skip
        assert part in line, part
    fits = evaluate_gate(variants(), gate_params(), None, {**edgetpu, "off_chip_bytes": 0})
    assert fits.passed and not [c.fix for c in fits.checks if c.fix]
    accepted = evaluate_gate(variants(), gate_params(max_edgetpu_off_chip_bytes=None), None, edgetpu)
    assert verdicts(accepted)["edgetpu_off_chip_bytes"] == "skipped"
