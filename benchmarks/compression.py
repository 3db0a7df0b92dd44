"""Compression benchmark: size, gzip size, accuracy and latency of every .tflite variant, side by side.

    python -m benchmarks.compression [--out data/reports/benchmark.json] [--runs N] [--quick] [--project DIR]

Two models: the project's default pipeline model on its default data (float, dynamic_range,
float16 and int8 from the float model; pruned_int8 (PTQ) and pruned_qat_int8 (prune-preserving
QAT) from the pruned model; pruned_clustered_int8 (PTQ) from the pruned and clustered model, with
what each step adds to the gzipped size), and MobileNetV2 at 224x224 with random weights (nothing is
downloaded; no accuracy without data). Latency is one thread, batch 1, on both CPU kernel sets
(XNNPACK and the interpreter's built-in kernels), the median over rounds of each round's median,
--runs invocations in all after warm-up, every variant taking its turn in each round; which
kernel set is faster depends on the variant, so both are reported. The float conversion of the
default model (and, without --quick, of MobileNetV2) is also timed against
TFLiteConverter.from_keras_model, side by side (see tasks/stages/quantize.py _converter). Ratios are
reported next to their targets, never asserted.

--quick is a smoke configuration: 5 latency runs (not 200), 11 predict timings of 200 inputs (not
51 of 1,000), one epoch of QAT, a MobileNetV2 of alpha 0.35 at 32x32 with 16 calibration images
(not alpha 1.0 at 224x224 with 300) in its float and int8 variants only, without timing its
conversion against from_keras_model, and, when the default model has to be trained, the test
suite's tiny training budgets. Both models are still measured; its
figures are for the JSON's shape, not for the targets.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import tasks  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from benchmarks import write_report
from tasks.layout import Layout
from tasks.params import Params, QuantizeParams
from tasks.stages.inference import OpResolver

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("data/reports/benchmark.json")

RESOLVERS: tuple[OpResolver, ...] = ("xnnpack", "builtin")
PTQ_MODES = ("dynamic_range", "float16", "int8")
DEFAULT_VARIANTS = ("float", *PTQ_MODES, "pruned_int8", "pruned_clustered_int8", "pruned_qat_int8")
MOBILENET_VARIANTS = ("float", "dynamic_range", "float16", "int8")
# The test suite's budgets (tests/conftest.py TINY): used by --quick when the default model must be trained.
# Latency invocations are spread over this many rounds (fewer when --runs is smaller).
LATENCY_ROUNDS = 10
QUICK_TRAINING = [
    "train.epochs=4",
    "prune.epochs=2",
    "prune.frequency=5",
    "data.calibration_size=50",
    "quantize.qat_epochs=1",
]


@dataclass(frozen=True)
class Config:
    """How much of everything to measure."""

    runs: int  # timed batch-1 invocations per variant and kernel set
    warmup: int  # untimed invocations before them
    repeats: int  # timings of each whole predict pass (fastest kept)
    predict_inputs: int  # inputs of the Keras-vs-TFLite comparison
    batch_size: int  # predict batch size, Keras' default
    mobilenet_calibration: int  # random calibration images for MobileNetV2's int8
    mobilenet_size: int
    mobilenet_alpha: float
    mobilenet_variants: tuple[str, ...]
    qat_epochs: int | None  # prune-preserving QAT's epochs; None: the project's quantize.qat_epochs
    mobilenet_conversion: bool  # time MobileNetV2's float conversion both ways too, not just the default model's
    quick: bool


FULL = Config(
    runs=200,  # as params.yaml's evaluate.latency_runs
    warmup=5,
    repeats=51,
    predict_inputs=1000,
    batch_size=32,
    mobilenet_calibration=300,
    mobilenet_size=224,
    mobilenet_alpha=1.0,
    mobilenet_variants=MOBILENET_VARIANTS,
    qat_epochs=None,
    mobilenet_conversion=True,
    quick=False,
)
QUICK = Config(
    runs=5,
    warmup=2,
    repeats=11,
    predict_inputs=200,
    batch_size=32,
    mobilenet_calibration=16,
    mobilenet_size=32,
    mobilenet_alpha=0.35,
    mobilenet_variants=("float", "int8"),  # what its ratios need
    qat_epochs=1,
    mobilenet_conversion=False,  # from_keras_model alone would take a third of the quick run
    quick=True,
)


@dataclass(frozen=True)
class Target:
    """A ratio's goal: value `op` threshold."""

    op: str
    threshold: float
    what: str

    def met(self, value: float) -> bool:
        """Whether the value reaches the target."""
        return {"<=": value <= self.threshold, "<": value < self.threshold, ">=": value >= self.threshold}[self.op]


