"""edgetpu_compiler's side: finding and running it, and reading what it writes (console and .log)."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tasks.stages.edgetpu.compiled import read_compiled
from tasks.stages.edgetpu.errors import EdgeTPUError
from tasks.stages.edgetpu.rules import MAPPED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorRow:
    """One line of the compiler's operator table."""

    name: str
    count: int
    status: str

    @property
    def mapped(self) -> bool:
        return self.status == MAPPED


@dataclass(frozen=True)
class CompilerReport:
    """What edgetpu_compiler said about a model (console output and/or its .log)."""

    version: str | None = None
    input_model: str | None = None
    output_model: str | None = None
    input_bytes: int | None = None
    output_bytes: int | None = None
    on_chip_bytes: int | None = None
    on_chip_remaining_bytes: int | None = None
    on_chip_available_bytes: int | None = None  # what compiler 2.0 printed instead of "remaining"
    off_chip_bytes: int | None = None
    subgraphs: int | None = None
    total_operations: int | None = None
    tpu_operations: int | None = None
    cpu_operations: int | None = None
    compile_ms: int | None = None
    operation_log: str | None = None
    rows: list[OperatorRow] = field(default_factory=list)
    error: str | None = None
    edgetpu_model: Path | None = None
    log_file: Path | None = None
    streams: dict[str, Any] | None = None  # the compiled model's parameter streams (compiled.py), when readable

    @property
    def total(self) -> int | None:
        """Operators in the model: the printed total, else the table's."""
        if self.total_operations is not None:
            return self.total_operations
        return sum(row.count for row in self.rows) if self.rows else None

    @property
    def mapped(self) -> int | None:
        """Operators on the Edge TPU: the table's count, else the printed one."""
        if self.rows:
            return sum(row.count for row in self.rows if row.mapped)
        return self.tpu_operations

    @property
    def mapped_fraction(self) -> float | None:
        total, mapped = self.total, self.mapped
        return mapped / total if total and mapped is not None else None

    def mapped_by_name(self) -> dict[str, int]:
        """Operator name -> how many of them the compiler mapped."""
        counts: Counter[str] = Counter()
        for row in self.rows:
            counts[row.name] += row.count if row.mapped else 0
        return dict(counts)

    def table(self) -> str:
        """The operator table as the compiler prints it."""
        return format_table(self.rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; `source`, `mapped_fraction`, `subgraphs` and `off_chip_bytes` are what the gate reads."""
        return {
            "source": "compiler",
            "version": self.version,
            "input_model": self.input_model,
            "output_model": self.output_model,
            "edgetpu_model": str(self.edgetpu_model) if self.edgetpu_model else None,
            "mapped_fraction": self.mapped_fraction,
            "mapped": self.mapped,
            "total": self.total,
            "subgraphs": self.subgraphs,
            "on_chip_bytes": self.on_chip_bytes,
            "on_chip_remaining_bytes": self.on_chip_remaining_bytes,
            "off_chip_bytes": self.off_chip_bytes,
            "streams": self.streams,
            "error": self.error,
            "operators": [{"name": r.name, "count": r.count, "status": r.status} for r in self.rows],
        }


# --- reading the compiler's output -------------------------------------------------------------

TABLE_HEADER = re.compile(r"^Operator\s+Count\s+Status\s*$")
TABLE_ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")
SIZE = re.compile(r"^([\d.]+)\s*(B|KiB|MiB|GiB)$")
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
FAILURE = re.compile(
    r"^(ERROR: .*|Invalid model: .*|Model not quantized.*|Model could not be parsed.*|Compilation failed.*"
    r"|Internal compiler error.*|.*[Uu]ncaught exception.*)$"
)
SUCCESS = ("Model compiled successfully", "Compilation succeeded")
FIELDS: dict[str, tuple[str, type]] = {
    "Edge TPU Compiler version": ("version", str),
    "Input model": ("input_model", str),
    "Input": ("input_model", str),
    "Output model": ("output_model", str),
    "Output": ("output_model", str),
    "Input size": ("input_bytes", bytes),
    "Output size": ("output_bytes", bytes),
    "On-chip memory used for caching model parameters": ("on_chip_bytes", bytes),
    "On-chip memory remaining for caching model parameters": ("on_chip_remaining_bytes", bytes),
    "On-chip memory available for caching model parameters": ("on_chip_available_bytes", bytes),
    "Off-chip memory used for streaming uncached model parameters": ("off_chip_bytes", bytes),
    "Number of Edge TPU subgraphs": ("subgraphs", int),
    "Total number of operations": ("total_operations", int),
    "Number of operations that will run on Edge TPU": ("tpu_operations", int),
    "Number of operations that will run on CPU": ("cpu_operations", int),
    "Operation log": ("operation_log", str),
}


def parse_size(text: str) -> int:
    """Bytes from the compiler's sizes: "1.23MiB", "80.00KiB", "0.00B"."""
    match = SIZE.match(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return round(float(match.group(1)) * UNITS[match.group(2)])


def format_size(size: int) -> str:
    """The compiler's way of printing a byte count."""
    if size < 1024:
        return f"{size:.2f}B"
    if size < 1024**2:
        return f"{size / 1024:.2f}KiB"
    return f"{size / 1024**2:.2f}MiB"


def format_table(rows: list[OperatorRow]) -> str:
    """Rows in the compiler's fixed-width "Operator / Count / Status" layout."""
    lines = [f"{'Operator':<31}{'Count':<11}Status", ""]
    lines += [f"{row.name:<31}{row.count:<11}{row.status}" for row in rows]
    return "\n".join(lines) + "\n"


def parse_compiler_log(text: str) -> CompilerReport:
    """Read edgetpu_compiler's console output and/or its .log file (any compiler version seen so far)."""
    values: dict[str, Any] = {}
    rows: list[OperatorRow] = []
    failures: list[str] = []
    in_table = succeeded = False
    for raw in text.splitlines():
        line = raw.strip()
        if TABLE_HEADER.match(line):
            in_table, rows = True, []  # the .log and the console repeat the table: keep the last one
            continue
        if in_table:
            row = TABLE_ROW.match(line)
            if row:
                rows.append(OperatorRow(row.group(1), int(row.group(2)), row.group(3)))
                continue
            if line:
                in_table = False
        if line.startswith(SUCCESS):
            succeeded = True
            timing = re.search(r"in (\d+) ms", line)
            if timing:
                values["compile_ms"] = int(timing.group(1))
            continue
        if FAILURE.match(line):
            failures.append(line.removeprefix("ERROR: ").strip())
            continue
        _parse_field(line, values)
    error = None
    if failures and not succeeded:
        specific = [f for f in dict.fromkeys(failures) if f != "Compilation failed!"]
        error = "; ".join(specific or ["Compilation failed!"])
    return CompilerReport(**values, rows=rows, error=error)


def _parse_field(line: str, values: dict[str, Any]) -> None:
    if line.startswith("Edge TPU Compiler version"):
        words = line.removeprefix("Edge TPU Compiler version").split()
        values["version"] = words[0] if words else None
        return
    key, sep, value = line.partition(":")
    if not sep or key not in FIELDS or not value.strip():
        return
    attribute, kind = FIELDS[key]
    try:
        values[attribute] = parse_size(value) if kind is bytes else kind(value.strip())
    except ValueError:
        log.debug("unparsed compiler line: %s", line)


# --- running the compiler -----------------------------------------------------------------------


def find_compiler(configured: str | None) -> Path | None:
    """The configured edgetpu_compiler if it exists, else the one on PATH, else None."""
    if configured:
        path = Path(configured).expanduser()
        if path.is_file():
            return path
        log.warning("edgetpu_compiler %s not found; looking on PATH", configured)
    found = shutil.which("edgetpu_compiler")
    return Path(found) if found else None


def compile_model(
    model: Path,
    out_dir: Path,
    compiler: Path,
    min_runtime_version: int | None = None,
    timeout: float = 180.0,
    multiple_subgraphs: bool = False,
) -> CompilerReport:
    """Run edgetpu_compiler on a model; the parsed report, with the path of <stem>_edgetpu.tflite."""
    model, out_dir = Path(model), Path(out_dir)
    if not model.is_file():
        raise EdgeTPUError(f"{model}: no such .tflite file")
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [str(compiler), "--show_operations", "--out_dir", str(out_dir)]
    if min_runtime_version is not None:
        command += ["--min_runtime_version", str(min_runtime_version)]
    if multiple_subgraphs:
        command.append("-a")
    command.append(str(model))
    log.info("running %s", " ".join(command))
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise EdgeTPUError(f"{model.name}: edgetpu_compiler did not finish within {timeout:g} s") from None
    except OSError as error:
        raise EdgeTPUError(f"{compiler}: cannot run edgetpu_compiler ({error.strerror or error})") from None

    console = f"{run.stdout}\n{run.stderr}"
    edgetpu_model = out_dir / f"{model.stem}_edgetpu.tflite"
    log_file = out_dir / f"{model.stem}_edgetpu.log"
    report = parse_compiler_log(console)
    if log_file.is_file():
        logged = parse_compiler_log(log_file.read_text(errors="replace"))
        report = replace(report, rows=logged.rows or report.rows, log_file=log_file)
    if run.returncode != 0 or report.error or not edgetpu_model.is_file():
        raise EdgeTPUError(f"{model.name}: edgetpu_compiler failed: {_failure(report, console, run.returncode)}")
    return replace(report, edgetpu_model=edgetpu_model, streams=_streams(edgetpu_model))


def _streams(edgetpu_model: Path) -> dict[str, Any] | None:
    """The compiled model's cached and streamed parameter bytes, or None when it holds no readable stream."""
    try:
        return read_compiled(edgetpu_model).to_dict()
    except EdgeTPUError as error:
        log.info("no parameter streams read from %s: %s", edgetpu_model.name, error)
        return None


def _failure(report: CompilerReport, console: str, returncode: int) -> str:
    """The compiler's own words for a failure, on one line."""
    if report.error:
        return report.error
    lines = [line.strip() for line in console.splitlines() if line.strip()]
    if returncode != 0:
        return f"{lines[-1]} (exit status {returncode})" if lines else f"exit status {returncode}"
    return "it wrote no _edgetpu.tflite"
