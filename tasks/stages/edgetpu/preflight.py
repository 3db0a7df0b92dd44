"""The offline preflight: what edgetpu_compiler will map, operator by operator, and why not.

It applies the rules table (rules.py) to each operator, lets the partitioner (partition.py) decide
what the failures take with them, and explains the first fallback in the user's terms. Operators whose
fate rests on an undocumented limit are counted apart (`uncertain`); `mapped` and `mapped_fraction`
count only the operators known to map, so a gate on them never passes on a guess, and
`mapped_fraction_max` says how far it could go if every undocumented limit held off.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.stages.edgetpu.compiler import CompilerReport, OperatorRow, format_table
from tasks.stages.edgetpu.errors import EdgeTPUError
from tasks.stages.edgetpu.graph import Graph, Operator, read_tflite
from tasks.stages.edgetpu.memory import MemoryPrediction, operator_facts, predict_memory
from tasks.stages.edgetpu.partition import DEPENDENT_REASONS, Placement, partition
from tasks.stages.edgetpu.rules import DEFAULT_RUNTIME, QUANTIZED_TYPES, Finding, check_operator, model_error

log = logging.getLogger(__name__)

REASON_MODEL = "the compiler stops on the whole model"


@dataclass(frozen=True)
class OperatorVerdict:
    """One operator: will the compiler map it to the Edge TPU, and if not, why."""

    index: int
    name: str
    edgetpu: bool
    status: str  # in the compiler's words
    reason: str  # mapped | own limitation | depends on a fallback | not documented: may fall back | ...
    detail: str = ""
    because_of: int | None = None  # for a dependent: the operator with its own limitation behind it
    rule: str | None = None  # the rules-table id of its own limitation
    uncertain: bool = False
    subgraph: int | None = None
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "index": self.index,
            "name": self.name,
            "edgetpu": self.edgetpu,
            "status": self.status,
            "reason": self.reason,
            "because_of": self.because_of,
            "rule": self.rule,
            "uncertain": self.uncertain,
            "detail": self.detail,
            "subgraph": self.subgraph,
            "version": self.version,
        }


@dataclass(frozen=True)
class Explanation:
    """The first fallback in the user's terms: the operator, its tensors, the requirement, the fix."""

    operator: str  # "#12 LEAKY_RELU"
    tensors: list[str]  # "in 'x' int8 [1, 8, 8, 4]", "out ..."
    problem: str  # what in the model breaks the requirement
    requirement: str
    fix: str
    evidence: str
    uncertain: bool
    dependents: int  # operators that fall back because of it
    first: str | None = None  # the first CPU operator, when it is a dependent of this one

    def lines(self) -> list[str]:
        """The explanation as the CLI prints it."""
        kind = "not documented: may fall back" if self.uncertain else "falls back"
        lines = []
        if self.first:
            lines.append(f"first on the CPU: {self.first}, because it depends on {self.operator}")
        lines.append(f"{self.operator} {kind}: {self.problem}")
        lines += [f"  {tensor}" for tensor in self.tensors]
        lines.append(f"  requirement: {self.requirement}")
        lines.append(f"  fix: {self.fix}")
        lines.append(f"  evidence: {self.evidence}")
        if self.dependents:
            lines.append(f"  it takes {self.dependents} operator(s) that depend on it off the Edge TPU")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "operator": self.operator,
            "tensors": list(self.tensors),
            "problem": self.problem,
            "requirement": self.requirement,
            "fix": self.fix,
            "evidence": self.evidence,
            "uncertain": self.uncertain,
            "dependents": self.dependents,
            "first": self.first,
        }


