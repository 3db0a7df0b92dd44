"""The pipeline's stages: each reads its inputs under data/, calls the domain code, writes its outs.

The names here are the stage names everywhere: the dvc.yaml stages (`edgecompress stage NAME`),
the Prefect tasks and the MLflow metric prefixes. Every out is written beside its final place and
swapped in whole, so a failed stage leaves the previous outputs as they were.
"""

from __future__ import annotations

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


def prepare(layout: Layout, params: Params) -> dict[str, Any]:
    """data/raw and data/calibration from data.source."""
    from tasks import data

    return asdict(data.prepare(params.data, layout))


def train(layout: Layout, params: Params) -> dict[str, Any]:
    """data/models/float.keras trained on the train split."""
    from tasks import data
    from tasks.train import build_model, save_model, train_model

    split = data.load_split(layout.raw, "train", params.data.channels, params.data.image_size)
    model = build_model(split.x.shape[1:], len(split.class_names), params.train)
    result = train_model(model, split, params.train)
    save_model(model, layout.float_model)
    report = {**asdict(result), "class_names": list(split.class_names)}
    _write_json(layout.train_report, report)
    return {"parameters": result.parameters, "train_accuracy": result.train_accuracy}


def prune(layout: Layout, params: Params) -> dict[str, Any]:
    """data/models/pruned.keras: the float model pruned and fine-tuned, wrappers stripped."""
    from tasks import data
    from tasks.prune import prune_model
    from tasks.train import load_model, save_model

    split = data.load_split(layout.raw, "train", params.data.channels, params.data.image_size)
    model = load_model(layout.float_model)
    pruned, result = prune_model(model, split, params.prune, params.train.batch_size)
    save_model(pruned, layout.pruned_model)
    _write_json(layout.prune_report, asdict(result))
    return {"sparsity": result.sparsity, "target_sparsity": result.target_sparsity}


def quantize(layout: Layout, params: Params) -> dict[str, Any]:
    """data/tflite/model_float.tflite (reference) and model_int8.tflite (from the pruned model)."""
    from tasks import data
    from tasks.fsutil import staging_file
    from tasks.inference import TFLiteModel
    from tasks.quantize import to_float_tflite, to_int8_tflite
    from tasks.train import load_model

    calibration = data.load_calibration(layout, params.data)
    float_bytes = to_float_tflite(load_model(layout.float_model))
    int8_bytes = to_int8_tflite(load_model(layout.pruned_model), calibration, params.quantize)
    with staging_file(layout.float_tflite) as tmp_float, staging_file(layout.int8_tflite) as tmp_int8:
        tmp_float.write_bytes(float_bytes)
        tmp_int8.write_bytes(int8_bytes)
        int8 = TFLiteModel(tmp_int8)
        report = {
            "float_bytes": len(float_bytes),
            "int8_bytes": len(int8_bytes),
            "input_dtype": int8.input_dtype.name,
            "output_dtype": int8.output_dtype.name,
            "calibration_samples": len(calibration),
        }
    _write_json(layout.quantize_report, report)
    return report


def evaluate(layout: Layout, params: Params) -> dict[str, Any]:
    """data/reports/metrics.json: accuracy and size of every variant on the test split."""
    from tasks import data
    from tasks.evaluate import compare, keras_variant, tflite_variant

    test = data.load_split(layout.raw, "test", params.data.channels, params.data.image_size)
    prune_report = json.loads(layout.prune_report.read_text())
    variants = {
        "float": keras_variant(layout.float_model, test, params.evaluate),
        "pruned": {**keras_variant(layout.pruned_model, test, params.evaluate), "sparsity": prune_report["sparsity"]},
        "float_tflite": tflite_variant(layout.float_tflite, test, params.evaluate),
        "int8_tflite": tflite_variant(layout.int8_tflite, test, params.evaluate),
    }
    metrics = {"test_images": len(test.y), "variants": variants, "summary": compare(variants)}
    _write_json(layout.metrics, metrics)
    for name, values in variants.items():
        log.info(
            "%-12s accuracy %.4f  %9d bytes  %9d gzipped",
            name,
            values["accuracy"],
            values["size_bytes"],
            values["gzip_bytes"],
        )
    return metrics


STAGES: dict[str, StageFn] = {
    "prepare": prepare,
    "train": train,
    "prune": prune,
    "quantize": quantize,
    "evaluate": evaluate,
}
