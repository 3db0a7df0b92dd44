"""The edgetpu_compiler runner and log parser: real logs, and the labelled test double for the binary."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tasks.stages.edgetpu import (
    MAPPED,
    ONE_SUBGRAPH,
    EdgeTPUError,
    OperatorRow,
    compile_model,
    find_compiler,
    format_table,
    parse_compiler_log,
    parse_size,
    preflight,
    read_tflite,
)
from tests.stages.edgetpu.cases import CASE_NAMES, CASES, KNOWN_STATUSES, need_cases


@pytest.mark.parametrize("case", CASE_NAMES or ["absent"])
def test_parser_reads_every_real_log(case: str) -> None:
    need_cases()
    folder = CASES / case
    report = parse_compiler_log((folder / "compiler.log").read_text())
    # README: the per-operator counts in each log match the operators in its model.tflite.
    assert report.total == len(read_tflite(folder / "model.tflite").subgraphs[0].operators)
    assert report.version is not None and report.version in (folder / "source.txt").read_text()
    assert report.input_model is not None and report.input_model.endswith(".tflite")
    assert report.output_model is not None and report.output_model.endswith("_edgetpu.tflite")
    assert report.error is None
    assert {row.status for row in report.rows} <= KNOWN_STATUSES
    assert report.mapped is not None and 0 <= report.mapped <= report.total


def test_parser_reads_console_figures() -> None:
    need_cases()
    # The one case kept as the compiler's full console output (with its -d delegate search).
    report = parse_compiler_log((CASES / "retinanet_padded_multisubgraph" / "compiler.log").read_text())
    assert report.subgraphs == 3  # README: 3 Edge TPU subgraphs
    assert report.tpu_operations == report.mapped  # the printed count agrees with the table's
    assert report.tpu_operations is not None and report.cpu_operations is not None
    assert report.tpu_operations + report.cpu_operations == report.total_operations == report.total
    assert report.on_chip_bytes is not None and report.on_chip_bytes > 0
    assert report.off_chip_bytes == 0
    assert report.input_bytes is not None and report.input_bytes > 0
    assert report.compile_ms is not None
    assert report.error is None, "the search's intermediate 'Compilation failed!' lines are not the outcome"


def test_parse_size_units() -> None:
    assert parse_size("0.00B") == 0
    assert parse_size("80.00KiB") == 80 * 1024
    assert parse_size("1.23MiB") == round(1.23 * 1024 * 1024)
    with pytest.raises(ValueError):
        parse_size("12 parsecs")


def test_parser_quotes_a_failure_on_one_line() -> None:
    # The real compiler's words when the model's operator versions are too new for it.
    console = (
        "Edge TPU Compiler version 16.0.384591198\n"
        "ERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'. An older version of this builtin "
        "might be supported. Are you using an old TFLite binary with a newer model?\n\n"
        "ERROR: Registration failed.\n\nInvalid model: model.tflite\nModel could not be parsed\n"
    )
    report = parse_compiler_log(console)
    assert report.version == "16.0.384591198" and not report.rows
    assert report.error is not None and "\n" not in report.error
    assert "'CONV_2D' version '6'" in report.error and "Model could not be parsed" in report.error


def test_parser_reads_the_memory_lines_of_every_compiler_version() -> None:
    # Compiler 16's console, and compiler 2.0's, which printed "available" where later ones print "remaining".
    new = parse_compiler_log(
        "On-chip memory used for caching model parameters: 1.42MiB\n"
        "On-chip memory remaining for caching model parameters: 6.25KiB\n"
        "Off-chip memory used for streaming uncached model parameters: 150.50KiB\n"
    )
    assert (new.on_chip_bytes, new.on_chip_remaining_bytes, new.off_chip_bytes) == (
        parse_size("1.42MiB"), 6400, 154112
    )  # fmt: skip
    old = parse_compiler_log(
        "Edge TPU Compiler version 2.0.267685300\n"
        "On-chip memory available for caching model parameters: 1.73MiB\n"
        "On-chip memory used for caching model parameters: 10.00KiB\n"
        "Off-chip memory used for streaming uncached model parameters: 0.00B\n"
    )
    assert (old.on_chip_available_bytes, old.on_chip_bytes, old.off_chip_bytes) == (parse_size("1.73MiB"), 10240, 0)
    assert old.on_chip_remaining_bytes is None


def test_the_reader_splits_a_compiled_models_parameter_streams(tmp_path: Path) -> None:
    # TEST DOUBLE of a compiled model (compiled_model.py): executables with parameters of known sizes.
    from tasks.stages.edgetpu import read_compiled
    from tests.stages.edgetpu.compiled_model import write_compiled_model

    path = write_compiled_model(
        tmp_path / "m_edgetpu.tflite",
        [
            [("EXECUTION_ONLY", 11417), ("PARAMETER_CACHING", 13171)],  # runs EXECUTION_ONLY of two
            [("STAND_ALONE", 999), ("PARAMETER_CACHING", 1505), ("EXECUTION_ONLY", 143)],  # STAND_ALONE of three
            [("STAND_ALONE", 2560)],  # alone: nothing cached
        ],
    )
    streams = read_compiled(path)
    assert [(s.on_chip_bytes, s.off_chip_bytes) for s in streams.subgraphs] == [
        (13171, 11417), (1505, 999), (0, 2560)
    ]  # fmt: skip
    assert streams.on_chip_bytes == 13171 + 1505 and streams.off_chip_bytes == 11417 + 999 + 2560
    assert streams.subgraphs[0].min_runtime_version == 14
    assert streams.to_dict()["per_subgraph"][1]["executables"] == ["STAND_ALONE", "PARAMETER_CACHING", "EXECUTION_ONLY"]


def test_the_reader_refuses_a_model_that_was_not_compiled(converted: dict[str, Path]) -> None:
    from tasks.stages.edgetpu import read_compiled

    with pytest.raises(EdgeTPUError, match="not compiled for the Edge TPU"):
        read_compiled(converted["static_int8"])


def test_table_round_trip() -> None:
    rows = [OperatorRow("CONV_2D", 23, MAPPED), OperatorRow("RESIZE_NEAREST_NEIGHBOR", 2, ONE_SUBGRAPH)]
    assert parse_compiler_log(format_table(rows)).rows == rows


def test_find_compiler(fake_compiler: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert find_compiler(str(fake_compiler)) == fake_compiler
    assert find_compiler(None) is None
    assert find_compiler(str(tmp_path / "missing")) is None
    monkeypatch.setenv("PATH", str(fake_compiler.parent))
    assert find_compiler(str(tmp_path / "missing")) == fake_compiler
    assert find_compiler(None) == fake_compiler


def test_compile_model_with_the_test_double(
    converted: dict[str, Path], fake_compiler: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, out = converted["static_int8"], tmp_path / "out"
    argv = tmp_path / "argv.json"
    monkeypatch.setenv("FAKE_EDGETPU_ARGV", str(argv))
    report = compile_model(model, out, fake_compiler, min_runtime_version=13, timeout=60)
    assert json.loads(argv.read_text()) == [
        "--show_operations", "--out_dir", str(out), "--min_runtime_version", "13", str(model)
    ]  # fmt: skip
    assert report.edgetpu_model == out / "static_int8_edgetpu.tflite" and report.edgetpu_model.is_file()
    assert report.log_file == out / "static_int8_edgetpu.log"
    # The parsing only: the double's verdicts are its own, never evidence about the preflight (whose
    # agreement with the compiler is asserted against real logs, test_preflight).
    assert report.total == preflight(model).total and report.mapped == report.total
    assert report.subgraphs == 1 and report.off_chip_bytes == 0
    assert report.on_chip_bytes is not None and report.on_chip_bytes > 0
    assert report.version is not None and re.fullmatch(r"\d+\.\d+\.\d+", report.version)
    assert json.loads(json.dumps(report.to_dict()))["source"] == "compiler"

    compile_model(model, out, fake_compiler, min_runtime_version=None, timeout=60)
    assert "--min_runtime_version" not in json.loads(argv.read_text())


def test_compile_model_partial_mapping_with_the_test_double(
    converted: dict[str, Path], fake_compiler: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EDGETPU_UNSUPPORTED", "LEAKY_RELU")
    report = compile_model(converted["leaky_int8"], tmp_path / "out", fake_compiler, None, timeout=60)
    assert report.tpu_operations is not None and report.cpu_operations is not None
    assert report.tpu_operations + report.cpu_operations == report.total
    assert report.tpu_operations == report.mapped < report.total
    assert report.mapped_fraction == pytest.approx(report.mapped / report.total)


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("not_quantized", "Model not quantized"),
        ("crash", "Internal compiler error"),
        ("dynamic", "dynamic-sized tensors"),
    ],
)
def test_compiler_failures_are_one_line_errors(
    converted: dict[str, Path],
    fake_compiler: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    words: str,
) -> None:
    monkeypatch.setenv("FAKE_EDGETPU_MODE", mode)  # the test double's simulated failure
    with pytest.raises(EdgeTPUError, match=re.escape(words)) as raised:
        compile_model(converted["static_int8"], tmp_path / "out", fake_compiler, None, timeout=60)
    assert "\n" not in str(raised.value) and "static_int8.tflite" in str(raised.value)


def test_compiler_timeout(
    converted: dict[str, Path], fake_compiler: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EDGETPU_MODE", "hang")  # the test double sleeps instead of compiling
    start = time.monotonic()
    with pytest.raises(EdgeTPUError, match=r"did not finish within 1\.5 s"):
        compile_model(converted["static_int8"], tmp_path / "out", fake_compiler, None, timeout=1.5)
    assert time.monotonic() - start < 30


def test_compile_model_refuses_a_missing_model(fake_compiler: Path, tmp_path: Path) -> None:
    with pytest.raises(EdgeTPUError, match="no such"):
        compile_model(tmp_path / "absent.tflite", tmp_path / "out", fake_compiler, None, timeout=60)