CONVERSION = Target(
    ">=", 2.0, "seconds to a float .tflite: TFLiteConverter.from_keras_model / tasks.stages.quantize's converter"
)
# The gzip targets follow the default CNN. Its global average pooling left no large Dense layer: of
# its 30,090 weights the pruned ones are 92% of the kernels, and what stays dense (stem, depthwise
# kernels, classifier) and int8's per-channel scales weigh more in the file. Measured 8.4x and 9.1x
# (the CNN before it, a Flatten into a 131,072-weight Dense: 18.8x and 23.4x, targets 12 and 20).
TARGETS: dict[str, dict[str, Target]] = {
    "default": {
        "float_over_pruned_int8_gzip": Target(">=", 7.0, "float .tflite gzip bytes / pruned_int8 gzip bytes"),
        "pruned_int8_accuracy_drop_points": Target(
            "<=", 0.5, "float .tflite accuracy - pruned_int8 accuracy, in points"
        ),
        "float_over_pruned_clustered_int8_gzip": Target(
            ">=", 8.0, "float .tflite gzip bytes / pruned_clustered_int8 gzip bytes (prune, cluster, int8 PTQ)"
        ),
        "pruned_clustered_int8_accuracy_drop_points": Target(
            "<=", 0.5, "float .tflite accuracy - pruned_clustered_int8 accuracy, in points"
        ),
        "qat_accuracy_drop_points": Target(
            "<=", 0.3, "float .tflite accuracy - pruned_qat_int8 accuracy (prune-preserving QAT), in points"
        ),
        "predict_speedup_vs_keras": Target(
            ">=", 2.0, "Keras predict time / TFLiteModel.predict time (the lower of float and int8 .tflite)"
        ),
        "tflite_model_overhead_vs_raw": Target(
            "<", 0.10, "TFLiteModel.predict time / raw interpreter loop time - 1 (the higher of float and int8)"
        ),
        "from_keras_model_over_converter_seconds": CONVERSION,
    },
    "mobilenet_v2": {
        "int8_over_float_size": Target("<=", 0.30, "int8 .tflite bytes / float .tflite bytes"),
        "builtin_float_over_int8_latency": Target(
            ">=", 1.5, "built-in kernels: float latency / int8 latency (batch 1, 1 thread)"
        ),
        "from_keras_model_over_converter_seconds": CONVERSION,
    },
}


# --- pure helpers ---------------------------------------------------------------------------------


def judge(ratios: dict[str, float], targets: dict[str, Target]) -> dict[str, dict[str, Any]]:
    """Each ratio's target and whether it is met (reported, not enforced)."""
    return {
        name: {"target": f"{target.op} {target.threshold:g}", "what": target.what, "pass": target.met(ratios[name])}
        for name, target in targets.items()
        if name in ratios
    }


def repeat_to(x: np.ndarray, count: int) -> np.ndarray:
    """`count` inputs: x repeated (and cut) to that length, so small test sets still fill a run."""
    return np.resize(x, (count, *x.shape[1:])).astype(x.dtype, copy=False)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        first, *rest = (str(cell) for cell in cells)
        return "  ".join([first.ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(rest, widths[1:], strict=True))])

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in rows)])


