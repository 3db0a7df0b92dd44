"""train stage: the float model from its source (tasks/stages/models.py), fitted on the training split."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tasks.fsutil import write_json
from tasks.layout import Layout
from tasks.params import Params, TrainParams
from tasks.stages import images, models
from tasks.stages.fit import compile_model, epoch_logger, keras, save_model, seed_everything

if TYPE_CHECKING:
    from tasks.stages.images import Images
    from tasks.stages.models import Built

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What training produced, besides the model."""

    parameters: int
    epochs: int
    train_accuracy: float | None  # None: not trained here (train.epochs 0)
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)


def train_model(built: Built, train: Images, params: TrainParams) -> TrainResult:
    """Fit the model on the training split, shuffled the same way on every run.

    A model with pretrained backbone weights follows the usual transfer-learning recipe: the head
    first with the backbone frozen (`epochs` at `learning_rate`), then the top `fine_tune_layers`
    of the backbone as well (`fine_tune_epochs` at `fine_tune_learning_rate`), its batch-norm
    layers kept frozen so their pretrained statistics survive small batches. Anything else trains
    whole. With `lr_schedule: cosine` each phase's rate decays to 0 over its epochs, so training ends
    on a settled model. `train.epochs: 0` keeps a given model as it is.
    """
    model = built.model
    if params.epochs == 0:
        log.info("train.epochs is 0: %s is compressed as it is", params.model)
        return TrainResult(int(model.count_params()), 0, None, 0.0)
    seed_everything(params.seed)
    started = time.perf_counter()
    curves: dict[str, list[float]] = {}
    transfer = bool(params.weights) and built.backbone_layers > 0
    phases = [("train", params.epochs, params.learning_rate, built.backbone_layers if transfer else 0)]
    if transfer and params.fine_tune_epochs:
        frozen = max(built.backbone_layers - params.fine_tune_layers, 0)
        phases.append(("fine-tune", params.fine_tune_epochs, params.fine_tune_learning_rate, frozen))
    batches = train.batches(params.batch_size, shuffle_seed=params.seed)
    for name, epochs, learning_rate, frozen in phases:
        k = keras()
        for index, layer in enumerate(model.layers):
            layer.trainable = index >= frozen and not (transfer and isinstance(layer, k.layers.BatchNormalization))
        rate: float | Any = learning_rate
        if params.lr_schedule == "cosine":
            steps = math.ceil(len(train) / params.batch_size) * epochs  # as tasks.stages.prune.schedule_steps counts
            rate = k.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
        compile_model(model, rate)
        history = model.fit(batches, epochs=epochs, verbose=0, callbacks=[epoch_logger(name, epochs)])
        for metric, values in history.history.items():
            curves.setdefault(metric, []).extend(float(v) for v in values)
    for layer in model.layers:
        layer.trainable = True  # pruning and QAT fine-tune the whole model
    return TrainResult(
        parameters=int(model.count_params()),
        epochs=params.epochs + (params.fine_tune_epochs if len(phases) > 1 else 0),
        train_accuracy=curves["accuracy"][-1],
        seconds=round(time.perf_counter() - started, 3),
        history=curves,
    )


def run(layout: Layout, params: Params) -> dict[str, Any]:
    """The train stage: data/models/float.keras from train.model, trained on the train split (or kept as given)."""
    fit, _ = images.load_fit_validation(layout, params.data)
    built = models.build(params.train, fit.shape, len(fit.class_names), layout.root)
    result = train_model(built, fit, params.train)
    save_model(built.model, layout.float_model)
    report = {
        **asdict(result),
        "model": params.train.model,
        "class_names": list(fit.class_names),
        "source_files": models.source_files(params.train, layout.root),
    }
    write_json(layout.train_report, report)
    return {"parameters": result.parameters, "train_accuracy": result.train_accuracy}


def is_stale(layout: Layout, params: Params) -> str:
    """A model, weights file or builder module named in params is outside DVC's deps: compare its hash."""
    if not layout.train_report.is_file():
        return ""
    recorded = json.loads(layout.train_report.read_text()).get("source_files", {})
    current = models.source_files(params.train, layout.root)
    changed = [path for path, md5 in current.items() if recorded.get(path) != md5]
    return f"train.model/weights changed: {', '.join(changed)}" if changed else ""
