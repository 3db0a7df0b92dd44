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
    compiler when it ran, otherwise from the preflight, with `source` saying which; `memory` holds the
    predicted memory lines beside the compiler's.
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
        memory = memory_report(predicted, None)
        return {**report, **_gate_view(predicted.to_dict(), memory), "memory": memory, "compiled": False, "note": note}
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
    memory = memory_report(predicted, compiled)
    return {**report, "compiler": view, **_gate_view(view, memory), "memory": memory, "compiled": True, "note": note}


def _gate_view(source: dict[str, Any], memory: dict[str, Any]) -> dict[str, Any]:
    view = {key: source.get(key) for key in ("source", "mapped_fraction", "subgraphs", "error")}
    return {**view, "off_chip_bytes": memory["off_chip_bytes"], "segments": memory["segments"]}


MEMORY_KEYS = ("on_chip_bytes", "on_chip_remaining_bytes", "off_chip_bytes")


def memory_report(predicted: Preflight, compiled: CompilerReport | None) -> dict[str, Any]:
    """The top-level "memory" object: the compiler's figures when it printed them, else the prediction's.

    The prediction (memory.py) is always kept whole under `predicted`; the compiler's printed lines
    under `compiler`, and, when the compiled model's parameter streams could be read, those under
    `streams` (stream bytes, a different accounting: compiled.py).
    """
    prediction = predicted.memory.to_dict() if predicted.memory else None
    printed = None
    if compiled is not None and compiled.on_chip_bytes is not None and compiled.off_chip_bytes is not None:
        printed = {key: getattr(compiled, key) for key in MEMORY_KEYS}
    streams = compiled.streams if compiled is not None else None
    if printed is not None:
        source, figures = "compiler", printed
    elif streams is not None:
        source, figures = "parameter streams", {"on_chip_bytes": streams["on_chip_bytes"],
                                                 "off_chip_bytes": streams["off_chip_bytes"]}  # fmt: skip
    else:
        source, figures = "preflight", {key: (prediction or {}).get(key) for key in MEMORY_KEYS}
    base = prediction or {}
    return {
        "source": source,
        "on_chip_bytes": figures.get("on_chip_bytes"),
        "on_chip_remaining_bytes": figures.get("on_chip_remaining_bytes"),
        "off_chip_bytes": figures.get("off_chip_bytes"),
        "capacity_bytes": base.get("capacity_bytes"),
        "capacity_range_bytes": base.get("capacity_range_bytes"),
        "largest_activation_bytes": base.get("largest_activation_bytes"),
        "largest_activation_operator": base.get("largest_activation_operator"),
        "segments": _segments(figures.get("off_chip_bytes"), base),
        "per_subgraph": base.get("per_subgraph", []),
        "predicted": prediction,
        "compiler": printed,
        "streams": streams,
    }


def _segments(off_chip: int | None, prediction: dict[str, Any]) -> int | None:
    """The suggested --num_segments: the prediction's, at least 2 once the compiler says the model streams."""
    suggested = prediction.get("segments")
    if off_chip and suggested == 1:
        return 2
    return suggested


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


def check_report(predicted: Preflight, compiled: CompilerReport | None) -> dict[str, Any]:
    """`check-edgetpu --json`: the preflight, the compiler's report when it ran, and the top-level "memory"."""
    result = predicted.to_dict()
    result["memory"] = memory_report(predicted, compiled)
    if compiled is not None:
        result["compiler"] = compiled.to_dict()
    return result


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
