"""The edgetpu pipeline stage: the preflight always, and edgetpu_compiler when it is installed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tasks.edgetpu.compiler import compile_model, find_compiler
from tasks.edgetpu.errors import EdgeTPUError
from tasks.edgetpu.preflight import preflight
from tasks.params import EdgeTPUParams

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
