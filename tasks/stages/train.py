"""train stage: the float model from its source (tasks/stages/models.py), fitted on the training split."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.errors import StageError
from tasks.fsutil import write_json
from tasks.layout import Layout
from tasks.params import Params, TrainParams
from tasks.stages import images, models
from tasks.stages.fit import accuracy, compile_model, epoch_logger, keras, save_model, seed_everything

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
    validation_accuracy: float
    # No wall time here: train.json is a DVC out that `reproduce` compares byte for byte, and the
    # stage's seconds are recorded beside the run (MLflow's seconds.train, the time table).
    history: dict[str, list[float]] = field(default_factory=dict)


# Validation batches: one large batch per step; scoring needs no small batches, and fewer steps trace less.
VALIDATION_BATCH = 256

# What each train.input_scale says the model takes, for the messages.
_RANGES = {"pixels": "0..255", "unit": "0..1", "symmetric": "-1..1"}

# How many standard errors above chance a model must score to be told apart from guessing (below).
GUESS_MARGIN_SE = 3.0


def train_model(built: Built, train: Images, params: TrainParams, validation: Images) -> TrainResult:
    """Fit the model on the training split, shuffled the same way on every run.

    A model with pretrained backbone weights follows the usual transfer-learning recipe: the head
    first with the backbone frozen (`epochs` at `learning_rate`), then the top `fine_tune_layers`
    of the backbone as well (`fine_tune_epochs` at `fine_tune_learning_rate`), its batch-norm
    layers kept frozen so their pretrained statistics survive small batches. Anything else trains
    whole. With `lr_schedule: cosine` each phase's rate decays to 0 over its epochs, so training ends
    on a settled model. `train.epochs: 0` keeps a given model as it is. Every epoch ends with the
    model scored on `validation` (held out from fitting), logged beside the training accuracy.
    """
    model = built.model
    if params.epochs == 0:
        measured = accuracy(model, validation, VALIDATION_BATCH)
        log.info(
            "train.epochs is 0: %s is compressed as it is; it scores %.4f on the validation split (%d images)",
            params.model,
            measured,
            len(validation),
        )
        return TrainResult(int(model.count_params()), 0, None, round(measured, 6))
    seed_everything(params.seed)
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
        history = model.fit(
            batches,
            epochs=epochs,
            validation_data=validation.batches(VALIDATION_BATCH),
            verbose=0,
            callbacks=[epoch_logger(name, epochs)],
        )
        for metric, values in history.history.items():
            curves.setdefault(metric, []).extend(float(v) for v in values)
    for layer in model.layers:
        layer.trainable = True  # pruning and QAT fine-tune the whole model
    return TrainResult(
        parameters=int(model.count_params()),
        epochs=params.epochs + (params.fine_tune_epochs if len(phases) > 1 else 0),
        train_accuracy=curves["accuracy"][-1],
        validation_accuracy=round(curves["val_accuracy"][-1], 6),
        history=curves,
    )


def chance_level(labels: np.ndarray, classes: int) -> float:
    """The accuracy of always answering the most common class: 1/classes when the classes are balanced."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes)
    return float(counts.max() / counts.sum()) if counts.sum() else 0.0


def guess_bound(chance: float, images: int) -> float:
    """The validation accuracy a model must exceed to be told apart from one that guesses.

    A model that answers without looking at the image is right on each image with probability at
    most `chance`, so on `images` images its accuracy has a standard error of at most
    sqrt(chance (1 - chance) / images); a guess stays below chance plus GUESS_MARGIN_SE of them
    about 999 times in 1,000 (the normal approximation to the binomial). The margin shrinks as the
    validation split grows: on the digits' 144 validation images (chance 0.104) the bound is 0.181,
    on 400 images of 8 balanced classes 0.175. Above 1, the split is too small to tell anything apart.
    """
    if images == 0:
        return math.inf
    return chance + GUESS_MARGIN_SE * math.sqrt(chance * (1.0 - chance) / images)


