"""Edge TPU compatibility: an offline preflight, and the edgetpu_compiler runner and log parser.

- preflight.py  the prediction per operator, and its agreement with a real compiler log
- compiler.py   finding and running edgetpu_compiler, and parsing its console output and .log
- stage.py      the pipeline's edgetpu stage

tests/test_edgetpu.py measures the preflight against real compiler logs in ../shared/edgetpu-cases.
"""

from tasks.edgetpu.compiler import (
    MAPPED,
    CompilerReport,
    OperatorRow,
    compile_model,
    find_compiler,
    format_size,
    format_table,
    parse_compiler_log,
    parse_size,
)
from tasks.edgetpu.errors import EdgeTPUError
from tasks.edgetpu.preflight import (
    COMPILATION_FAILED,
    DEFAULT_RUNTIME,
    NOT_CONSTANT,
    NOT_PARSED,
    ONE_SUBGRAPH,
    UNSPECIFIED,
    UNSUPPORTED_OP,
    UNSUPPORTED_RANK,
    UNSUPPORTED_TYPE,
    Agreement,
    OperatorVerdict,
    Preflight,
    agreement,
    preflight,
    preflight_model,
    read_tflite,
)
from tasks.edgetpu.stage import INSTALL_HINT, check_and_compile

__all__ = [
    "COMPILATION_FAILED",
    "DEFAULT_RUNTIME",
    "INSTALL_HINT",
    "MAPPED",
    "NOT_CONSTANT",
    "NOT_PARSED",
    "ONE_SUBGRAPH",
    "UNSPECIFIED",
    "UNSUPPORTED_OP",
    "UNSUPPORTED_RANK",
    "UNSUPPORTED_TYPE",
    "Agreement",
    "CompilerReport",
    "EdgeTPUError",
    "OperatorRow",
    "OperatorVerdict",
    "Preflight",
    "agreement",
    "check_and_compile",
    "compile_model",
    "find_compiler",
    "format_size",
    "format_table",
    "parse_compiler_log",
    "parse_size",
    "preflight",
    "preflight_model",
    "read_tflite",
]