@dataclass(frozen=True)
class Preflight:
    """The predicted compiler verdict on a model, without the compiler."""

    model: str
    operators: list[OperatorVerdict]
    subgraphs: int
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    min_runtime_version: int = DEFAULT_RUNTIME
    multiple_subgraphs: bool = False
    explanation: Explanation | None = None
    memory: MemoryPrediction | None = None  # None when the compiler would stop on the whole model

    @property
    def total(self) -> int:
        return len(self.operators)

    @property
    def mapped(self) -> int:
        """Operators known to map (an undocumented limit could still take none of these)."""
        return sum(op.edgetpu for op in self.operators)

    @property
    def uncertain(self) -> int:
        """Operators whose fate rests on a limit the compiler does not document."""
        return sum(op.uncertain for op in self.operators)

    @property
    def mapped_fraction(self) -> float:
        """Share of operators known to map: the lower bound the gate reads."""
        return self.mapped / self.total if self.operators else 0.0

    @property
    def mapped_fraction_max(self) -> float:
        """Share that would map if every undocumented limit held off."""
        return (self.mapped + self.uncertain) / self.total if self.operators else 0.0

    @property
    def first_fallback(self) -> OperatorVerdict | None:
        """The first operator, in execution order, that runs (or may run) on the CPU."""
        return next((op for op in self.operators if not op.edgetpu), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; `source`, `mapped_fraction`, `subgraphs` and `off_chip_bytes` are what the gate reads."""
        fallback = self.first_fallback
        return {
            "source": "preflight",
            "model": self.model,
            "mapped_fraction": self.mapped_fraction,
            "mapped_fraction_max": self.mapped_fraction_max,
            "mapped": self.mapped,
            "uncertain": self.uncertain,
            "total": self.total,
            "subgraphs": self.subgraphs,
            "off_chip_bytes": self.memory.off_chip_bytes if self.memory else None,  # predicted (memory.py)
            "error": self.error,
            "first_fallback": fallback.to_dict() if fallback else None,
            "explanation": self.explanation.to_dict() if self.explanation else None,
            "warnings": list(self.warnings),
            "min_runtime_version": self.min_runtime_version,
            "multiple_subgraphs": self.multiple_subgraphs,
            "operators": [op.to_dict() for op in self.operators],
        }

    def table(self) -> str:
        """The compiler's "Operator / Count / Status" table for this prediction."""
        counts = Counter((op.name, op.status) for op in self.operators)
        return format_table([OperatorRow(name, count, status) for (name, status), count in counts.items()])


def preflight_model(
    model: Any, name: str, *, min_runtime_version: int = DEFAULT_RUNTIME, multiple_subgraphs: bool = False
) -> Preflight:
    """Predict the compiler's verdict on a model read by read_tflite (pure: no file access)."""
    if not model.subgraphs or not model.subgraphs[0].operators:
        return Preflight(
            name, [], 0, error="the model has no operators",
            min_runtime_version=min_runtime_version, multiple_subgraphs=multiple_subgraphs,
        )  # fmt: skip
    g = Graph(model)
    findings = {
        op.index: finding for op in g.operators if (finding := check_operator(g, op, min_runtime_version)) is not None
    }
    placed = partition(g, findings, multiple_subgraphs)
    verdicts = [
        _verdict(op, place, findings.get(op.index)) for op, place in zip(g.operators, placed.placements, strict=True)
    ]
    subgraphs = placed.subgraphs
    problems = []
    fatal = model_error(g)
    if fatal:
        problems.append(fatal[0])
    if not any(v.edgetpu or v.uncertain for v in verdicts):
        problems.append(_nothing_maps(g, verdicts))
    explanation = _explain(g, verdicts, findings)
    memory: MemoryPrediction | None = predict_memory(
        operator_facts(g, [(v.edgetpu, v.subgraph, v.uncertain) for v in verdicts])
    )
    if fatal:
        # The compiler stops before its table; each operator keeps its own verdict as the detail,
        # so fixing the model-wide problem does not hide the next one.
        verdicts = [
            OperatorVerdict(
                v.index, v.name, False, fatal[1], REASON_MODEL, "" if v.edgetpu else f"{v.status}: {v.detail}",
                rule=v.rule, version=v.version,
            )
            for v in verdicts
        ]  # fmt: skip
        subgraphs = 0
        memory = None
    error = "; ".join(problems) if problems else None
    return Preflight(
        name, verdicts, subgraphs, error, _warnings(g), min_runtime_version, multiple_subgraphs, explanation, memory
    )


def preflight(
    path: Path | str, *, min_runtime_version: int = DEFAULT_RUNTIME, multiple_subgraphs: bool = False
) -> Preflight:
    """Predict, without the compiler, which operators of a .tflite the Edge TPU compiler maps."""
    path = Path(path)
    result = preflight_model(
        read_tflite(path), path.name, min_runtime_version=min_runtime_version, multiple_subgraphs=multiple_subgraphs
    )
    log.info(
        "edgetpu preflight %s: %d/%d operators mapped, %d not documented",
        path.name, result.mapped, result.total, result.uncertain,
    )  # fmt: skip
    return result


def _verdict(op: Operator, place: Placement, finding: Finding | None) -> OperatorVerdict:
    detail = ""
    if finding is not None and not place.edgetpu:
        detail = finding.detail
    elif place.because_of is not None:
        where = "may fall back" if place.uncertain else "runs on the CPU"
        detail = f"depends on #{place.because_of}, which {where}"
    return OperatorVerdict(
        index=op.index,
        name=op.name,
        edgetpu=place.edgetpu,
        status=place.status,
        reason=place.reason,
        detail=detail,
        because_of=place.because_of,
        rule=finding.rule.id if finding is not None and not place.edgetpu else None,
        uncertain=place.uncertain,
        subgraph=place.subgraph,
        version=op.version,
    )


def _explain(g: Graph, verdicts: list[OperatorVerdict], findings: dict[int, Finding]) -> Explanation | None:
    """The first fallback, traced to the operator with its own limitation, in the user's terms."""
    first = next((v for v in verdicts if not v.edgetpu), None)
    if first is None:
        return None
    root = first.because_of if first.reason in DEPENDENT_REASONS and first.because_of is not None else first.index
    finding = findings.get(root)
    op = g.operators[root]
    tensors = [f"in  {g.describe(t)}" for t in op.inputs if not g.constant(t)][:4]
    tensors += [f"out {g.describe(t)}" for t in op.outputs][:2]
    dependents = sum(1 for v in verdicts if v.because_of == root)
    if finding is None:  # cut off without a limit of its own (an invalid operator order)
        return Explanation(op.label, tensors, first.detail, "", "", "", first.uncertain, dependents)
    return Explanation(
        operator=op.label,
        tensors=tensors,
        problem=finding.detail,
        requirement=finding.rule.requirement,
        fix=finding.fix,
        evidence=str(finding.rule.evidence[0]),
        uncertain=finding.uncertain,
        dependents=dependents,
        first=g.operators[first.index].label if root != first.index else None,
    )


def _nothing_maps(g: Graph, verdicts: list[OperatorVerdict]) -> str:
    """Why no operator reaches the Edge TPU, in one line."""
    data_types = {g.dtype(i) for i in range(len(g.tensors)) if not g.constant(i)}
    if data_types and not data_types & QUANTIZED_TYPES:
        return (
            "Model not quantized: its operators compute on float tensors, so nothing maps to the Edge TPU "
            "(it needs full-integer int8/uint8 quantization)"
        )
    first = verdicts[0]
    return f"no operator maps to the Edge TPU: {first.name} #{first.index}: {first.status}"


def _warnings(g: Graph) -> list[str]:
    """Requirement issues the compiler tolerates but the user should know about."""
    notes = []
    dynamic = [i for i in sorted(g.inputs) if -1 in (g.signature(i) or [])]
    # Outputs are dynamic because inputs are; name them only when no input explains it.
    dynamic = dynamic or [i for i in sorted(g.outputs) if -1 in (g.signature(i) or [])]
    for index in dynamic:
        signature = g.signature(index)
        if signature is not None:
            kind = "input" if index in g.inputs else "output"
            notes.append(
                f"dynamic size: {kind} '{g.name(index)}' has shape_signature {signature}; Coral requires sizes "
                f"constant at compile time, so the compiler uses the static shape {g.shape(index)} and the Edge "
                "TPU runs only that size (set a fixed batch size of 1 before converting)"
            )
    for op in g.operators:
        weights = op.input_at(1)
        if op.name == "FULLY_CONNECTED" and weights is not None and g.per_channel(weights):
            notes.append(
                f"FULLY_CONNECTED weights '{g.name(weights)}' are quantized per channel (the TFLite converter's "
                "default since TF 2.16); Edge TPU Compiler 16 predates per-channel fully-connected kernels, so "
                "the mapping is unverified: convert with "
                "converter._experimental_disable_per_channel_quantization_for_dense_layers = True"
            )
            break
    for op in g.operators:
        w, h = op.option("dilationWFactor", 1), op.option("dilationHFactor", 1)
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D") and w != h:
            # Coral's table asks for the same dilation in x and y, yet real compilers map such
            # convolutions; the preflight follows the compiler and says so.
            notes.append(
                f"{op.label} dilates x by {w} and y by {h}: Coral's table says \"Must use the same dilation in x "
                'and y dimensions", but the compiler has been seen to map such convolutions; predicted mapped'
            )
            break
    if len(g.model.subgraphs) > 1:
        notes.append(f"the model has {len(g.model.subgraphs)} subgraphs; only the main one is checked")
    return notes


# --- how far a prediction is from a real compiler ------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """How far a preflight's per-operator prediction is from what a compiler log counts."""

    score: float
    mismatched: int
    total: int
    by_operator: dict[str, tuple[int, int]]  # name -> (predicted on the TPU, logged on the TPU)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "score": self.score,
            "mismatched": self.mismatched,
            "total": self.total,
            "by_operator": {name: list(pair) for name, pair in self.by_operator.items()},
        }


def agreement(prediction: Preflight, report: CompilerReport) -> Agreement:
    """Per operator name, predicted vs logged Edge TPU counts; score = 1 - sum(|difference|) / operators.

    An operator whose fate is not documented counts as predicted off the Edge TPU, as in mapped_fraction.
    """
    if not report.rows:
        raise EdgeTPUError("the compiler report has no per-operator table to compare with")
    predicted: Counter[str] = Counter()
    for op in prediction.operators:
        predicted[op.name] += op.edgetpu
    logged = report.mapped_by_name()
    names = list(dict.fromkeys([op.name for op in prediction.operators] + list(logged)))
    by_operator = {name: (predicted.get(name, 0), logged.get(name, 0)) for name in names}
    mismatched = sum(abs(p - q) for p, q in by_operator.values())
    total = max(prediction.total, report.total or 0)
    return Agreement(1.0 - mismatched / total if total else 1.0, mismatched, total, by_operator)