def near_chance(params: TrainParams, result: TrainResult, validation: Images, fit_images: int) -> str:
    """Why the float model may not go on: it scores at or near chance on the validation split ('' when it does not)."""
    classes = len(validation.class_names)
    chance = chance_level(validation.labels, classes)
    bound = guess_bound(chance, len(validation))
    if bound >= 1.0:
        log.warning(
            "train: the validation split (%d images) is too small to tell the model from a guess; not checked",
            len(validation),
        )
        return ""
    if result.validation_accuracy > bound:
        return ""
    head = (
        f"train: the float model ({params.model}) scores {result.validation_accuracy:.3f} on the validation split "
        f"({len(validation)} images), at or near chance ({chance:.3f}, the most common of its {classes} classes' "
        f"share; a guess scores up to {bound:.3f})"
    )
    rate = f"train.learning_rate ({params.learning_rate:g}) too high or too low"
    epochs = f"train.epochs ({params.epochs}) too few"
    data = f"too little data ({fit_images} training images, about {fit_images // classes} per class)"
    scale = f"train.input_scale {params.input_scale} ({_RANGES[params.input_scale]})"
    others = " or ".join(f"{name} ({text})" for name, text in _RANGES.items() if name != params.input_scale)
    if params.kind in ("file", "python") and params.epochs == 0:
        causes = (
            f"as given, before any training, so the likely cause is {scale} where the model expects {others}, or "
            "its classes in another order than the class folders' sorted names; set the scale it was trained with, "
            "or fine-tune it (train.epochs > 0)"
        )
    elif params.kind in ("file", "python"):
        causes = (
            f"likely causes: {scale} where the model expects {others}, {rate}, {epochs}, or {data}; check the "
            "scale first, then try train.learning_rate 0.001 with more epochs"
        )
    else:
        causes = f"likely causes: {rate}, {epochs}, or {data}; {rate_advice(params.learning_rate)}"
    return f"{head}; {causes}; stopped before compression (train.stop_near_chance: false goes on anyway)"


# Where the built-in models train (the cnn at 0.002, the default; MobileNet from scratch at 0.002
# with a cosine schedule: README, "Your own model").
USUAL_RATES = (0.001, 0.003)


def rate_advice(rate: float) -> str:
    """What to try for a built-in model at chance, given the learning rate it was trained at."""
    low, high = USUAL_RATES
    if rate > high:
        return f"try a lower train.learning_rate, 0.002 ({low:g} to {high:g}), then more epochs"
    if rate < low:
        return f"try a higher train.learning_rate, 0.002 ({low:g} to {high:g}), then more epochs"
    return (
        f"the rate is in the usual range ({low:g} to {high:g}), so try train.lr_schedule cosine with more epochs, "
        "or more images"
    )


def check_given_model(layout: Layout, params: Params) -> None:
    """A model compressed as it is (train.epochs 0) already meets gate.min_accuracy on the validation split.

    Such a model is what the user says is finished, so it should score what the gate asks before
    anything changes it; pruning's and clustering's fine-tuning can win back what a wrong input scale
    lost, and the gate, which compares the shipped model with the float one, would then pass a model
    that was broken as given. StageError says so before compression starts. Read from train.json,
    so it holds for a train stage that DVC found up to date too; gate.min_accuracy null skips it.
    """
    threshold = params.gate.min_accuracy
    if params.train.epochs or threshold is None:
        return
    measured = json.loads(layout.train_report.read_text())["validation_accuracy"]
    if measured >= threshold:
        return
    raise StageError(
        f"train: {params.train.model} as given (train.epochs 0) scores {measured:.3f} on the validation split, "
        f"below gate.min_accuracy {threshold:g}, before any compression (whose fine-tuning would hide it): check "
        f"train.input_scale {params.train.input_scale} ({_RANGES[params.train.input_scale]}) against what the model "
        "was trained on and that its classes follow the class folders' sorted names; or fine-tune it "
        "(train.epochs > 0), or lower gate.min_accuracy"
    )


def run(layout: Layout, params: Params) -> dict[str, Any]:
    """The train stage: data/models/float.keras from train.model, trained on the train split (or kept as given)."""
    fit, validation = images.load_fit_validation(layout, params.data)
    built = models.build(params.train, fit.shape, len(fit.class_names), layout.root)
    result = train_model(built, fit, params.train, validation)
    chance = chance_level(validation.labels, len(fit.class_names))
    bound = guess_bound(chance, len(validation))
    if params.train.stop_near_chance:
        reason = near_chance(params.train, result, validation, len(fit))
        if reason:
            raise StageError(reason)  # nothing written: the previous float model, if any, stays
    save_model(built.model, layout.float_model)
    report = {
        **asdict(result),
        "validation_images": len(validation),
        "chance": round(chance, 6),
        "guess_bound": round(bound, 6) if bound < 1.0 else None,  # None: too few images to tell
        "model": params.train.model,
        "class_names": list(fit.class_names),
        "source_files": models.source_files(params.train, layout.root),
    }
    write_json(layout.train_report, report)
    return {
        "parameters": result.parameters,
        "train_accuracy": result.train_accuracy,
        "validation_accuracy": result.validation_accuracy,
    }


def is_stale(layout: Layout, params: Params) -> str:
    """A model, weights file or builder module named in params is outside DVC's deps: compare its hash."""
    if not layout.train_report.is_file():
        return ""
    recorded = json.loads(layout.train_report.read_text()).get("source_files", {})
    current = models.source_files(params.train, layout.root)
    changed = [path for path, md5 in current.items() if recorded.get(path) != md5]
    return f"train.model/weights changed: {', '.join(changed)}" if changed else ""
