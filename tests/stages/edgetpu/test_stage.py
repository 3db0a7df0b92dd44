"""The edgetpu stage: the preflight always, the compiler when found (its labelled test double here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.layout import Layout
from tasks.params import Params
from tasks.stages.edgetpu import EdgeTPUError


def test_stage_without_compiler_records_the_preflight(
    pipeline_int8: Path, trained: tuple[Layout, Params], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tasks.stages import STAGES
    from tests.conftest import repo_params

    layout, _ = trained
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    summary = STAGES["edgetpu"](layout, repo_params())
    report = json.loads(layout.edgetpu_report.read_text())
    assert summary == {"source": "preflight", "mapped_fraction": 1.0, "subgraphs": 1, "compiled": False}
    assert report["note"] == "not compiled: edgetpu_compiler not found"
    assert report["preflight"]["operators"] and report["compiler"] is None
    assert not list(layout.edgetpu_dir.glob("*_edgetpu.tflite"))
    # The predicted memory lines: the digits CNN fits the cache with room to spare.
    memory = report["memory"]
    assert memory["source"] == "preflight" and memory["compiler"] is None
    assert 0 < memory["on_chip_bytes"] < memory["capacity_bytes"] and memory["off_chip_bytes"] == 0
    assert memory["segments"] == 1 and memory["predicted"]["streams"] == "no"
    assert memory["largest_activation_bytes"] > 0 and "#" in memory["largest_activation_operator"]
    assert report["off_chip_bytes"] == 0 and report["segments"] == 1


def test_stage_requiring_a_missing_compiler_fails_with_a_hint(
    pipeline_int8: Path, trained: tuple[Layout, Params], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tasks.stages import STAGES
    from tests.conftest import repo_params

    layout, _ = trained
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    STAGES["edgetpu"](layout, repo_params())
    before = layout.edgetpu_report.read_bytes()
    with pytest.raises(EdgeTPUError, match=r"edgetpu_compiler not found .* install Coral's edgetpu-compiler"):
        STAGES["edgetpu"](layout, repo_params(["edgetpu.require_compiler=true"]))
    assert layout.edgetpu_report.read_bytes() == before


def test_stage_with_the_compiler_test_double_keeps_its_outputs(
    pipeline_int8: Path, trained: tuple[Layout, Params], fake_compiler: Path
) -> None:
    # TEST DOUBLE: fake_compiler stands in for Coral's edgetpu_compiler, which cannot be installed here.
    from tasks.stages import STAGES
    from tests.conftest import repo_params

    layout, _ = trained
    summary = STAGES["edgetpu"](layout, repo_params([f"edgetpu.compiler={fake_compiler}"]))
    report = json.loads(layout.edgetpu_report.read_text())
    assert summary["compiled"] and summary["source"] == "compiler"
    assert (layout.edgetpu_dir / "model_int8_edgetpu.tflite").is_file()
    assert (layout.edgetpu_dir / "model_int8_edgetpu.log").is_file()
    assert report["compiler"]["edgetpu_model"] == "model_int8_edgetpu.tflite"
    assert report["mapped_fraction"] == report["compiler"]["mapped_fraction"] == 1.0


def test_the_compilers_memory_lines_are_recorded_beside_the_prediction_and_gated(
    pipeline_int8: Path, trained: tuple[Layout, Params], fake_compiler: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TEST DOUBLE: told to print 120.56KiB streamed and to write parameter streams of those sizes.
    from tasks.stages import STAGES
    from tasks.stages.edgetpu import parse_size
    from tasks.stages.gate import evaluate_gate
    from tests.conftest import repo_params

    layout, _ = trained
    monkeypatch.setenv("FAKE_EDGETPU_ON_CHIP", "40000")
    monkeypatch.setenv("FAKE_EDGETPU_OFF_CHIP", "123456")
    monkeypatch.setenv("FAKE_EDGETPU_STREAMS", "1")
    params = repo_params([f"edgetpu.compiler={fake_compiler}"])
    STAGES["edgetpu"](layout, params)
    report = json.loads(layout.edgetpu_report.read_text())
    memory = report["memory"]
    assert memory["source"] == "compiler"
    assert memory["off_chip_bytes"] == parse_size("120.56KiB") == report["off_chip_bytes"]
    assert memory["compiler"]["on_chip_bytes"] == parse_size("39.06KiB")
    assert memory["streams"]["on_chip_bytes"] == 40000 and memory["streams"]["off_chip_bytes"] == 123456
    assert memory["predicted"]["off_chip_bytes"] == 0  # the prediction is kept, beside
    assert memory["segments"] == 2  # the compiler says it streams: at least 2
    result = evaluate_gate({"float_tflite": {"accuracy": 1.0, "size_bytes": 1}, "int8_tflite": {"accuracy": 1.0,
                           "size_bytes": 1}}, params.gate, None, report)  # fmt: skip
    assert "120.56KiB of parameters would stream" in result.summary() and "from the compiler" in result.summary()

    # Without memory lines on the console, the compiled model's streams are the figure.
    monkeypatch.setenv("FAKE_EDGETPU_NO_MEMORY", "1")
    STAGES["edgetpu"](layout, params)
    memory = json.loads(layout.edgetpu_report.read_text())["memory"]
    assert memory["source"] == "parameter streams" and memory["off_chip_bytes"] == 123456
