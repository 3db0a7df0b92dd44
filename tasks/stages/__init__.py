"""The pipeline's stages, one module per stage: each reads its inputs under data/ and writes its outs.

STAGES names them as everything else does: the dvc.yaml stages (`edgecompress stage NAME`), the
Prefect tasks and the MLflow metric prefixes. Each stage's `run(layout, params)` writes every out
beside its final place and swaps it in whole, so a failed stage leaves the previous outputs as they
were. Beside them: where models come from (models), how images are read (images), what fitting
shares (fit), the .tflite runtime (inference) and the gate that judges the shipped model (gate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import cluster, evaluate, prepare, prune, quantize, train
from tasks.stages.edgetpu import stage as edgetpu_stage

StageFn = Callable[[Layout, Params], dict[str, Any]]

STAGES: dict[str, StageFn] = {
    "prepare": prepare.run,
    "train": train.run,
    "prune": prune.run,
    "cluster": cluster.run,
    "quantize": quantize.run,
    "evaluate": evaluate.run,
    "edgetpu": edgetpu_stage.run,
}

# What DVC cannot see: a stage may be stale for reasons outside the project's files.
OUTSIDE_CHANGES: dict[str, Callable[[Layout, Params], str]] = {
    "prepare": prepare.is_stale,
    "train": train.is_stale,
    "edgetpu": edgetpu_stage.is_stale,
}
