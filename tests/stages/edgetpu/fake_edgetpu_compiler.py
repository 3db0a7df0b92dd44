#!/usr/bin/env python3
"""TEST DOUBLE of Coral's `edgetpu_compiler`: it is not the compiler and compiles nothing.

Why it exists: the real `edgetpu_compiler` is a closed-source x86-64 binary shipped only as a Debian
package from Coral's apt repository; it cannot be installed on this machine (no internet, no Coral
apt source). tests/stages/edgetpu/test_compiler.py runs this script in its place to exercise
`tasks.stages.edgetpu.compile_model` end to end: the command line it builds, the console output and .log
it parses, the files it expects, and how it reports failures and timeouts.

What it does: it accepts the real compiler's options (-s/--show_operations, -o/--out_dir,
-m/--min_runtime_version, ...), reads each model's operators with the TFLite schema bindings, prints
the real compiler's console format, and writes `<stem>_edgetpu.log` in the real .log format and
`<stem>_edgetpu.tflite`, which is only a byte copy of the input (or, with FAKE_EDGETPU_STREAMS, a
stand-in holding parameter streams of the sizes it printed, tests/stages/edgetpu/compiled_model.py).
It says every operator is "Mapped to Edge TPU" unless told otherwise, and prints memory lines that are
only plausible figures unless told which. Its verdicts are not predictions of the real compiler; the
real verdicts live in ../shared/edgetpu-cases.

Environment (all optional):
  FAKE_EDGETPU_MODE         ok (default) | not_quantized | crash | hang | dynamic
  FAKE_EDGETPU_UNSUPPORTED  an operator name: its first occurrence gets "Operation not supported",
                            everything after it "More than one subgraph is not supported"
  FAKE_EDGETPU_ARGV         a file to write the arguments received to, as JSON
  FAKE_EDGETPU_ON_CHIP      bytes to print as "On-chip memory used for caching model parameters"
  FAKE_EDGETPU_OFF_CHIP     bytes to print as "Off-chip memory used for streaming uncached model parameters"
  FAKE_EDGETPU_NO_MEMORY    set: print no memory lines (as a .log alone would not)
  FAKE_EDGETPU_STREAMS      set: write <stem>_edgetpu.tflite with parameter streams of the printed sizes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

VERSION = "16.0.384591198"
MAPPED = "Mapped to Edge TPU"
NOT_SUPPORTED = "Operation not supported"
ONE_SUBGRAPH = "More than one subgraph is not supported"
ON_CHIP_BYTES = 8 * 1024 * 1024  # what an Edge TPU caches, roughly; the double needs only a plausible figure


def size(count: int) -> str:
    """A byte count the way the compiler prints it."""
    if count < 1024:
        return f"{count:.2f}B"
    if count < 1024**2:
        return f"{count / 1024:.2f}KiB"
    return f"{count / 1024**2:.2f}MiB"


def read_operators(path: Path) -> tuple[list[str], int]:
    """Operator names in execution order and the bytes of constant data, from the TFLite schema."""
    # ai_edge_litert ships the same generated schema as TensorFlow and imports in a fraction of the time.
    from ai_edge_litert import schema_py_generated as schema

    buffer = bytearray(path.read_bytes())
    model = schema.Model.GetRootAs(buffer, 0)
    names = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}
    subgraph = model.Subgraphs(0)
    operators = []
    for i in range(subgraph.OperatorsLength()):
        code = model.OperatorCodes(subgraph.Operators(i).OpcodeIndex())
        operators.append(names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
    constant_bytes = sum(model.Buffers(i).DataLength() for i in range(model.BuffersLength()))
    return operators, constant_bytes


def statuses(operators: list[str], unsupported: str | None) -> list[str]:
    """Every operator mapped, except from the first `unsupported` one on."""
    result, cut = [], False
    for name in operators:
        if not cut and name == unsupported:
            result.append(NOT_SUPPORTED)
            cut = True
        else:
            result.append(ONE_SUBGRAPH if cut else MAPPED)
    return result


def table(operators: list[str], status: list[str]) -> list[str]:
    """The fixed-width operator table, one row per (operator, status) in first-seen order."""
    counts: dict[tuple[str, str], int] = {}
    for pair in zip(operators, status, strict=True):
        counts[pair] = counts.get(pair, 0) + 1
    rows = [f"{name:<31}{count:<11}{state}" for (name, state), count in counts.items()]
    return [f"{'Operator':<31}{'Count':<11}Status", "", *rows]


def compile_one(model: Path, out_dir: Path, show_operations: bool) -> int:
    """Print what the compiler prints for one model and write its two files; the exit status."""
    mode = os.environ.get("FAKE_EDGETPU_MODE", "ok")
    if mode == "not_quantized":
        print(f"Invalid model: {model}")
        print("Model not quantized")
        return 1
    print("Started a compilation timeout timer of 180 seconds.", flush=True)
    if mode == "hang":
        time.sleep(3600)
    if mode == "crash":
        print("Internal compiler error. Aborting! ", file=sys.stderr)
        return 134  # how a shell reports the real compiler's abort()
    if mode == "dynamic":
        print(
            "ERROR: Attempting to use a delegate that only supports static-sized tensors with a graph that has "
            "dynamic-sized tensors."
        )
        print(
            "Compilation failed: Model failed in Tflite interpreter. "
            "Please ensure model can be loaded/run in Tflite interpreter."
        )
        print("Compilation child process completed within timeout period.")
        print("Compilation failed! ")
        return 1

    operators, constant_bytes = read_operators(model)
    status = statuses(operators, os.environ.get("FAKE_EDGETPU_UNSUPPORTED"))
    mapped = status.count(MAPPED)
    output = out_dir / f"{model.stem}_edgetpu.tflite"
    log_file = out_dir / f"{model.stem}_edgetpu.log"
    on_chip = min(constant_bytes, ON_CHIP_BYTES) if mapped else 0
    on_chip = int(os.environ.get("FAKE_EDGETPU_ON_CHIP", on_chip))
    off_chip = int(os.environ.get("FAKE_EDGETPU_OFF_CHIP", 0))
    if os.environ.get("FAKE_EDGETPU_STREAMS"):
        sys.path.insert(0, str(Path(__file__).parent))
        from compiled_model import write_compiled_model

        write_compiled_model(output, [[("PARAMETER_CACHING", on_chip), ("EXECUTION_ONLY", off_chip)]])
    else:
        shutil.copyfile(model, output)
    log_file.write_text(
        "\n".join(
            [
                f"Edge TPU Compiler version {VERSION}",
                f"Input: {model}",
                f"Output: {output}",
                "",
                *table(operators, status),
            ]
        )
        + "\n"
    )

    print()
    print("Model compiled successfully in 12 ms.")
    print()
    print(f"Input model: {model}")
    print(f"Input size: {size(model.stat().st_size)}")
    print(f"Output model: {output}")
    print(f"Output size: {size(output.stat().st_size)}")
    if not os.environ.get("FAKE_EDGETPU_NO_MEMORY"):
        print(f"On-chip memory used for caching model parameters: {size(on_chip)}")
        print(f"On-chip memory remaining for caching model parameters: {size(max(ON_CHIP_BYTES - on_chip, 0))}")
        print(f"Off-chip memory used for streaming uncached model parameters: {size(off_chip)}")
    print(f"Number of Edge TPU subgraphs: {1 if mapped else 0}")
    print(f"Total number of operations: {len(operators)}")
    print(f"Operation log: {log_file}")
    print()
    if mapped < len(operators):
        print(
            "Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the "
            "model will instead run on the CPU, which is slower. If possible, consider updating your model to use "
            "only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs."
        )
        print(f"Number of operations that will run on Edge TPU: {mapped}")
        print(f"Number of operations that will run on CPU: {len(operators) - mapped}")
    if show_operations:
        print()
        print("\n".join(table(operators, status)))
    else:
        print("See the operation log file for individual operation details.")
    print("Compilation child process completed within timeout period.")
    print("Compilation succeeded! ")
    return 0


def main(argv: list[str]) -> int:
    """The real compiler's command line, as far as the tests use it."""
    if os.environ.get("FAKE_EDGETPU_ARGV"):
        Path(os.environ["FAKE_EDGETPU_ARGV"]).write_text(json.dumps(argv))
    parser = argparse.ArgumentParser(prog="edgetpu_compiler")
    parser.add_argument("-s", "--show_operations", action="store_true")
    parser.add_argument("-o", "--out_dir", default=".")
    parser.add_argument("-m", "--min_runtime_version", type=int)
    parser.add_argument("-a", "--enable_multiple_subgraphs", action="store_true")
    parser.add_argument("-t", "--timeout_sec", type=int, default=180)
    parser.add_argument("models", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print(f"Edge TPU Compiler version {VERSION}", flush=True)
    out_dir = Path(args.out_dir)
    for model in args.models:
        if not model.is_file():
            print(f"Invalid model: {model}")
            return 1
        status = compile_one(model, out_dir, args.show_operations)
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
