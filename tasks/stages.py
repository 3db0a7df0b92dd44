"""The pipeline's stages: each reads its inputs under data/, calls the domain code, writes its outs.

The names here are the stage names everywhere: the dvc.yaml stages (`edgecompress stage NAME`),
the Prefect tasks and the MLflow metric prefixes. Every out is written beside its final place and
swapped in whole, so a failed stage leaves the previous outputs as they were.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from tasks.layout import Layout
from tasks.params import Params

log = logging.getLogger(__name__)

StageFn = Callable[[Layout, Params], dict[str, Any]]


def _write_json(path: Any, payload: dict[str, Any]) -> None:
    from tasks.fsutil import write_text

    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _write_csv(path: Any, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """A table for `dvc plots` (csv, not a join: tensor names may hold commas); `columns` when empty."""
    from tasks.fsutil import write_text

    buffer = io.StringIO()
    fields = list(rows[0]) if rows else columns or ["empty"]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def prepare(layout: Layout, params: Params) -> dict[str, Any]:
    """data/raw and data/calibration from data.source."""
    from tasks import data

    return asdict(data.prepare(params.data, layout))


def train(layout: Layout, params: Params) -> dict[str, Any]:
    """data/models/float.keras from train.model, trained on the train split (or kept as given)."""
    from tasks import data, models
    from tasks.train import save_model, train_model

    fit, _ = data.load_fit_validation(layout, params.data)
    built = models.build(params.train, fit.shape, len(fit.class_names), layout.root)
    result = train_model(built, fit, params.train)
    save_model(built.model, layout.float_model)
    report = {
        **asdict(result),
        "model": params.train.model,
        "class_names": list(fit.class_names),
        "source_files": models.source_files(params.train, layout.root),
    }
    _write_json(layout.train_report, report)
    return {"parameters": result.parameters, "train_accuracy": result.train_accuracy}


def prune(layout: Layout, params: Params) -> dict[str, Any]:
    """data/models/pruned.keras: the float model pruned and fine-tuned, wrappers stripped."""
    from tasks import data
    from tasks.prune import prune_model
    from tasks.train import load_model, save_model

    fit, _ = data.load_fit_validation(layout, params.data)
    model = load_model(layout.float_model)
    pruned, result = prune_model(model, fit, params.prune, params.train.batch_size, params.train.seed)
    save_model(pruned, layout.pruned_model)
    _write_json(layout.prune_report, asdict(result))
    _write_csv(layout.sparsity, [{"layer": name, "sparsity": value} for name, value in result.layers.items()])
    return {"sparsity": result.sparsity, "target_sparsity": result.target_sparsity}


def cluster(layout: Layout, params: Params) -> dict[str, Any]:
    """data/models/clustered.keras: the pruned model with clustered weights (or the pruned model as it is)."""
    from tasks import data
    from tasks.cluster import cluster_model
    from tasks.train import load_model, save_model

    fit, _ = data.load_fit_validation(layout, params.data)
    pruned = tuple(json.loads(layout.prune_report.read_text())["pruned_weights"])
    clustered, result = cluster_model(
        load_model(layout.pruned_model), fit, params.cluster, params.train.batch_size, params.train.seed, pruned
    )
    save_model(clustered, layout.clustered_model)
    _write_json(layout.cluster_report, asdict(result))
    return {"enabled": result.enabled, "sparsity_after": result.sparsity_after}


def quantize(layout: Layout, params: Params) -> dict[str, Any]:
    """data/tflite/model_float.tflite (reference), the shipped quantized model, and the debugger report."""
    from tasks import data
    from tasks.fsutil import staging_file
    from tasks.inference import TFLiteModel
    from tasks.quantize import quantize_model, to_float_tflite
    from tasks.train import load_model

    settings = params.quantize
    calibration = data.load_calibration(layout, params.data)
    fit, validation = data.load_fit_validation(layout, params.data)
    # Converted once: the reference every attempt is scored against, and the file written.
    float_bytes = to_float_tflite(load_model(layout.float_model))
    compressed = load_model(layout.clustered_model)
    prune_report = json.loads(layout.prune_report.read_text())
    clustered = json.loads(layout.cluster_report.read_text())["enabled"]
    outcome = quantize_model(
        float_bytes,
        compressed,
        fit,
        validation,
        calibration,
        settings,
        params.train.batch_size,
        params.train.seed,
        tuple(prune_report["pruned_weights"]),
        clustered,
    )
    shipped = layout.quantized_tflite(settings.ptq_mode)
    with staging_file(layout.float_tflite) as tmp_float, staging_file(shipped) as tmp_shipped:
        tmp_float.write_bytes(float_bytes)
        tmp_shipped.write_bytes(outcome.model)
        model = TFLiteModel(tmp_shipped)
        report = {
            "method": outcome.method,
            "ptq_mode": settings.ptq_mode,
            "choice": outcome.choice,
            "float_bytes": len(float_bytes),
            "quantized_bytes": len(outcome.model),
            "input_dtype": model.input_dtype.name,
            "output_dtype": model.output_dtype.name,
            # With uint8 I/O and scale 1, a camera frame is the input as it is (Coral's convention).
            "input_scale": model.input_quantization[0],
            "input_zero_point": model.input_quantization[1],
            "takes_uint8_frames": model.takes_frames,
            "calibration_samples": len(calibration),
            "sparsity_before": outcome.sparsity_before,
            "sparsity_after": outcome.sparsity_after,
            "trials": [asdict(trial) for trial in outcome.trials],
        }
    _write_debug_report(layout, params, compressed, calibration)
    _write_json(layout.quantize_report, report)
    return {key: report[key] for key in ("method", "ptq_mode", "quantized_bytes", "input_dtype")}


def _write_debug_report(layout: Layout, params: Params, model: Any, calibration: Any) -> None:
    """data/reports/quant_debug.csv and .png: per-layer int8 error (a note when not applicable)."""
    from tasks.fsutil import staging_file
    from tasks.quantize import debug_int8
    from tasks.report import plot_worst_layers

    settings = params.quantize
    rows: list[dict[str, Any]] = []
    note = ""
    if not settings.debug_layers:
        note = "quantize.debug_layers is false"
    elif settings.ptq_mode != "int8":
        note = f"the debugger measures int8 error; ptq_mode is {settings.ptq_mode}"
    else:
        rows = debug_int8(model, calibration, settings)
    _write_csv(layout.quant_debug_csv, rows, ["op_name", "tensor_name", "tensor_idx", "rmse_per_scale"])
    with staging_file(layout.quant_debug_plot) as tmp:
        plot_worst_layers(rows, tmp, note)


def evaluate(layout: Layout, params: Params) -> dict[str, Any]:
    """data/reports/metrics.json: accuracy and size of every variant on the test split."""
    from tasks import data
    from tasks.evaluate import compare, keras_variant, predictions, tflite_variant

    test = data.load_test(layout, params.data)
    prune_report = json.loads(layout.prune_report.read_text())
    mode = params.quantize.ptq_mode
    shipped = f"{mode}_tflite"
    variants = {
        "float": keras_variant(layout.float_model, test, params.evaluate),
        "pruned": {**keras_variant(layout.pruned_model, test, params.evaluate), "sparsity": prune_report["sparsity"]},
        **(
            {"clustered": keras_variant(layout.clustered_model, test, params.evaluate)}
            if json.loads(layout.cluster_report.read_text())["enabled"]
            else {}
        ),
        "float_tflite": tflite_variant(layout.float_tflite, test, params.evaluate),
        shipped: tflite_variant(layout.quantized_tflite(mode), test, params.evaluate),
    }
    metrics = {
        "test_images": len(test),
        "shipped": shipped,
        "variants": variants,
        "summary": compare(variants, shipped),
    }
    _write_json(layout.metrics, metrics)
    _write_csv(layout.confusion, predictions(layout.quantized_tflite(mode), test, params.evaluate))
    for name, values in variants.items():
        log.info(
            "%-12s accuracy %.4f  %9d bytes  %9d gzipped",
            name,
            values["accuracy"],
            values["size_bytes"],
            values["gzip_bytes"],
        )
    return metrics


def edgetpu(layout: Layout, params: Params) -> dict[str, Any]:
    """data/tflite/edgetpu/ (compiled model and log, when the compiler ran) and data/reports/edgetpu.json."""
    from tasks.edgetpu import check_and_compile
    from tasks.fsutil import replace_dir, staging_dir

    with staging_dir(layout.edgetpu_dir) as out:
        report = check_and_compile(layout.quantized_tflite(params.quantize.ptq_mode), out, params.edgetpu)
        replace_dir(out, layout.edgetpu_dir)
    _write_json(layout.edgetpu_report, report)
    return {key: report[key] for key in ("source", "mapped_fraction", "subgraphs", "compiled")}


def train_is_stale(layout: Layout, params: Params) -> str:
    """A model, weights file or builder module named in params is outside DVC's deps: compare its hash."""
    from tasks.models import source_files

    if not layout.train_report.is_file():
        return ""
    recorded = json.loads(layout.train_report.read_text()).get("source_files", {})
    changed = [path for path, md5 in source_files(params.train, layout.root).items() if recorded.get(path) != md5]
    return f"train.model/weights changed: {', '.join(changed)}" if changed else ""