def best_seconds(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Each function's fastest wall time over `repeats` rounds, the functions taking turns.

    Taking turns spreads a busy spell of the machine over all of them; the fastest run is the
    one least disturbed by other processes (noise only ever adds time), as timeit advises.
    """
    timings: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in timings.items()}


# --- measuring ------------------------------------------------------------------------------------


def _cpu_model() -> str:
    """The CPU's model name on Linux ('' elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return ""
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    from importlib.metadata import version

    return {
        "platform": platform.platform(),
        "processor": _cpu_model() or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
        "python": platform.python_version(),
        "tensorflow": version("tensorflow"),
        "ai_edge_litert": version("ai-edge-litert"),
        "numpy": np.__version__,
    }


def measure_variants(
    paths: dict[str, Path], sample: np.ndarray, config: Config, test: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, dict[str, Any]]:
    """Sizes, accuracy (when there is test data) and batch-1 single-thread latency per kernel set."""
    from tasks.stages.evaluate import file_sizes
    from tasks.stages.inference import TFLiteModel

    results: dict[str, dict[str, Any]] = {}
    for name, path in paths.items():
        results[name] = dict(file_sizes(path))
        if test is not None:
            _, accuracy = TFLiteModel(path).evaluate(test[0], test[1], batch_size=256)
            results[name]["accuracy"] = round(accuracy, 6)
    models = {
        (name, resolver): TFLiteModel(path, num_threads=1, op_resolver=resolver)
        for name, path in paths.items()
        for resolver in RESOLVERS
    }
    for model in models.values():
        model.latency_ms(sample, runs=1, warmup=config.warmup)
    # Every variant runs a share of its invocations in each round: the latencies are compared
    # with each other, so a busy spell of the machine should slow all of them, not one.
    rounds = min(config.runs, LATENCY_ROUNDS)
    per_round = -(-config.runs // rounds)
    log.info("latency: %d models, %d rounds of %d batch-1 invocations", len(models), rounds, per_round)
    medians: dict[tuple[str, str], list[float]] = {key: [] for key in models}
    for _ in range(rounds):
        for key, model in models.items():
            medians[key].append(model.latency_ms(sample, runs=per_round, warmup=0))
    for (name, resolver), values in medians.items():
        # The default model runs in microseconds: keep six decimals of a millisecond.
        results[name].setdefault("latency_ms", {})[resolver] = round(float(np.median(values)), 6)
    return results


def raw_predict(path: Path, inputs: np.ndarray, batch_size: int) -> Callable[[], np.ndarray]:
    """The same batching as TFLiteModel.predict written straight on the interpreter, inputs pre-quantized.

    A model with a fixed batch (quantize.batch_size) takes that many inputs per invocation, as in
    TFLiteModel; a dynamic one is resized to `batch_size`.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    details = interpreter.get_input_details()[0]
    input_index = details["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    interpreter.allocate_tensors()
    features = list(inputs.shape[1:])
    fixed = int(details["shape_signature"][0]) != -1
    step = int(details["shape"][0]) if fixed else batch_size

    def run() -> np.ndarray:
        outputs, current = [], -1
        for start in range(0, len(inputs), step):
            chunk = inputs[start : start + step]
            if fixed and len(chunk) < step:  # padded, as TFLiteModel pads it
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk), *features), chunk.dtype)])
            elif not fixed and len(chunk) != current:
                interpreter.resize_tensor_input(input_index, [len(chunk), *features])
                interpreter.allocate_tensors()
                current = len(chunk)
            interpreter.set_tensor(input_index, chunk)
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(output_index))
        return np.concatenate(outputs)[: len(inputs)]

    return run


def keras_vs_tflite(keras_model: Any, tflites: dict[str, Path], x: np.ndarray, config: Config) -> dict[str, Any]:
    """Wall time of Keras predict and TFLiteModel.predict on the same inputs, and TFLiteModel's overhead."""
    from tasks.stages.inference import TFLiteModel

    inputs = repeat_to(x, config.predict_inputs)
    batch = config.batch_size
    keras_model.predict(inputs[:batch], batch_size=batch, verbose=0)  # traces the predict function
    keras_predict = partial(keras_model.predict, inputs, batch_size=batch, verbose=0)
    keras_s = best_seconds({"keras": keras_predict}, config.repeats)["keras"]
    result: dict[str, Any] = {
        "inputs": len(inputs),
        "batch_size": batch,
        "timing": f"fastest of {config.repeats} runs, TFLiteModel and raw loop taking turns",
        "threads": {"keras": "TensorFlow's default (all cores)", "tflite": 1},
        "keras_predict_s": round(keras_s, 6),
        "tflite": {},
    }
    for name, path in tflites.items():
        model = TFLiteModel(path, num_threads=1)
        raw = raw_predict(path, model.quantize_input(inputs), batch)
        best = best_seconds({"model": partial(model.predict, inputs, batch_size=batch), "raw": raw}, config.repeats)
        model_s, raw_s = best["model"], best["raw"]
        agree = np.allclose(model.dequantize_output(raw()), model.predict(inputs, batch_size=batch))
        result["tflite"][name] = {
            "predict_s": round(model_s, 6),
            "raw_interpreter_s": round(raw_s, 6),
            "speedup_vs_keras": round(keras_s / model_s, 3),
            "overhead_vs_raw": round(model_s / raw_s - 1.0, 4),
            "same_outputs_as_raw": bool(agree),
        }
        log.info("%s: TFLiteModel.predict %.4fs, raw loop %.4fs, Keras %.4fs", name, model_s, raw_s, keras_s)
    return result


# --- the default pipeline model -------------------------------------------------------------------


def _project_params(project: Path, quick: bool) -> Params:
    from tasks.params import apply_overrides, parse_params, read_params_file

    params_file = project / "params.yaml" if (project / "params.yaml").is_file() else REPO / "params.yaml"
    overrides = QUICK_TRAINING if quick else []
    return parse_params(apply_overrides(read_params_file(params_file), overrides), origin=str(params_file))


def default_models(project: Path, workdir: Path, quick: bool) -> tuple[Layout, Params, str]:
    """The project's float and pruned models and data when they exist, else trained now by the stage functions."""
    from tasks.stages import STAGES

    layout = Layout(project)
    needed = [layout.float_model, layout.pruned_model, layout.clustered_model, layout.raw / "test", layout.calibration]
    if all(path.exists() for path in needed):
        return layout, _project_params(project, quick=False), f"reused {project}/data/models/*.keras and data/raw"
    params = _project_params(project, quick)
    layout = Layout(workdir / "project")
    budget = "the test suite's tiny budgets (--quick)" if quick else "params.yaml"
    log.info("no trained models under %s: running prepare, train and prune with %s", project, budget)
    for name in ("prepare", "train", "prune", "cluster"):
        log.info("stage %s", name)
        STAGES[name](layout, params)
    return layout, params, f"trained now by tasks.stages prepare/train/prune into a temporary folder, {budget}"


def _ptq(mode: str, params: QuantizeParams) -> QuantizeParams:
    return params.model_copy(update={"method": "ptq", "ptq_mode": mode})


def default_benchmark(project: Path, workdir: Path, config: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """The default model's variants, and the Keras-vs-TFLite comparison on it."""
    from tasks.stages import images
    from tasks.stages.fit import load_model
    from tasks.stages.quantize import qat_model, qat_tflite, to_float_tflite, to_ptq_tflite

    layout, params, source = default_models(project, workdir, config.quick)
    test_x, test_y = images.load_test(layout, params.data).arrays()  # the digits' test split: small
    calibration = images.load_calibration(layout, params.data)
    float_model, pruned_model = load_model(layout.float_model), load_model(layout.pruned_model)
    clustered_model = load_model(layout.clustered_model)
    log.info("default: converting %d variants (%d calibration images)", len(DEFAULT_VARIANTS), len(calibration))
    quantized = {
        **{mode: to_ptq_tflite(float_model, calibration, _ptq(mode, params.quantize)) for mode in PTQ_MODES},
        "pruned_int8": to_ptq_tflite(pruned_model, calibration, _ptq("int8", params.quantize)),
        "pruned_clustered_int8": to_ptq_tflite(clustered_model, calibration, _ptq("int8", params.quantize)),
    }
    _, conversion = conversion_seconds(float_model)  # after those: TensorFlow is warm
    made = {"float": to_float_tflite(float_model, params.quantize.batch_size), **quantized}
    qat_epochs = config.qat_epochs or params.quantize.qat_epochs
    log.info("default: prune-preserving QAT, %d epochs", qat_epochs)
    fit, _ = images.load_fit_validation(layout, params.data)
    qat = qat_model(load_model(layout.pruned_model), fit, params.quantize, True, qat_epochs, 32, params.train.seed)
    made["pruned_qat_int8"] = qat_tflite(qat, calibration, params.quantize)
    paths = {}
    for name, model in made.items():
        paths[name] = workdir / f"default_{name}.tflite"
        paths[name].write_bytes(model)
    log.info("default: measuring %s", ", ".join(paths))
    variants = measure_variants(paths, test_x[0], config, (test_x, test_y))
    log.info("default: Keras predict vs TFLiteModel.predict on %d inputs", config.predict_inputs)
    comparison = keras_vs_tflite(
        float_model, {"float_tflite": paths["float"], "int8_tflite": paths["int8"]}, test_x, config
    )
    tflite_runs = comparison["tflite"].values()
    float_gzip = variants["float"]["gzip_bytes"]
    ratios = {
        "float_over_pruned_int8_gzip": round(float_gzip / variants["pruned_int8"]["gzip_bytes"], 3),
        "pruned_int8_accuracy_drop_points": round(
            100.0 * (variants["float"]["accuracy"] - variants["pruned_int8"]["accuracy"]), 3
        ),
        "float_over_pruned_clustered_int8_gzip": round(float_gzip / variants["pruned_clustered_int8"]["gzip_bytes"], 3),
        "pruned_clustered_int8_accuracy_drop_points": round(
            100.0 * (variants["float"]["accuracy"] - variants["pruned_clustered_int8"]["accuracy"]), 3
        ),
        "qat_accuracy_drop_points": round(
            100.0 * (variants["float"]["accuracy"] - variants["pruned_qat_int8"]["accuracy"]), 3
        ),
        "predict_speedup_vs_keras": min(run["speedup_vs_keras"] for run in tflite_runs),
        "tflite_model_overhead_vs_raw": max(run["overhead_vs_raw"] for run in tflite_runs),
        "from_keras_model_over_converter_seconds": conversion_ratio(conversion),
    }
    # What each step adds, as gzipped size against the float .tflite: quantization alone, then
    # pruning before it, then clustering between the two.
    steps = {
        name: {
            "gzip_ratio": round(float_gzip / variants[name]["gzip_bytes"], 3),
            "accuracy_drop_points": round(100.0 * (variants["float"]["accuracy"] - variants[name]["accuracy"]), 3),
        }
        for name in ("int8", "pruned_int8", "pruned_clustered_int8")
    }
    result = {
        "source": source,
        "steps": steps,
        "test_images": len(test_y),
        "one_test_image_points": round(100.0 / len(test_y), 3),  # the resolution of every accuracy above
        "calibration_images": len(calibration),
        "variants": variants,
        "conversion_seconds": conversion,
        "ratios": ratios,
        "targets": judge(ratios, TARGETS["default"]),
    }
    return result, comparison


# --- MobileNetV2 --------------------------------------------------------------------------------


def mobilenet_benchmark(workdir: Path, params: QuantizeParams, config: Config) -> dict[str, Any]:
    """MobileNetV2 (alpha 1.0, random weights): sizes and latencies of its variants."""
    from tasks.stages.fit import keras
    from tasks.stages.quantize import to_float_tflite, to_ptq_tflite

    k = keras()
    k.utils.set_random_seed(0)
    size = config.mobilenet_size
    alpha = config.mobilenet_alpha
    model = k.applications.MobileNetV2(alpha=alpha, input_shape=(size, size, 3), weights=None, classes=1000)
    rng = np.random.default_rng(0)
    # MobileNetV2's preprocessing maps pixels to [-1, 1]: calibrate on that range.
    calibration = rng.uniform(-1.0, 1.0, (config.mobilenet_calibration, size, size, 3)).astype(np.float32)
    sample = rng.uniform(-1.0, 1.0, (size, size, 3)).astype(np.float32)
    conversion: dict[str, float] = {}
    if config.mobilenet_conversion:  # after the default model's conversions: TensorFlow is warm
        log.info("mobilenet_v2: converting to float with tasks.stages.quantize's converter and with from_keras_model")
        _, conversion = conversion_seconds(model)
    float_tflite = to_float_tflite(model, params.batch_size)
    paths = {}
    for name in config.mobilenet_variants:
        log.info("mobilenet_v2: converting %s%s", name, f" ({len(calibration)} calibration images)" * (name == "int8"))
        made = float_tflite if name == "float" else to_ptq_tflite(model, calibration, _ptq(name, params))
        paths[name] = workdir / f"mobilenet_v2_{name}.tflite"
        paths[name].write_bytes(made)
    parameters = int(model.count_params())
    del model, calibration
    k.backend.clear_session()
    gc.collect()
    log.info("mobilenet_v2: measuring %s", ", ".join(paths))
    variants = measure_variants(paths, sample, config, None)
    ratios = {
        "int8_over_float_size": round(variants["int8"]["size_bytes"] / variants["float"]["size_bytes"], 4),
        "builtin_float_over_int8_latency": round(
            variants["float"]["latency_ms"]["builtin"] / variants["int8"]["latency_ms"]["builtin"], 3
        ),
    }
    if config.mobilenet_conversion:
        ratios["from_keras_model_over_converter_seconds"] = conversion_ratio(conversion)
    return {
        "source": f"tf_keras.applications.MobileNetV2(alpha={alpha}, input_shape=({size}, {size}, 3), weights=None)",
        "parameters": parameters,
        "calibration_images": config.mobilenet_calibration,
        "variants": variants,
        "conversion_seconds": conversion,
        "ratios": ratios,
        "targets": judge(ratios, TARGETS["mobilenet_v2"]),
    }


def conversion_seconds(model: Any) -> tuple[bytes, dict[str, float]]:
    """The float .tflite, and the seconds to it: tasks.stages.quantize's converter and from_keras_model in turn.

    Call it after other conversions: a first conversion in the process pays TensorFlow's one-time
    set-up. The two results must be the same model (the same size: the same graph, signature and
    names), so the converter keeps the dynamic batch from_keras_model makes (quantize.batch_size null).
    """
    import tensorflow as tf

    from tasks.stages.quantize import to_float_tflite

    started = time.perf_counter()
    ours = to_float_tflite(model, None)
    converter_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    keras_s = time.perf_counter() - started
    if len(ours) != len(theirs):
        raise RuntimeError(f"the two conversions differ: {len(ours)} and {len(theirs)} bytes")
    return ours, {"converter_s": round(converter_s, 2), "from_keras_model_s": round(keras_s, 2)}


def conversion_ratio(conversion: dict[str, float]) -> float:
    """from_keras_model's seconds over the converter's (conversion_seconds' figures)."""
    return round(conversion["from_keras_model_s"] / conversion["converter_s"], 2)


# --- report -------------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    """The printed tables: variants per model, Keras vs TFLite, and every ratio against its target."""
    blocks = []
    for name, result in report["models"].items():
        rows = []
        for variant, values in result["variants"].items():
            accuracy = values.get("accuracy")
            rows.append(
                [
                    variant,
                    f"{values['size_bytes']:,}",
                    f"{values['gzip_bytes']:,}",
                    "-" if accuracy is None else f"{accuracy:.4f}",
                    f"{values['latency_ms']['xnnpack']:.4g}",
                    f"{values['latency_ms']['builtin']:.4g}",
                ]
            )
        headers = ["variant", "size bytes", "gzip bytes", "accuracy", "xnnpack ms", "builtin ms"]
        blocks.append(f"{name}: {result['source']}\n{table(headers, rows)}")
    steps = report["models"]["default"].get("steps", {})
    if steps:
        rows = [
            [name, f"{values['gzip_ratio']:.2f}x", f"{values['accuracy_drop_points']:+.2f}"]
            for name, values in steps.items()
        ]
        blocks.append(
            "default: what each step adds (int8 = quantize alone; pruned_int8 = prune, then quantize; "
            "pruned_clustered_int8 = prune, cluster, quantize)\n"
            + table(["variant", "float gzip / gzip", "accuracy drop, points"], rows)
        )
    comparison = report["keras_vs_tflite"]
    rows = [["keras predict (float .keras)", f"{comparison['keras_predict_s'] * 1000:.2f}", "", "", ""]]
    for name, values in comparison["tflite"].items():
        rows.append(
            [
                f"TFLiteModel.predict ({name})",
                f"{values['predict_s'] * 1000:.2f}",
                f"{values['raw_interpreter_s'] * 1000:.2f}",
                f"{values['speedup_vs_keras']:.1f}x",
                f"{100 * values['overhead_vs_raw']:+.1f}%",
            ]
        )
    blocks.append(
        f"predict on {comparison['inputs']} inputs, batch {comparison['batch_size']} "
        f"({comparison['timing']}; TFLite 1 thread, Keras all cores)\n"
        + table(["", "ms", "raw loop ms", "speed-up", "overhead"], rows)
    )
    rows = []
    for name, result in report["models"].items():
        for ratio, value in result["ratios"].items():
            target = result["targets"][ratio]
            rows.append([f"{name}: {ratio}", f"{value:g}", target["target"], "pass" if target["pass"] else "MISS"])
    blocks.append("ratios vs targets (reported, not enforced)\n" + table(["ratio", "value", "target", ""], rows))
    return "\n\n".join(blocks)


def run(project: Path, config: Config) -> dict[str, Any]:
    """Both models measured in one run: the report as written to JSON."""
    started = time.perf_counter()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="edgecompress-bench-") as folder:
        workdir = Path(folder)
        default, comparison = default_benchmark(project, workdir, config)
        gc.collect()
        quantize_params = _project_params(project, quick=False).quantize
        mobilenet = mobilenet_benchmark(workdir, quantize_params, config)
    info["load_average_at_end"] = [round(load, 2) for load in os.getloadavg()]
    return {
        "models": {"default": default, "mobilenet_v2": mobilenet},
        "keras_vs_tflite": {"model": "default", **comparison},
        "machine": info,
        "config": asdict(config),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: measure, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compression", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    parser.add_argument("--runs", type=int, default=None, help="timed latency invocations per variant and kernel set")
    parser.add_argument("--quick", action="store_true", help="small smoke configuration (see the module docstring)")
    parser.add_argument(
        "--project", type=Path, default=Path.cwd(), help="project folder whose data/models to reuse (default: cwd)"
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.runs is not None:
        if args.runs < 1:
            parser.error("--runs must be >= 1")
        config = Config(**{**asdict(config), "runs": args.runs})
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # Progress goes to stderr; TensorFlow's own INFO lines would bury it.
    for noisy in ("tensorflow", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    report = run(args.project.resolve(), config)
    out = args.out.resolve()
    write_report(out, report)
    print(render(report))
    print(f"\n{report['seconds']:.0f} s; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
