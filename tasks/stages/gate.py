"""The accuracy gate: a pure function from measured metrics to a verdict listing every check.

Modelled on TFX's Evaluator thresholds, applied to the int8 .tflite that would ship (never the
Keras model): an absolute floor, the drop against this run's float baseline, the change against
the current champion, size and latency budgets, and Edge TPU mapping when measured.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from tasks.errors import EdgecompressError
from tasks.layout import Layout
from tasks.params import GateParams

Verdict = Literal["pass", "fail", "skipped"]

SHIPPED = "int8_tflite"  # the default; metrics.json names the variant actually shipped
BASELINE = "float_tflite"


class GateFailed(EdgecompressError):
    """The candidate failed at least one check; the message lists them."""


@dataclass(frozen=True)
class Check:
    """One threshold: what was observed, the bound, and the verdict."""

    name: str
    observed: float | None
    threshold: float | None
    comparison: Literal[">=", "<="]
    verdict: Verdict
    note: str = ""
    fix: str = ""  # what would make a failing check pass, in the user's terms

    def describe(self) -> str:
        """e.g. 'accuracy 0.9833 >= 0.9999: fail'."""
        if self.verdict == "skipped":
            return f"{self.name}: skipped ({self.note})"
        described = f"{self.name} {_fmt(self.observed)} {self.comparison} {_fmt(self.threshold)}: {self.verdict}"
        return f"{described} ({self.fix})" if self.fix and self.verdict == "fail" else described


@dataclass(frozen=True)
class GateResult:
    """Every check, and whether the candidate passed them all."""

    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if check.verdict == "fail")

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "failed"

    def summary(self) -> str:
        """One line: the verdict and, when it failed, each failed check."""
        if self.passed:
            return f"gate passed ({sum(c.verdict == 'pass' for c in self.checks)} checks)"
        return "gate failed: " + "; ".join(check.describe() for check in self.failed)

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "checks": [asdict(check) for check in self.checks]}

    def markdown(self) -> str:
        """The checks as a Markdown table (for a Prefect artifact)."""
        rows = [
            f"| {c.name} | {_fmt(c.observed)} | {c.comparison} {_fmt(c.threshold)} | **{c.verdict}** | {c.note} |"
            for c in self.checks
        ]
        head = f"## Gate {self.verdict}\n\n| check | observed | threshold | verdict | note |\n|---|---|---|---|---|"
        return "\n".join([head, *rows])


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}"


def _check(name: str, observed: float | None, threshold: float | None, comparison: Literal[">=", "<="]) -> Check:
    if threshold is None:
        return Check(name, observed, None, comparison, "skipped", "no threshold set")
    if observed is None:
        return Check(name, None, threshold, comparison, "skipped", "not measured")
    ok = observed >= threshold if comparison == ">=" else observed <= threshold
    return Check(name, observed, threshold, comparison, "pass" if ok else "fail")


def evaluate_gate(
    variants: dict[str, dict[str, Any]],
    params: GateParams,
    champion_accuracy: float | None,
    edgetpu: dict[str, Any] | None = None,
    shipped: str = SHIPPED,
) -> GateResult:
    """Check the shipped int8 model's metrics against every configured threshold.

    `variants` is metrics.json's `variants`; `champion_accuracy` is the current champion's
    recorded int8 accuracy (None when there is no champion); `edgetpu` holds `mapped_fraction`,
    `subgraphs`, `off_chip_bytes` and `source` ('compiler' or 'preflight') when known.
    """
    candidate, baseline = variants[shipped], variants[BASELINE]
    accuracy = float(candidate["accuracy"])
    drop = float(baseline["accuracy"]) - accuracy
    relative = drop / float(baseline["accuracy"]) if baseline["accuracy"] else None
    checks = [
        _check("accuracy", accuracy, params.min_accuracy, ">="),
        _check("accuracy_drop", drop, params.max_accuracy_drop, "<="),
        _check("relative_accuracy_drop", relative, params.max_relative_drop, "<="),
    ]
    if champion_accuracy is None:
        checks.append(
            Check("regression_vs_champion", None, params.max_regression_vs_champion, "<=", "skipped", "no champion")
        )
    else:
        checks.append(
            _check("regression_vs_champion", champion_accuracy - accuracy, params.max_regression_vs_champion, "<=")
        )
    checks += [
        _check("size_bytes", float(candidate["size_bytes"]), params.max_size_bytes, "<="),
        _check("latency_ms", candidate.get("latency_ms"), params.max_latency_ms, "<="),
    ]
    tpu = edgetpu or {}
    source = f"from the {tpu['source']}" if "source" in tpu else ""
    memory = tpu.get("memory") or {}
    off_chip_source = f"from the {memory['source']}" if memory.get("source") else source
    for check, note in (
        (
            _check("edgetpu_mapped_fraction", tpu.get("mapped_fraction"), params.min_edgetpu_mapped_fraction, ">="),
            source,
        ),
        (_check("edgetpu_subgraphs", tpu.get("subgraphs"), params.max_edgetpu_subgraphs, "<="), source),
        (
            _check("edgetpu_off_chip_bytes", tpu.get("off_chip_bytes"), params.max_edgetpu_off_chip_bytes, "<="),
            off_chip_source,
        ),
    ):
        checks.append(check if check.verdict == "skipped" or not note else _with_note(check, note, tpu))
    return GateResult(tuple(checks))


def _with_note(check: Check, note: str, tpu: dict[str, Any]) -> Check:
    streams = check.name == "edgetpu_off_chip_bytes" and check.verdict == "fail"
    fix = streaming_fix(check.observed, tpu.get("segments"), note) if streams else ""
    return Check(check.name, check.observed, check.threshold, check.comparison, check.verdict, note, fix)


def streaming_fix(off_chip: float | None, segments: int | None, source: str) -> str:
    """The off-chip figure and what brings it down, in one line."""
    from tasks.stages.edgetpu.compiler import format_size

    figure = format_size(int(off_chip or 0))
    split = (
        f"edgetpu_compiler --num_segments {segments}"
        if segments and segments > 1
        else "edgetpu_compiler --num_segments N"
    )
    return (
        f"{figure} of parameters would stream from host memory on every inference, {source}; fix: fewer output "
        "channels (channel pruning, prune.method: channels; or a narrower model: train.alpha for the MobileNets, "
        f"train.conv_filters and train.dense_units for the cnn), or {split} to pipeline it over several Edge TPUs"
    )


def run_gate(layout: Layout, params: GateParams, champion_accuracy: float | None) -> GateResult:
    """Gate the metrics on disk (and the Edge TPU report when there is one); write data/reports/gate.json."""
    from tasks.fsutil import write_text

    metrics = json.loads(layout.metrics.read_text())
    edgetpu = json.loads(layout.edgetpu_report.read_text()) if layout.edgetpu_report.is_file() else None
    result = evaluate_gate(metrics["variants"], params, champion_accuracy, edgetpu, metrics["shipped"])
    write_text(layout.gate_report, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
