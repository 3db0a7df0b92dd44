"""evaluate stage: accuracy and size of every variant on the test split."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tasks.fsutil import write_csv, write_json
from tasks.layout import Layout
from tasks.params import EvaluateParams, Params
from tasks.stages import images
from tasks.stages.fit import accuracy, load_model
from tasks.stages.footprint import keras_macs, tflite_footprint
from tasks.stages.images import Images
from tasks.stages.inference import TFLiteModel

log = logging.getLogger(__name__)


def file_sizes(path: Path) -> dict[str, int]:
    """Bytes on disk, and after gzip -9: what a sparse model saves in transfer and storage."""
    data = path.read_bytes()
    return {"size_bytes": len(data), "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0))}


def keras_variant(path: Path, test: Images, params: EvaluateParams) -> dict[str, Any]:
    """Accuracy, sizes and multiply-accumulates of a saved Keras model (its parameters held as float32)."""
    model = load_model(path)
    parameters = int(model.count_params())
    return {
        "accuracy": round(accuracy(model, test, params.batch_size), 6),
        "parameters": parameters,
        "param_bytes": 4 * parameters,
        # Counted as tflite_footprint counts the .tflite variants: the same figure for the same layers.
        "macs": keras_macs(model),
        **file_sizes(path),
    }


def tflite_variant(path: Path, test: Images, params: EvaluateParams) -> dict[str, Any]:
    """Accuracy, loss, size and I/O types of a .tflite model, run on LiteRT."""
    model = TFLiteModel(path, num_threads=params.num_threads)
    loss, acc = model.evaluate(test.batches(params.batch_size))
    # Latency as a device would see it: one image at a time, one thread.
    sample = test.head(1).arrays()[0][0]
    latency = TFLiteModel(path, num_threads=1).latency_ms(sample, runs=params.latency_runs)
    return {
        "accuracy": round(acc, 6),
        "loss": round(loss, 6),
        "latency_ms": round(latency, 4),
        **file_sizes(path),
        # What the device holds and computes, dense, beside the download size above.
        **tflite_footprint(path).to_dict(),
        "input_dtype": model.input_dtype.name,
        "output_dtype": model.output_dtype.name,
    }


def predictions(path: Path, test: Images, params: EvaluateParams) -> list[dict[str, str]]:
    """One row per test image, its class and the class the .tflite predicts: a confusion matrix's data."""
    model = TFLiteModel(path, num_threads=params.num_threads)
    rows: list[dict[str, str]] = []
    for pixels, labels in test.batches(params.batch_size).as_numpy_iterator():
        predicted = np.argmax(model.predict(pixels, batch_size=len(pixels)), axis=-1)
        rows.extend(
            {"actual": test.class_names[int(a)], "predicted": test.class_names[int(p)]}
            for a, p in zip(labels, predicted, strict=True)
        )
    return rows


def compare(variants: dict[str, dict[str, Any]], shipped: str) -> dict[str, float]:
    """Headline ratios of the shipped model against the float .tflite reference."""
    reference, candidate = variants["float_tflite"], variants[shipped]
    return {
        "size_ratio": round(candidate["size_bytes"] / reference["size_bytes"], 4),
        "gzip_ratio": round(candidate["gzip_bytes"] / reference["gzip_bytes"], 4),
        "accuracy_drop": round(reference["accuracy"] - candidate["accuracy"], 6),
    }


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The shipped model's figures that `dvc metrics show` prints: a few flat keys, one short row."""
    variants, shipped = metrics["variants"], metrics["variants"][metrics["shipped"]]
    return {
        "accuracy": shipped["accuracy"],
        "float_accuracy": variants["float_tflite"]["accuracy"],
        "accuracy_drop": metrics["summary"]["accuracy_drop"],
        # What the device holds and computes, and the download (the file's size is in metrics.json).
        "param_bytes": shipped["param_bytes"],
        "macs": shipped["macs"],
        "gzip_bytes": shipped["gzip_bytes"],
        "sparsity": variants["pruned"]["sparsity"],
    }


def run(layout: Layout, params: Params) -> dict[str, Any]:
    """The evaluate stage: data/reports/metrics.json, accuracy and size of every variant on the test split
    (summary.json: the shipped model's, flat)."""
    test = images.load_test(layout, params.data)
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
    write_json(layout.metrics, metrics)
    write_json(layout.summary, headline(metrics))
    write_csv(layout.confusion, predictions(layout.quantized_tflite(mode), test, params.evaluate))
    for name, values in variants.items():
        log.info(
            "%-12s accuracy %.4f  %9d parameter bytes  %11d MACs  %9d bytes  %9d gzipped",
            name,
            values["accuracy"],
            values["param_bytes"],
            values["macs"],
            values["size_bytes"],
            values["gzip_bytes"],
        )
    return metrics
