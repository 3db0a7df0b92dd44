"""What edgetpu_compiler put inside a compiled *_edgetpu.tflite: its parameter streams, cached and streamed.

Each `edgetpu-custom-op` (one Edge TPU subgraph) carries, in its custom options, a FlexBuffer map
whose key "4" is a serialized Package flatbuffer (file identifier DWN1); the package's
`serialized_multi_executable` (field 1) is a MultiExecutable whose `serialized_executables` (field 0)
are the Executables. Each Executable has `parameters:[ubyte]` (field 6) and a `type` (field 13):
STAND_ALONE (0) "Everything needed to run a successful inference is included", PARAMETER_CACHING (1)
"Only loads parameters into TPU memory", EXECUTION_ONLY (2) "assumes the parameters are already
cached on TPU". The field numbers are the declaration order in google-coral/libedgetpu
executable/executable.fbs (read at e35aed18fea2e2d25d98352e5a5bd357c170bd4d); with two executables
the runtime runs the EXECUTION_ONLY one, with three the STAND_ALONE one
(driver/package_registry.cc). So the cached bytes are the PARAMETER_CACHING executables' parameters
and the streamed bytes the parameters of the executable that runs.

These are the bytes of the streams, which hold 4 more bytes per row for a bias than the compiler's
printed figures count and only 16-row groups for small layers (memory.py, U1): the instrument the
memory model's layout constants were measured with, and a compiled model's own on-chip/off-chip
split when the compiler's console output is not at hand.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.stages.edgetpu.errors import EdgeTPUError
from tasks.stages.edgetpu.graph import read_tflite

CUSTOM_CODE = "edgetpu-custom-op"
EXECUTABLE_TYPES = {0: "STAND_ALONE", 1: "PARAMETER_CACHING", 2: "EXECUTION_ONLY"}
# Field numbers (vtable slots) of the flatbuffers read, from executable.fbs.
PACKAGE_MIN_RUNTIME, PACKAGE_MULTI_EXECUTABLE = 0, 1
MULTI_EXECUTABLES = 0
EXECUTABLE_SCRATCH, EXECUTABLE_PARAMETERS, EXECUTABLE_NARROW, EXECUTABLE_TYPE, EXECUTABLE_TOKEN = 4, 6, 12, 13, 14


class _Table:
    """A flatbuffer table read by field number (little endian), without generated code."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_size = struct.unpack_from("<H", buf, self.vtable)[0]

    @classmethod
    def root(cls, buf: bytes) -> _Table:
        return cls(buf, struct.unpack_from("<I", buf, 0)[0])

    def _offset(self, slot: int) -> int:
        entry = 4 + 2 * slot
        return 0 if entry >= self.vtable_size else struct.unpack_from("<H", self.buf, self.vtable + entry)[0]

    def scalar(self, slot: int, fmt: str) -> int:
        offset = self._offset(slot)
        return 0 if not offset else int(struct.unpack_from("<" + fmt, self.buf, self.pos + offset)[0])

    def _vector(self, slot: int) -> tuple[int, int] | None:
        offset = self._offset(slot)
        if not offset:
            return None
        at = self.pos + offset
        at += struct.unpack_from("<I", self.buf, at)[0]
        return at + 4, struct.unpack_from("<I", self.buf, at)[0]

    def vector_length(self, slot: int) -> int:
        vector = self._vector(slot)
        return 0 if vector is None else vector[1]

    def blob(self, slot: int) -> bytes:
        vector = self._vector(slot)
        return b"" if vector is None else self.buf[vector[0] : vector[0] + vector[1]]

    def blobs(self, slot: int) -> list[bytes]:
        """A vector of strings (or of [ubyte] blobs), each as bytes."""
        vector = self._vector(slot)
        if vector is None:
            return []
        out = []
        for i in range(vector[1]):
            element = vector[0] + 4 * i
            start = element + struct.unpack_from("<I", self.buf, element)[0]
            length = struct.unpack_from("<I", self.buf, start)[0]
            out.append(self.buf[start + 4 : start + 4 + length])
        return out


@dataclass(frozen=True)
class Executable:
    """One executable of an Edge TPU subgraph: its kind and the parameter bytes it carries."""

    type: str
    parameter_bytes: int
    scratch_bytes: int = 0
    narrow_memory_bytes_per_tile: int = 0
    caching_token: int = 0


