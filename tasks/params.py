"""Typed, validated settings loaded once from params.yaml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.errors import ParamsError, clip, echo

PARAMS_FILE = "params.yaml"

# Patterns are matched whole (re.fullmatch): a `$` would also accept a trailing newline ("cnn\n"),
# which passes here and breaks whatever reads the value later.
_SOURCE = re.compile(r"digits|folder:.+|tfds:[\w/.:-]+")


class _Section(BaseModel):
    # No defaults in code: params.yaml is the only source of truth, so a missing key is an error.
    # frozen: a stage cannot change its settings behind the lock file's back;
    # forbid: a typo in params.yaml is an error, not a silently ignored key.
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataParams(_Section):
    """Where the images come from and how they are split."""

    source: str
    image_size: int = Field(ge=4, le=1024)
    channels: Literal[1, 3]
    test_fraction: float = Field(gt=0.0, lt=1.0)
    validation_fraction: float = Field(gt=0.0, lt=1.0)
    calibration_size: int = Field(ge=1, le=100_000)
    min_images_per_class: int = Field(ge=1, le=1_000_000)
    seed: int = Field(ge=0)

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if not _SOURCE.fullmatch(value):
            raise ValueError(f"must be 'digits', 'folder:<path>' or 'tfds:<name>' (got {echo(value)})")
        return value

    @property
    def kind(self) -> str:
        """The source kind: digits, folder or tfds."""
        return self.source.split(":", 1)[0]

    @property
    def location(self) -> str:
        """The part after 'folder:' or 'tfds:' (empty for digits)."""
        return self.source.split(":", 1)[1] if ":" in self.source else ""


_MODEL = re.compile(r"cnn|mobilenet_v2|mobilenet_v3_small|file:.+|python:[A-Za-z_][\w.]*:[A-Za-z_]\w*")
BUILT_IN_MODELS = ("cnn", "mobilenet_v2", "mobilenet_v3_small")


class TrainParams(_Section):
    """Where the float model comes from (tasks/stages/models.py) and how it is trained."""

    model: str
    weights: str | None
    alpha: float = Field(gt=0.0, le=4.0)
    input_scale: Literal["pixels", "unit", "symmetric"]
    epochs: int = Field(ge=0, le=10_000)
    batch_size: int = Field(ge=1, le=65_536)
    learning_rate: float = Field(gt=0.0, le=1.0)
    lr_schedule: Literal["constant", "cosine"]
    fine_tune_epochs: int = Field(ge=0, le=10_000)
    fine_tune_layers: int = Field(ge=1, le=100_000)
    fine_tune_learning_rate: float = Field(gt=0.0, le=1.0)
    conv_filters: int = Field(ge=1, le=1024)
    dense_units: int = Field(ge=1, le=65_536)
    stop_near_chance: bool
    seed: int = Field(ge=0)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if not _MODEL.fullmatch(value):
            raise ValueError(
                f"must be cnn, mobilenet_v2, mobilenet_v3_small, file:<path> or python:<module>:<function> "
                f"(got {echo(value)})"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        mobilenet = self.model.startswith("mobilenet")
        if self.weights and not mobilenet:
            raise ValueError(
                f"weights is for the mobilenet_* backbones; {clip(self.model)} brings its own (set it to null)"
            )
        if self.fine_tune_epochs and not self.weights:
            raise ValueError("fine_tune_epochs needs pretrained weights (train.weights); without them all layers train")
        if self.model in BUILT_IN_MODELS and self.input_scale != "pixels":
            raise ValueError(f"input_scale: {self.model} normalises its own input; use pixels")
        if self.epochs == 0 and self.model in BUILT_IN_MODELS:
            raise ValueError(f"epochs: 0 keeps a given model as it is; {self.model} must be trained (epochs >= 1)")
        return self

    @property
    def kind(self) -> str:
        """The source kind: cnn, mobilenet_v2, mobilenet_v3_small, file or python."""
        return self.model.split(":", 1)[0]


class PruneParams(_Section):
    """Magnitude pruning (tfmot's PolynomialDecay schedule) or channel pruning, then fine-tuning.

    Each method reads its own keys and ignores the other's: `magnitude` reads initial_sparsity,
    final_sparsity, frequency and min_layer_weights; `channels` reads channel_fraction,
    channel_multiple, distill_weight and distill_temperature. Every key is still range-checked (a
    typo is an error whichever method runs); the rules between keys apply only to the method that
    reads them.
    """

    # The keys each method reads (and the other ignores).
    METHOD_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "magnitude": ("initial_sparsity", "final_sparsity", "frequency", "min_layer_weights"),
        "channels": ("channel_fraction", "channel_multiple", "distill_weight", "distill_temperature"),
    }

    enabled: bool
    method: Literal["magnitude", "channels"]
    initial_sparsity: float = Field(ge=0.0, lt=1.0)
    final_sparsity: float = Field(ge=0.0, lt=1.0)
    frequency: int = Field(ge=1)
    min_layer_weights: int = Field(ge=0)
    channel_fraction: float = Field(ge=0.0, lt=1.0)
    channel_multiple: int = Field(ge=1, le=1024)
    distill_weight: float = Field(ge=0.0, le=1.0)
    distill_temperature: float = Field(ge=1.0, le=100.0)
    epochs: int = Field(ge=1, le=10_000)
    learning_rate: float = Field(gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _ramp_goes_up(self) -> PruneParams:
        # A ramp that channel pruning never runs is not a reason to refuse the run.
        if self.method == "magnitude" and self.initial_sparsity > self.final_sparsity:
            raise ValueError(
                f"initial_sparsity ({self.initial_sparsity}) must not exceed final_sparsity ({self.final_sparsity})"
            )
        return self


class ClusterParams(_Section):
    """Weight clustering (tfmot) after pruning: each large kernel keeps number_of_clusters values."""

    enabled: bool
    number_of_clusters: int = Field(ge=2, le=256)
    centroid_init: Literal["kmeans_plus_plus", "linear", "density_based", "random"]
    epochs: int = Field(ge=1, le=10_000)
    learning_rate: float = Field(gt=0.0, le=1.0)
    min_layer_weights: int = Field(ge=0)


class QuantizeParams(_Section):
    """How the shipped model is quantized: PTQ, QAT, or an accuracy-aware choice between them."""

    method: Literal["ptq", "qat", "auto"]
    ptq_mode: Literal["int8", "dynamic_range", "float16"]
    io_dtype: Literal["int8", "uint8"]
    qat_layers: tuple[str, ...]
    qat_epochs: int = Field(ge=1, le=1000)
    qat_learning_rate: float = Field(gt=0.0, le=1.0)
    tolerable_drop: float = Field(ge=0.0, le=1.0)
    max_trials: int = Field(ge=1, le=20)
    debug_layers: bool
    batch_size: int | None = Field(ge=1, le=4096)

    @model_validator(mode="after")
    def _int8_for_training(self) -> QuantizeParams:
        if self.method != "ptq" and self.ptq_mode != "int8":
            raise ValueError(f"method {self.method} always makes an int8 model; set ptq_mode: int8")
        return self


class EvaluateParams(_Section):
    """How the variants are scored."""

    batch_size: int = Field(ge=1, le=65_536)
    num_threads: int = Field(ge=1, le=256)
    latency_runs: int = Field(ge=1, le=100_000)


class EdgeTPUParams(_Section):
    """Edge TPU compilation: the offline preflight always, edgetpu_compiler when it is installed."""

    compiler: str | None
    require_compiler: bool
    min_runtime_version: int = Field(ge=10, le=16)
    multiple_subgraphs: bool
    timeout_s: float = Field(gt=0.0, le=3600.0)


class GateParams(_Section):
    """Thresholds the shipped int8 model must meet; null switches a check off."""

    min_accuracy: float | None = Field(ge=0.0, le=1.0)
    max_accuracy_drop: float | None = Field(ge=0.0, le=1.0)
    max_relative_drop: float | None = Field(ge=0.0, le=1.0)
    max_regression_vs_champion: float | None = Field(ge=0.0, le=1.0)
    max_size_bytes: int | None = Field(ge=1)
    max_latency_ms: float | None = Field(gt=0.0)
    min_edgetpu_mapped_fraction: float | None = Field(ge=0.0, le=1.0)
    max_edgetpu_subgraphs: int | None = Field(ge=1)
    max_edgetpu_off_chip_bytes: int | None = Field(ge=0)


_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class RegistryParams(_Section):
    """Where a passing candidate is registered, and whether it is promoted automatically."""

    model_name: str = Field(max_length=200)
    auto_promote: bool

    @field_validator("model_name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _MODEL_NAME.fullmatch(value):
            raise ValueError(
                f"must start with a letter or digit and hold only letters, digits, '_', '.' and '-' (got {echo(value)})"
            )
        return value


class RetrainParams(_Section):
    """Scheduled retraining: when, how long a second run waits, where outputs go after a success."""

    cron: str
    wait_s: float = Field(ge=0.0, le=86_400.0)
    push: bool

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        problem = cron_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def cron_problem(expression: str) -> str:
    """Why `expression` is not a schedule Prefect will run ('' when it is one).

    croniter is the parser Prefect's CronSchedule uses (vendored there), so what passes here is what
    `serve` can schedule; Prefect also refuses croniter's random (R) and hashed (H) extensions.
    """
    from croniter import croniter

    fields = expression.split()
    if len(fields) != 5 or not croniter.is_valid(expression) or any(f.upper() in ("R", "H") for f in fields):
        return (
            f"{echo(expression)} is not a 5-field cron expression (minute hour day-of-month month day-of-week), "
            "e.g. '0 3 * * *' for 03:00 every day"
        )
    return ""


def check_cron(expression: str) -> str:
    """The expression, or ParamsError naming the problem (for `serve --cron`)."""
    problem = cron_problem(expression)
    if problem:
        raise ParamsError(f"--cron: {problem}")
    return expression


class Params(_Section):
    """All settings, one section per stage."""

    data: DataParams
    train: TrainParams
    prune: PruneParams
    cluster: ClusterParams
    quantize: QuantizeParams
    evaluate: EvaluateParams
    edgetpu: EdgeTPUParams
    gate: GateParams
    registry: RegistryParams
    retrain: RetrainParams

    def flat(self) -> dict[str, Any]:
        """Params as {'section.key': value}, the form DVC and MLflow use."""
        return {
            f"{section}.{key}": value for section, values in self.model_dump().items() for key, value in values.items()
        }


def _describe(error: ValidationError, origin: str) -> str:
    """One line naming the first offending key and what is allowed."""
    first = error.errors()[0]
    key = clip(".".join(str(part) for part in first["loc"]))
    if first["type"] == "missing":
        return f"{origin}: missing key '{key}' (every key is required; see the project's params.yaml)"
    if first["type"] == "extra_forbidden":
        section = first["loc"][0] if len(first["loc"]) > 1 else None
        model: type[BaseModel] = Params
        if section is not None and section in Params.model_fields:
            annotation = Params.model_fields[str(section)].annotation
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
            model = annotation
        allowed = ", ".join(model.model_fields)
        return f"{origin}: unknown key '{key}' (allowed: {allowed})"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error":  # our own validators already quote the value
        return f"{origin}: {key}: {message}"
    return f"{origin}: {key}: {message} (got {echo(first.get('input'))})"


def parse_params(raw: dict[str, Any], origin: str = PARAMS_FILE) -> Params:
    """Validate a params mapping; raise ParamsError naming the key on bad input."""
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_describe(error, origin)) from None


def read_params_file(path: Path) -> dict[str, Any]:
    """Read params.yaml as a plain mapping."""
    if not path.is_file():
        raise ParamsError(f"{path}: not found (run from the project folder or pass --project)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}:{where} is not valid YAML") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: must be a mapping of sections (data, train, ...)")
    return raw


def load_params(path: Path) -> Params:
    """Load and validate params.yaml."""
    return parse_params(read_params_file(path), origin=path.name)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split 'section.key=value' into its parts; the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name or "." in name:
        raise ParamsError(f"-S {echo(text)}: expected section.key=value, e.g. prune.final_sparsity=0.6")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except (yaml.YAMLError, ValueError):  # ValueError: an integer of more than 4,300 digits
        parsed = value
    return section, name, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of raw params with each 'section.key=value' applied."""
    merged = {section: dict(values or {}) for section, values in raw.items()}
    for text in overrides:
        section, name, value = parse_override(text)
        merged.setdefault(section, {})[name] = value
    return merged


def check_overrides(path: Path, overrides: list[str]) -> Params:
    """The params that params.yaml with these overrides would give; nothing is written.

    An error in the file itself is reported against the file, one in an override against `-S`.
    """
    raw = read_params_file(path)
    params = parse_params(raw, origin=path.name)
    if not overrides:
        return params
    return parse_params(apply_overrides(raw, overrides), origin="-S")


def render_overrides(path: Path, overrides: list[str]) -> str:
    """params.yaml's text with the overrides applied, everything else kept as written.

    A round trip through ruamel.yaml keeps comments, key order, quotes and `null`s, so only the
    overridden values change.
    """
    import io

    from ruamel.yaml import YAML  # round-trip loader, ships with DVC

    round_trip = YAML()
    round_trip.preserve_quotes = True
    round_trip.width = 4096  # never re-wrap a long line
    # ruamel writes None as an empty value by default; params.yaml spells it `null`.
    round_trip.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    document = round_trip.load(path.read_text())
    for text in overrides:
        section, name, value = parse_override(text)
        if document.get(section) is None:
            document[section] = {}
        document[section][name] = value
    buffer = io.StringIO()
    round_trip.dump(document, buffer)
    return buffer.getvalue()


def write_overrides(path: Path, overrides: list[str]) -> Params:
    """Validate overrides, then write them into params.yaml keeping its comments.

    Like `dvc exp run -S`, the override lands in the params file so that dvc.lock,
    `dvc status` and the MLflow run all describe the same values. Nothing is written
    when any override is invalid. A run writes them through tasks.bookkeeping.journal instead,
    which keeps the original to put back if the run fails or dies.
    """
    from tasks.fsutil import write_text

    params = check_overrides(path, overrides)
    if overrides:
        write_text(path, render_overrides(path, overrides))
    return params
