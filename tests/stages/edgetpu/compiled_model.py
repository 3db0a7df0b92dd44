"""TEST DOUBLE of a compiled model: a .tflite holding one edgetpu-custom-op with parameter streams of given sizes.

It is not the compiler's output and computes nothing: it lays out, in the compiled format described in
tasks/stages/edgetpu/compiled.py (a FlexBuffer map whose key "4" is a DWN1 Package, its MultiExecutable,
its Executables), executables whose `parameters` vectors have the sizes a test asks for, so that the
reader and the stage can be checked without Coral's compiler. Public compiled models are not copied
into the repository; the readings of those are kept as numbers in memory_cases/.
"""

from __future__ import annotations

from pathlib import Path

EXECUTABLE_TYPE = {"STAND_ALONE": 0, "PARAMETER_CACHING": 1, "EXECUTION_ONLY": 2}


def _executable(kind: str, parameter_bytes: int, token: int) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(0)
    parameters = builder.CreateByteVector(bytes(parameter_bytes))
    builder.StartObject(17)
    builder.PrependUOffsetTRelativeSlot(6, parameters, 0)
    builder.PrependInt16Slot(13, EXECUTABLE_TYPE[kind], -1)  # written even when 0 (STAND_ALONE)
    builder.PrependUint64Slot(14, token, 0)
    builder.Finish(builder.EndObject())
    return bytes(builder.Output())


def _package(executables: list[tuple[str, int]], min_runtime_version: int, token: int) -> bytes:
    import flatbuffers

    inner = flatbuffers.Builder(0)
    strings = [inner.CreateString(_executable(kind, size, token)) for kind, size in executables]
    inner.StartVector(4, len(strings), 4)
    for offset in reversed(strings):
        inner.PrependUOffsetTRelative(offset)
    vector = inner.EndVector()
    inner.StartObject(1)
    inner.PrependUOffsetTRelativeSlot(0, vector, 0)
    inner.Finish(inner.EndObject())
    multi = bytes(inner.Output())

    outer = flatbuffers.Builder(0)
    blob = outer.CreateByteVector(multi)
    outer.StartObject(8)
    outer.PrependInt32Slot(0, min_runtime_version, 0)
    outer.PrependUOffsetTRelativeSlot(1, blob, 0)
    outer.Finish(outer.EndObject(), file_identifier=b"DWN1")
    return bytes(outer.Output())


def _custom_options(package: bytes, as_string: bool) -> bytes:
    from flatbuffers import flexbuffers

    builder = flexbuffers.Builder()
    with builder.Map():
        builder.Key("4")
        if as_string:  # as the compiler stores it: a string of raw bytes (flexbuffers' String() takes text only)
            builder._WriteBlob(package, append_zero=True, type_=flexbuffers.Type.STRING)
        else:
            builder.Blob(package)
    return bytes(builder.Finish())


def write_compiled_model(
    path: Path, subgraphs: list[list[tuple[str, int]]], min_runtime_version: int = 14, token: int = 0x84ABB3A3
) -> Path:
    """A .tflite with one edgetpu-custom-op per entry of `subgraphs`, each with (type, parameter bytes) executables."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = "edgetpu-custom-op"
    model.operatorCodes = [code]
    model.buffers = [schema.BufferT()]
    graph = schema.SubGraphT()
    graph.tensors, graph.operators = [], []
    for i, executables in enumerate(subgraphs):
        for name in (f"in{i}", f"out{i}"):
            tensor = schema.TensorT()
            tensor.shape, tensor.type, tensor.buffer, tensor.name = [1, 4], schema.TensorType.UINT8, 0, name
            graph.tensors.append(tensor)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, [2 * i], [2 * i + 1]
        op.customOptions = list(_custom_options(_package(executables, min_runtime_version, token), i % 2 == 0))
        graph.operators.append(op)
    graph.inputs, graph.outputs = [0], [2 * len(subgraphs) - 1]
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path