@dataclass(frozen=True)
class CompiledSubgraph:
    """One edgetpu-custom-op: its executables and the split they imply."""

    operator: int
    executables: list[Executable]
    min_runtime_version: int = 0

    @property
    def on_chip_bytes(self) -> int:
        """The PARAMETER_CACHING executables' parameters (none when it runs stand-alone)."""
        if len(self.executables) < 2:
            return 0
        return sum(e.parameter_bytes for e in self.executables if e.type == "PARAMETER_CACHING")

    @property
    def off_chip_bytes(self) -> int:
        """The parameters of the executable that runs: the only one, EXECUTION_ONLY of two, STAND_ALONE of three."""
        if len(self.executables) == 1:
            return self.executables[0].parameter_bytes
        runs = "EXECUTION_ONLY" if len(self.executables) == 2 else "STAND_ALONE"
        return sum(e.parameter_bytes for e in self.executables if e.type == runs)


@dataclass(frozen=True)
class CompiledModel:
    """The parameter streams of a compiled model, per Edge TPU subgraph."""

    subgraphs: list[CompiledSubgraph] = field(default_factory=list)

    @property
    def on_chip_bytes(self) -> int:
        return sum(s.on_chip_bytes for s in self.subgraphs)

    @property
    def off_chip_bytes(self) -> int:
        return sum(s.off_chip_bytes for s in self.subgraphs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; the bytes are the streams' (see the module's note on accounting)."""
        return {
            "source": "parameter streams",
            "on_chip_bytes": self.on_chip_bytes,
            "off_chip_bytes": self.off_chip_bytes,
            "per_subgraph": [
                {
                    "operator": s.operator,
                    "on_chip_bytes": s.on_chip_bytes,
                    "off_chip_bytes": s.off_chip_bytes,
                    "executables": [e.type for e in s.executables],
                    "min_runtime_version": s.min_runtime_version,
                }
                for s in self.subgraphs
            ],
        }


def read_executable(data: bytes) -> Executable:
    table = _Table.root(data)
    kind = table.scalar(EXECUTABLE_TYPE, "h")
    return Executable(
        type=EXECUTABLE_TYPES.get(kind, str(kind)),
        parameter_bytes=table.vector_length(EXECUTABLE_PARAMETERS),
        scratch_bytes=table.scalar(EXECUTABLE_SCRATCH, "i"),
        narrow_memory_bytes_per_tile=table.scalar(EXECUTABLE_NARROW, "i"),
        caching_token=table.scalar(EXECUTABLE_TOKEN, "Q"),
    )


def read_package(data: bytes) -> tuple[int, list[Executable]]:
    """(min_runtime_version, executables) of a serialized Package."""
    package = _Table.root(data)
    multi = package.blob(PACKAGE_MULTI_EXECUTABLE)
    executables = [read_executable(e) for e in _Table.root(multi).blobs(MULTI_EXECUTABLES)] if multi else []
    return package.scalar(PACKAGE_MIN_RUNTIME, "i"), executables


def _package_bytes(options: bytes) -> bytes:
    """The serialized package under key "4" of the custom options (a FlexBuffer map; read by length)."""
    from flatbuffers import flexbuffers

    root = flexbuffers.GetRoot(bytearray(options)).AsMap
    values = dict(zip([key.AsKey for key in root.Keys], list(root.Values), strict=True))
    package = values.get("4")
    if package is None:
        raise ValueError("no executable package (key 4) in the custom options")
    return bytes(package.AsBlob if package.IsBlob else package.AsStringBytes)


def _options(values: Any) -> bytes:
    """Custom options as bytes (the object API gives a list or a numpy array, or None)."""
    import numpy as np

    return b"" if values is None else np.asarray(values, dtype=np.uint8).tobytes()


def read_compiled(path: Path | str) -> CompiledModel:
    """The parameter streams of every edgetpu-custom-op in a compiled model; EdgeTPUError if it holds none."""
    path = Path(path)
    model = read_tflite(path)
    subgraphs = []
    for subgraph in model.subgraphs or []:
        for index, op in enumerate(subgraph.operators or []):
            code = model.operatorCodes[op.opcodeIndex]
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode or "")
            if custom != CUSTOM_CODE:
                continue
            try:
                runtime, executables = read_package(_package_bytes(_options(op.customOptions)))
            except Exception as error:  # flatbuffers raises anything from IndexError to struct.error
                raise EdgeTPUError(f"{path}: unreadable {CUSTOM_CODE} #{index} ({error})") from None
            subgraphs.append(CompiledSubgraph(index, executables, runtime))
    if not subgraphs:
        raise EdgeTPUError(f"{path}: not compiled for the Edge TPU (no {CUSTOM_CODE})")
    return CompiledModel(subgraphs)
