"""Edge TPU compatibility: an offline preflight, and the edgetpu_compiler runner and log parser.

- rules.py      the knowledge, as data: why an operator does not map, with the evidence for each rule
- graph.py      a .tflite as an operator graph (TFLite's own schema bindings)
- partition.py  what a fallback takes with it, following the data flow (one subgraph, or several with -a)
- preflight.py  the prediction per operator, the first fallback explained, agreement with a real log
- memory.py     the parameter memory, as data: on-chip and off-chip bytes, capacity, segments, with evidence
- compiled.py   a compiled model's parameter streams (what the compiler cached and streamed)
- compiler.py   finding and running edgetpu_compiler, and parsing its console output and .log
- stage.py      the pipeline's edgetpu stage, and `check-edgetpu`'s check of any .tflite

tests/stages/edgetpu/test_preflight.py measures the preflight against real compiler logs in ../shared/edgetpu-cases.
"""

from tasks.stages.edgetpu.compiled import CompiledModel, read_compiled
from tasks.stages.edgetpu.compiler import (
    CompilerReport,
    OperatorRow,
    compile_model,
    find_compiler,
    format_size,
    format_table,
    parse_compiler_log,
    parse_size,
)
from tasks.stages.edgetpu.errors import EdgeTPUError
from tasks.stages.edgetpu.graph import Graph, read_tflite
from tasks.stages.edgetpu.memory import (
    CONSTANTS,
    UNCERTAINTIES,
    MemoryPrediction,
    OperatorFacts,
    operator_facts,
    predict_memory,
)
from tasks.stages.edgetpu.partition import (
    REASON_DEPENDS,
    REASON_DEPENDS_UNDOCUMENTED,
    REASON_MAPPED,
    REASON_OWN,
    REASON_UNDOCUMENTED,
)
from tasks.stages.edgetpu.preflight import (
    Agreement,
    Explanation,
    OperatorVerdict,
    Preflight,
    agreement,
    preflight,
    preflight_model,
)
from tasks.stages.edgetpu.rules import (
    COMPILATION_FAILED,
    DEFAULT_RUNTIME,
    MAPPED,
    NOT_CONSTANT,
    NOT_PARSED,
    ONE_SUBGRAPH,
    RULES,
    UNSPECIFIED,
    UNSUPPORTED_OP,
    UNSUPPORTED_RANK,
    UNSUPPORTED_TYPE,
    Evidence,
    Rule,
)
from tasks.stages.edgetpu.stage import INSTALL_HINT, check_and_compile, check_model, check_report, memory_report

__all__ = [
    "COMPILATION_FAILED",
    "CONSTANTS",
    "DEFAULT_RUNTIME",
    "INSTALL_HINT",
    "MAPPED",
    "NOT_CONSTANT",
    "NOT_PARSED",
    "ONE_SUBGRAPH",
    "REASON_DEPENDS",
    "REASON_DEPENDS_UNDOCUMENTED",
    "REASON_MAPPED",
    "REASON_OWN",
    "REASON_UNDOCUMENTED",
    "RULES",
    "UNCERTAINTIES",
    "UNSPECIFIED",
    "UNSUPPORTED_OP",
    "UNSUPPORTED_RANK",
    "UNSUPPORTED_TYPE",
    "Agreement",
    "CompiledModel",
    "CompilerReport",
    "EdgeTPUError",
    "Evidence",
    "Explanation",
    "Graph",
    "MemoryPrediction",
    "OperatorFacts",
    "OperatorRow",
    "OperatorVerdict",
    "Preflight",
    "Rule",
    "agreement",
    "check_and_compile",
    "check_model",
    "check_report",
    "compile_model",
    "find_compiler",
    "format_size",
    "format_table",
    "memory_report",
    "operator_facts",
    "parse_compiler_log",
    "parse_size",
    "predict_memory",
    "preflight",
    "preflight_model",
    "read_compiled",
    "read_tflite",
]
