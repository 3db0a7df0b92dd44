"""The edgetpu pipeline stage: the preflight always, and edgetpu_compiler when it is installed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tasks.fsutil import replace_dir, staging_dir, write_json
from tasks.layout import Layout
from tasks.params import EdgeTPUParams, Params
from tasks.stages.edgetpu.compiler import CompilerReport, compile_model, find_compiler
from tasks.stages.edgetpu.errors import EdgeTPUError
from tasks.stages.edgetpu.preflight import Preflight, preflight

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install Coral's edgetpu-compiler package (Debian/Ubuntu x86-64, from Coral's apt repository) "
    "or set edgetpu.require_compiler: false to go on with the offline preflight"
)


def check_and_compile(model: Path, out_dir: Path, params: EdgeTPUParams) -> dict[str, Any]:
    """The edgetpu stage: preflight always; compile into out_dir when edgetpu_compiler is available.

    Returns the report the gate reads: `mapped_fraction`, `subgraphs` and `off_chip_bytes` from the
    compiler when it ran, otherwise from the preflight, with `source` saying which.
    """
    predicted = preflight(
        model, min_runtime_version=params.min_runtime_version, multiple_subgraphs=params.multiple_subgraphs
    )
    compiler = find_compiler(params.compiler)
    report: dict[str, Any] = {"preflight": predicted.to_dict(), "compiler": None}
    if compiler is None:
        if params.require_compiler:
            raise EdgeTPUError(f"edgetpu_compiler not found (edgetpu.compiler: {params.compiler}); {INSTALL_HINT}")
        note = "not compiled: edgetpu_compiler not found"
        log.info(
            "%s; preflight predicts %d/%d operators on the Edge TPU (%d more not documented)",
            note, predicted.mapped, predicted.total, predicted.uncertain,
        )  # fmt: skip
        (out_dir / "NOT_COMPILED.txt").write_text(note + "\n")
        return {**report, **_gate_view(predicted.to_dict()), "compiled": False, "note": note}
    compiled = compile_model(
        model, out_dir, compiler, params.min_runtime_version, params.timeout_s, params.multiple_subgraphs
    )
    # Name the files, not where they were written: out_dir is swapped into place afterwards.
    view = {
        key: Path(value).name if key in ("edgetpu_model", "log_file") and value else value
        for key, value in compiled.to_dict().items()
    }
    note = f"compiled by edgetpu_compiler {compiled.version}"
    log.info("%s: %s/%s operators on the Edge TPU", note, compiled.mapped, compiled.total)
    return {**report, "compiler": view, **_gate_view(view), "compiled": True, "note": note}


def _gate_view(source: dict[str, Any]) -> dict[str, Any]:
    return {key: source.get(key) for key in ("source", "mapped_fraction", "subgraphs", "off_chip_bytes", "error")}


def run(layout: Layout, params: Params) -> dict[str, Any]:
    """The edgetpu stage: data/tflite/edgetpu/ (compiled model and log, when the compiler ran), edgetpu.json."""
    with staging_dir(layout.edgetpu_dir) as out:
        report = check_and_compile(layout.quantized_tflite(params.quantize.ptq_mode), out, params.edgetpu)
        replace_dir(out, layout.edgetpu_dir)
    write_json(layout.edgetpu_report, report)
    return {key: report[key] for key in ("source", "mapped_fraction", "subgraphs", "compiled")}


def is_stale(layout: Layout, params: Params) -> str:
    """The compiler is part of the machine, not of the project: notice when it has appeared."""
    if not layout.edgetpu_report.is_file() or json.loads(layout.edgetpu_report.read_text()).get("compiled"):
        return ""
    return "edgetpu_compiler is now available" if find_compiler(params.edgetpu.compiler) else ""


def check_model(
    model: Path, min_runtime_version: int, multiple_subgraphs: bool, compiler: str | None, timeout_s: float = 180.0
) -> tuple[Preflight, CompilerReport | None, bool]:
    """`check-edgetpu`: the preflight of any .tflite, and the compiler's own report when it is installed.

    Returns (prediction, compiler report or None, whether a compiler was found). A model the
    compiler would refuse whole (the preflight's error) is not handed to it.
    """
    import tempfile

    predicted = preflight(model, min_runtime_version=min_runtime_version, multiple_subgraphs=multiple_subgraphs)
    found = find_compiler(compiler)
    compiled = None
    if found is not None and predicted.error is None:
        with tempfile.TemporaryDirectory() as out:
            compiled = compile_model(model, Path(out), found, min_runtime_version, timeout_s, multiple_subgraphs)
    return predicted, compiled, found is not None
