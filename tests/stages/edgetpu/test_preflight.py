"""The Edge TPU preflight: measured against real compiler verdicts, and on models converted here."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tasks.stages.edgetpu import (
    DEFAULT_RUNTIME,
    MAPPED,
    ONE_SUBGRAPH,
    REASON_DEPENDS,
    REASON_DEPENDS_UNDOCUMENTED,
    REASON_MAPPED,
    REASON_OWN,
    REASON_UNDOCUMENTED,
    UNSPECIFIED,
    UNSUPPORTED_OP,
    UNSUPPORTED_TYPE,
    CompilerReport,
    EdgeTPUError,
    OperatorRow,
    agreement,
    parse_compiler_log,
    preflight,
    read_tflite,
)
from tests.stages.edgetpu.cases import (
    CASE_FLOOR,
    CASE_NAMES,
    CASES,
    MIN_RUNTIME,
    MULTIPLE_SUBGRAPHS,
    PIPELINE_OPERATORS,
    POOLED_FLOOR,
    need_cases,
)

# --- real compiler verdicts ---------------------------------------------------------------------


def test_preflight_agrees_with_the_real_compiler(capsys: pytest.CaptureFixture[str]) -> None:
    need_cases()
    mismatched = total = 0
    lines = []
    for case in CASE_NAMES:
        folder = CASES / case
        prediction = preflight(
            folder / "model.tflite",
            min_runtime_version=MIN_RUNTIME.get(case, DEFAULT_RUNTIME),
            multiple_subgraphs=case in MULTIPLE_SUBGRAPHS,
        )
        report = parse_compiler_log((folder / "compiler.log").read_text())
        result = agreement(prediction, report)
        mismatched, total = mismatched + result.mismatched, total + result.total
        uncertain = f", {prediction.uncertain} not documented" if prediction.uncertain else ""
        lines.append(
            f"{case:<34} {result.score:6.3f}  ({result.mismatched} of {result.total} operators differ{uncertain})"
        )
        assert result.score >= CASE_FLOOR.get(case, 1.0), f"{case}: {result.to_dict()}"
        if result.score == 1.0:
            # Where the counts agree, so does the wording, status by status.
            predicted = Counter((op.name, op.status) for op in prediction.operators)
            logged = Counter({(row.name, row.status): row.count for row in report.rows})
            assert predicted == logged, case
    overall = 1 - mismatched / total
    with capsys.disabled():  # the per-case figures are the point of this test: shown with or without -s
        print("\nEdge TPU preflight vs edgetpu_compiler, by operator:\n" + "\n".join(lines))
        print(f"{'pooled':<34} {overall:6.3f}  ({mismatched} of {total} operators differ)")
    assert overall >= POOLED_FLOOR


def test_several_subgraphs_reproduce_the_retinanet_log() -> None:
    need_cases()
    # retinanet was compiled with -a; its delegate search dropped the FPN ADD fed by a PAD that pads
    # the height on one side (`one-sided-pad-operand`, not documented). Given that fallback, the
    # partitioner must reproduce the rest of the log.
    from tasks.stages.edgetpu import Graph
    from tasks.stages.edgetpu.partition import partition
    from tasks.stages.edgetpu.rules import RULES_BY_ID, Finding

    folder = CASES / "retinanet_padded_multisubgraph"
    g = Graph(read_tflite(folder / "model.tflite"))
    [add] = [
        op.index for op in g.operators
        if op.name == "ADD" and any(g.operators[p].name == "PAD" for p in g.producers_of(op))
    ]  # fmt: skip
    prediction = preflight(folder / "model.tflite", min_runtime_version=13, multiple_subgraphs=True)
    assert [op.index for op in prediction.operators if op.rule] == [add]
    assert prediction.operators[add].rule == "one-sided-pad-operand" and prediction.operators[add].uncertain
    placed = partition(
        g, {add: Finding(RULES_BY_ID["one-sided-pad-operand"], "as logged", "")}, multiple_subgraphs=True
    )
    report = parse_compiler_log((folder / "compiler.log").read_text())
    off = Counter(g.operators[i].name for i, p in enumerate(placed.placements) if not p.edgetpu)
    logged_off = Counter({row.name: row.count for row in report.rows if not row.mapped})
    assert off == logged_off and placed.subgraphs == report.subgraphs == 3
    sizes = Counter(p.subgraph for p in placed.placements if p.edgetpu)
    assert sizes[0] == 119  # "Try to compile segment with 119 ops" ... "Model compiled successfully"
    # The ADD's own status is the compiler's for it ("More than one subgraph"); the rest depend on it.
    dependents = [p for i, p in enumerate(placed.placements) if not p.edgetpu and i != add]
    assert dependents and all(p.status == ONE_SUBGRAPH and p.because_of == add for p in dependents)


def test_real_float_model_gets_a_not_quantized_verdict() -> None:
    need_cases()
    # The real compiler accepted this float model and mapped nothing, every operator "unsupported data type".
    prediction = preflight(CASES / "cifar10_float_unsupported_dtype" / "model.tflite")
    assert prediction.error is not None and "not quantized" in prediction.error.lower()
    assert prediction.mapped == 0 and prediction.subgraphs == 0 and prediction.mapped_fraction == 0.0
    assert {(op.status, op.reason) for op in prediction.operators} == {(UNSUPPORTED_TYPE, REASON_OWN)}


def test_float_io_boundary_runs_on_cpu_without_splitting() -> None:
    need_cases()
    # kapibara_model: float input QUANTIZE and output DEQUANTIZE on the CPU, all between them mapped.
    prediction = preflight(CASES / "kapibara_model" / "model.tflite")
    first, last = prediction.operators[0], prediction.operators[-1]
    assert (first.name, first.edgetpu, first.status, first.reason) == ("QUANTIZE", False, UNSPECIFIED, REASON_OWN)
    assert (last.name, last.edgetpu, last.status, last.reason) == ("DEQUANTIZE", False, UNSUPPORTED_TYPE, REASON_OWN)
    assert all(op.edgetpu for op in prediction.operators[1:-1])
    assert prediction.subgraphs == 1 and prediction.first_fallback == first


def test_undocumented_limits_are_counted_apart() -> None:
    need_cases()
    # yolov8n's detection head: the compiler refused its large tensors with "unspecified limitation",
    # a limit Coral does not document; the preflight says "may fall back" and counts them apart.
    prediction = preflight(CASES / "yolov8n_full_int_quant" / "model.tflite")
    report = parse_compiler_log((CASES / "yolov8n_full_int_quant" / "compiler.log").read_text())
    uncertain = [op for op in prediction.operators if op.uncertain]
    assert prediction.uncertain == len(uncertain) == report.total - (report.mapped or 0)
    assert all(not op.edgetpu for op in uncertain)
    assert {op.reason for op in uncertain} == {REASON_UNDOCUMENTED, REASON_DEPENDS_UNDOCUMENTED}
    assert prediction.mapped_fraction == pytest.approx(prediction.mapped / prediction.total)
    assert prediction.mapped_fraction_max == 1.0
    assert prediction.explanation is not None and prediction.explanation.uncertain
    assert "not documented: may fall back" in "\n".join(prediction.explanation.lines())


def test_dynamic_batch_is_flagged_but_compiled_like_the_real_compiler_did() -> None:
    need_cases()
    # franco_mlp_fc's input has shape_signature [-1, 28, 28]; the real compiler still mapped every operator.
    prediction = preflight(CASES / "franco_mlp_fc" / "model.tflite")
    report = parse_compiler_log((CASES / "franco_mlp_fc" / "compiler.log").read_text())
    assert any("dynamic size" in w and "-1" in w for w in prediction.warnings)
    assert prediction.mapped == prediction.total == report.mapped


# --- models converted here ----------------------------------------------------------------------


def test_pipeline_int8_model_maps_entirely(pipeline_int8: Path) -> None:
    prediction = preflight(pipeline_int8)
    assert {op.name for op in prediction.operators} <= PIPELINE_OPERATORS
    assert prediction.mapped_fraction == 1.0
    assert prediction.subgraphs == 1
    assert prediction.error is None and prediction.first_fallback is None
    for warning in prediction.warnings:
        print("pipeline model:", warning)
        assert "\n" not in warning
    report = json.loads(json.dumps(prediction.to_dict()))
    assert {"mapped_fraction", "operators", "error", "first_fallback", "subgraphs", "source"} <= set(report)
    assert [op["index"] for op in report["operators"]] == list(range(prediction.total))
    assert all(set(op) >= {"index", "name", "edgetpu", "status", "reason", "because_of"} for op in report["operators"])


def test_preflight_table_reads_back_as_a_compiler_table(pipeline_int8: Path) -> None:
    prediction = preflight(pipeline_int8)
    rows = parse_compiler_log(prediction.table()).rows
    assert Counter({row.name: row.count for row in rows}) == Counter(op.name for op in prediction.operators)
    assert {row.status for row in rows} == {MAPPED}


def test_unsupported_operator_sends_the_rest_to_the_cpu(converted: dict[str, Path]) -> None:
    prediction = preflight(converted["leaky_int8"])
    fallback = prediction.first_fallback
    assert fallback is not None and (fallback.name, fallback.status) == ("LEAKY_RELU", UNSUPPORTED_OP)
    before, after = prediction.operators[: fallback.index], prediction.operators[fallback.index + 1 :]
    assert before and all(op.edgetpu for op in before)
    # A chain: everything after it reads its output, directly or not.
    assert after and all(not op.edgetpu and op.status == ONE_SUBGRAPH for op in after)
    assert all(op.reason == REASON_DEPENDS and op.because_of == fallback.index for op in after)
    assert prediction.mapped_fraction == pytest.approx(len(before) / prediction.total)
    assert prediction.subgraphs == 1 and prediction.error is None
    # With -a the supported operators after it form a second Edge TPU subgraph.
    several = preflight(converted["leaky_int8"], multiple_subgraphs=True)
    assert several.subgraphs == 2 and several.mapped == prediction.total - 1


@pytest.mark.parametrize("form", ["float", "dynamic_range"])
def test_float_operators_are_not_quantized(converted: dict[str, Path], form: str) -> None:
    prediction = preflight(converted[form])
    assert prediction.error is not None and "Model not quantized" in prediction.error
    assert "\n" not in prediction.error
    assert prediction.mapped == 0 and prediction.subgraphs == 0
    assert prediction.first_fallback == prediction.operators[0]
    # Each float operator says so, in the status itself or (when a model-wide problem such as an
    # operator version the compiler cannot read stops it first) in the detail.
    for op in prediction.operators:
        assert UNSUPPORTED_TYPE in (op.status, op.detail.partition(":")[0]), op


def test_dynamic_batch_dimension_is_flagged(converted: dict[str, Path]) -> None:
    static, dynamic = preflight(converted["static_int8"]), preflight(converted["dynamic_batch_int8"])
    assert not any("dynamic size" in w for w in static.warnings)
    flagged = [w for w in dynamic.warnings if "dynamic size" in w]
    assert flagged and all("shape_signature [-1" in w for w in flagged)
    assert any(w.startswith("dynamic size: input") for w in flagged)
    assert dynamic.to_dict()["warnings"] == dynamic.warnings
    # The compiler compiles the static shape, as it did for the real cases with a -1 batch.
    assert [(op.name, op.edgetpu) for op in dynamic.operators] == [(op.name, op.edgetpu) for op in static.operators]


def test_per_channel_dense_weights_are_flagged(converted: dict[str, Path]) -> None:
    # TF >= 2.16 quantizes Dense weights per channel by default; the warning's suggested fix must clear it.
    flagged = [w for w in preflight(converted["static_int8"]).warnings if "per channel" in w]
    assert flagged and "FULLY_CONNECTED" in flagged[0]
    fixed = preflight(converted["per_tensor_dense_int8"])
    assert not [w for w in fixed.warnings if "per channel" in w]
    assert fixed.mapped_fraction == 1.0


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "truncated_head", "truncated_half", "identifier_only"])
def test_bad_input_is_one_line_error(converted: dict[str, Path], tmp_path: Path, kind: str) -> None:
    good = converted["static_int8"].read_bytes()
    path = tmp_path / f"{kind}.tflite"
    contents = {
        "empty": b"",
        "text": b"this is not a model\n",
        "truncated_head": good[:64],
        "truncated_half": good[: len(good) // 2],
        "identifier_only": good[:8],
    }
    if kind != "missing":
        path.write_bytes(contents[kind])
    with pytest.raises(EdgeTPUError) as raised:
        preflight(path)
    message = str(raised.value)
    assert "\n" not in message and path.name in message


def test_every_truncation_is_caught(converted: dict[str, Path], tmp_path: Path) -> None:
    good = converted["leaky_int8"].read_bytes()
    path = tmp_path / "cut.tflite"
    for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
        path.write_bytes(good[: int(len(good) * fraction)])
        with pytest.raises(EdgeTPUError, match=r"cut\.tflite"):
            preflight(path)


# --- the compiler's output ----------------------------------------------------------------------


def test_agreement_counts_the_differences(converted: dict[str, Path]) -> None:
    prediction = preflight(converted["leaky_int8"])
    everything_mapped = CompilerReport(
        rows=[
            OperatorRow(name, count, MAPPED) for name, count in Counter(op.name for op in prediction.operators).items()
        ]
    )
    result = agreement(prediction, everything_mapped)
    assert result.mismatched == prediction.total - prediction.mapped
    assert result.score == pytest.approx(prediction.mapped_fraction)
    with pytest.raises(EdgeTPUError):
        agreement(prediction, CompilerReport())


# --- the command line ---------------------------------------------------------------------------


def cli(*args: str) -> Any:
    import subprocess

    return subprocess.run(
        [str(Path(sys.executable).parent / "edgecompress"), "check-edgetpu", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_json_lists_operators_in_model_order(pipeline_int8: Path) -> None:
    result = cli(str(pipeline_int8), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mapped_fraction"] == 1.0
    assert [op["index"] for op in report["operators"]] == list(range(len(report["operators"])))
    assert {op["name"] for op in report["operators"]} <= PIPELINE_OPERATORS
    assert all(op["edgetpu"] is True and op["status"] == MAPPED for op in report["operators"])
    assert all(op["reason"] == REASON_MAPPED and op["because_of"] is None for op in report["operators"])
    # The top-level memory object: the predicted memory lines, the capacity, the largest activation.
    memory = report["memory"]
    assert memory["source"] == "preflight" and memory["compiler"] is None
    assert 0 < memory["on_chip_bytes"] < memory["capacity_bytes"] and memory["off_chip_bytes"] == 0
    assert memory["segments"] == 1 and memory["largest_activation_bytes"] > 0
    assert memory["largest_activation_operator"].split()[1] in PIPELINE_OPERATORS
    assert memory["predicted"]["layers"] and report["off_chip_bytes"] == 0


def test_cli_float_model_is_a_verdict_not_a_failure(converted: dict[str, Path]) -> None:
    result = cli(str(converted["float"]), "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert "not quantized" in report["error"].lower()
    assert report["mapped_fraction"] == 0.0


def test_cli_explains_the_first_fallback(converted: dict[str, Path]) -> None:
    result = cli(str(converted["leaky_int8"]))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "LEAKY_RELU falls back: LEAKY_RELU is not in Coral's supported-operations table" in text
    assert "requirement: only the operators in Coral's supported-operations table map" in text
    assert "fix: replace LEAKY_RELU" in text and "evidence: " in text
    assert "in  '" in text and "int8 [1, 8, 8, 4]" in text


def test_cli_table_and_bad_file(pipeline_int8: Path, tmp_path: Path) -> None:
    table = cli(str(pipeline_int8))
    assert table.returncode == 0
    assert "Operator" in table.stdout and "Mapped to Edge TPU" in table.stdout
    assert "On-chip memory used for caching model parameters: " in table.stdout
    assert "Off-chip memory used for streaming uncached model parameters: 0.00B  (predicted)" in table.stdout
    junk = tmp_path / "junk.tflite"
    junk.write_text("not a model")
    bad = cli(str(junk))
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith(f"error: {junk}")
    assert "Traceback" not in bad.stderr