def prepare_is_stale(layout: Layout, params: Params) -> str:
    """A user's folder or a TFDS dataset lives outside the project, where DVC cannot hash it."""
    if params.data.kind == "digits":
        return ""
    # prepare re-reads it every run; its outs hash the same when nothing changed, so the stages
    # after it still skip.
    return f"data.source is {params.data.kind}: re-read every run"


def edgetpu_is_stale(layout: Layout, params: Params) -> str:
    """The compiler is part of the machine, not of the project: notice when it has appeared."""
    from tasks.edgetpu import find_compiler

    if not layout.edgetpu_report.is_file() or json.loads(layout.edgetpu_report.read_text()).get("compiled"):
        return ""
    return "edgetpu_compiler is now available" if find_compiler(params.edgetpu.compiler) else ""


# What DVC cannot see: a stage may be stale for reasons outside the project's files.
OUTSIDE_CHANGES: dict[str, Callable[[Layout, Params], str]] = {
    "prepare": prepare_is_stale,
    "train": train_is_stale,
    "edgetpu": edgetpu_is_stale,
}

STAGES: dict[str, StageFn] = {
    "prepare": prepare,
    "train": train,
    "prune": prune,
    "cluster": cluster,
    "quantize": quantize,
    "evaluate": evaluate,
    "edgetpu": edgetpu,
}
