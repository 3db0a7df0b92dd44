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
