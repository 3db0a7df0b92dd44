"""The MLflow model registry: register gated candidates, promote and roll back by alias, review lineage.

Aliases, not the deprecated stages: `candidate` (the newest version that passed the gate),
`champion` (what is deployed), `previous-champion` (what `rollback` returns to). Every version
carries tags saying why it exists: the gate verdict, key metrics, git commit, DVC hashes of the
data and calibration set, a hash of the params, and the run that made it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.bookkeeping.tracking import TrackingError, server_errors
from tasks.errors import EdgecompressError
from tasks.layout import Layout
from tasks.params import Params
from tasks.stages.gate import GateResult

log = logging.getLogger(__name__)

CANDIDATE, CHAMPION, PREVIOUS = "candidate", "champion", "previous-champion"
MODEL_CODE = Path(__file__).with_name("pyfunc.py")
# The registered model's code: the inference runtime alone, in its package's layout, so that
# pyfunc.py's `from tasks.stages.inference import TFLiteModel` resolves where only mlflow,
# ai-edge-litert and NumPy are installed. (tasks/stages/__init__.py imports every stage module: it
# ships as an empty package marker.)
INFERENCE_CODE = ("tasks/__init__.py", "tasks/errors.py", "tasks/stages/inference.py")
# What an account needs to promote or roll back on the team's tracking server (`--app-name
# edgecompress-auth`, tasks/registry/auth.py); {name} is the registered model.
MOVE_ALIASES = "moving champion needs MANAGE on registered model {name!r}, the release owner's grant"


class RegistryError(TrackingError):
    """A registry request was refused: no such version or alias, or a version the gate did not pass."""


@dataclass(frozen=True)
class Registered:
    """The version a candidate is registered as, and whether this run created it."""

    version: str
    new: bool


@dataclass(frozen=True)
class Moved:
    """What an alias change did."""

    model: str
    champion: str
    previous: str | None
    message: str


def client(uri: str) -> Any:
    """An MlflowClient on the tracking and registry store at `uri`."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def params_hash(params: Params) -> str:
    """A short, stable hash of every setting: equal hashes mean equal params."""
    canonical = json.dumps(params.model_dump(), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def alias_version(mlflow_client: Any, name: str, alias: str) -> Any | None:
    """The version holding `alias`, or None (also when the model does not exist yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if getattr(error, "error_code", "") in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        # MLflow's basic-auth app answers 403, not 404, for an alias of a model that does not
        # exist yet; the model lookup tells the two apart (and raises for a real refusal).
        if getattr(error, "error_code", "") == "PERMISSION_DENIED" and not _model_exists(mlflow_client, name):
            return None
        raise


def _model_exists(mlflow_client: Any, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
    except MlflowException as error:
        if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def champion_accuracy(uri: str, name: str) -> float | None:
    """The champion's recorded int8 accuracy (None when there is no champion)."""
    with server_errors(uri):
        version = alias_version(client(uri), name, CHAMPION)
    if version is None:
        return None
    recorded = version.tags.get("metrics.int8_accuracy")
    return float(recorded) if recorded is not None else None


def register(uri: str, layout: Layout, params: Params, run_id: str, gate: GateResult) -> Registered:
    """Log the shipped model as a pyfunc in the run, register it, alias it `candidate`, tag it.

    A model already registered byte for byte (a run with nothing changed) is not registered again:
    its version becomes the candidate.
    """
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    from tasks.stages import images
    from tasks.stages.inference import TFLiteModel

    if not gate.passed:
        raise RegistryError("refusing to register a candidate that failed the gate")
    metrics = json.loads(layout.metrics.read_text())
    variants, shipped_model = metrics["variants"], layout.quantized_tflite(params.quantize.ptq_mode)
    name = params.registry.model_name
    digest = hashlib.md5(shipped_model.read_bytes()).hexdigest()
    with server_errors(uri):
        mlflow_client = client(uri)
        same = [
            v
            for v in mlflow_client.search_model_versions(f"name = '{name}'")
            if v.tags.get("model.md5") == digest and v.tags.get("gate.verdict") == "passed"
        ]
        if same:
            existing = str(max(int(v.version) for v in same))
            mlflow_client.set_registered_model_alias(name, CANDIDATE, existing)
            log.info("the same model is already %s version %s; not registered again", name, existing)
            return Registered(existing, new=False)
    # The signature names the input the model takes as it is: uint8 frames when the shipped model's
    # input is uint8 with scale 1 (quantize.io_dtype uint8), float32 pixel values otherwise.
    tflite = TFLiteModel(shipped_model)
    pixels = images.load_calibration(layout, params.data).head(2).arrays()[0]
    example = np.rint(pixels).astype(np.uint8) if tflite.takes_frames else pixels.astype(np.float32)
    signature = infer_signature(example, tflite.predict(example))
    artifacts = {
        "tflite": str(shipped_model),
        "metrics": str(layout.metrics),
        "gate": str(layout.gate_report),
        "edgetpu_report": str(layout.edgetpu_report),
    }
    # The compiled model and the compiler's log travel with the version when the compiler ran.
    artifacts.update({path.name: str(path) for path in sorted(layout.edgetpu_dir.glob("*_edgetpu.*"))})
    edgetpu = json.loads(layout.edgetpu_report.read_text())
    with server_errors(uri):
        run = mlflow_client.get_run(run_id)
        run_tags = run.data.tags
    shipped = variants[metrics["shipped"]]
    quantized = json.loads(layout.quantize_report.read_text())
    tags = {
        "quantize.method": quantized["method"],
        "quantize.ptq_mode": quantized["ptq_mode"],
        "gate.verdict": gate.verdict,
        "metrics.int8_accuracy": shipped["accuracy"],
        "metrics.float_accuracy": variants["float_tflite"]["accuracy"],
        "metrics.int8_size_bytes": shipped["size_bytes"],
        "metrics.int8_gzip_bytes": shipped["gzip_bytes"],
        "metrics.sparsity": variants["pruned"].get("sparsity", ""),
        "git.commit": run_tags.get("git.commit", ""),
        "git.dirty": run_tags.get("git.dirty", ""),
        "dvc.raw_md5": run_tags.get("dvc.raw_md5", ""),
        "dvc.calibration_md5": run_tags.get("dvc.calibration_md5", ""),
        "params.hash": params_hash(params),
        "model.md5": digest,
        "edgetpu.mapped_fraction": edgetpu["mapped_fraction"],
        "edgetpu.subgraphs": edgetpu["subgraphs"],
        "edgetpu.source": edgetpu["source"],
        "edgetpu.compiled": str(edgetpu["compiled"]).lower(),
        "run_id": run_id,
    }
    with tempfile.TemporaryDirectory(prefix="edgecompress-model-") as scratch:
        # Saved here, then sent as the run's artifacts and registered from there. `log_model` would
        # also make an MLflow LoggedModel and copy the run's metrics onto it, asking the server for
        # every metric's history one request at a time (72 on the tests' tiny run): about 1.5
        # minutes through a server with basic auth.
        model = Path(scratch) / "model"
        mlflow.pyfunc.save_model(
            path=str(model),
            python_model=str(MODEL_CODE),
            artifacts=artifacts,
            code_paths=[str(inference_code(Path(scratch) / "code"))],
            signature=signature,
            input_example=example,
            # Stated, not inferred: inference would load the model and trace its imports.
            pip_requirements=[f"ai-edge-litert=={_version('ai-edge-litert')}", f"numpy=={np.__version__}"],
        )
        with server_errors(uri):
            mlflow_client.log_artifacts(run_id, str(model), artifact_path="model")
            if not _model_exists(mlflow_client, name):
                mlflow_client.create_registered_model(name)
            # The tags travel with the version: no version ever exists without its gate record.
            created = mlflow_client.create_model_version(
                name, f"{run.info.artifact_uri}/model", run_id=run_id, tags={k: str(v) for k, v in tags.items()}
            )
            version = str(created.version)
            mlflow_client.set_registered_model_alias(name, CANDIDATE, version)
    log.info("registered %s version %s as %s", name, version, CANDIDATE)
    return Registered(version, new=True)


def inference_code(folder: Path) -> Path:
    """The registered model's code (INFERENCE_CODE) laid out in `folder`; the package folder to ship."""
    source = Path(__file__).resolve().parents[2]  # the folder holding the tasks package
    for relative in INFERENCE_CODE:
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, target)
    (folder / "tasks" / "stages" / "__init__.py").write_text(
        '"""Only the inference runtime ships with a registered model (inference.py)."""\n'
    )
    return folder / "tasks"


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def resolve(mlflow_client: Any, name: str, ref: str) -> Any:
    """A version from a number or an alias; RegistryError naming what does not exist."""
    from mlflow.exceptions import MlflowException

    ref = str(ref)  # MLflow hands out version numbers as ints
    try:
        if ref.isdigit():
            return mlflow_client.get_model_version(name, ref)
        return mlflow_client.get_model_version_by_alias(name, ref)
    except MlflowException as error:
        if getattr(error, "error_code", "") in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            kind = "version" if ref.isdigit() else "alias"
            raise RegistryError(f"model {name!r} has no {kind} {ref!r}; see `edgecompress history`") from None
        raise


def parse_ref(ref: str, default_model: str) -> tuple[str, str]:
    """'name@alias', 'name@3', '@champion', 'champion' or '3' -> (name, alias-or-version)."""
    name, at, which = ref.rpartition("@")
    if not at:
        return default_model, ref
    return name or default_model, which


def promote(uri: str, name: str, version: str | None = None) -> Moved:
    """Move `champion` to a gated version (default: the current candidate), keeping the old one as previous."""
    with server_errors(uri, needs=MOVE_ALIASES.format(name=name)):
        mlflow_client = client(uri)
        target = resolve(mlflow_client, name, str(version) if version else CANDIDATE)
        number = str(target.version)
        verdict = target.tags.get("gate.verdict")
        if verdict != "passed":
            record = f"its gate {verdict}" if verdict else "it has no gate record"
            raise RegistryError(f"refusing to promote {name} version {number}: {record}")
        current = alias_version(mlflow_client, name, CHAMPION)
        previous = str(current.version) if current is not None else None
        if previous == number:
            return Moved(name, number, None, f"{name} version {number} is already {CHAMPION}")
        mlflow_client.set_registered_model_alias(name, CHAMPION, number)
        if previous is not None:
            mlflow_client.set_registered_model_alias(name, PREVIOUS, previous)
    was = f" (was {previous}, now {PREVIOUS})" if previous else ""
    return Moved(name, number, previous, f"{name} version {number} is now {CHAMPION}{was}")


def rollback(uri: str, name: str) -> Moved:
    """Swap `champion` and `previous-champion`, so a second rollback undoes the first."""
    with server_errors(uri, needs=MOVE_ALIASES.format(name=name)):
        mlflow_client = client(uri)
        previous = alias_version(mlflow_client, name, PREVIOUS)
        if previous is None:
            raise RegistryError(f"{name} has no {PREVIOUS} to roll back to")
        current = alias_version(mlflow_client, name, CHAMPION)
        back_to = str(previous.version)
        was = str(current.version) if current is not None else None
        mlflow_client.set_registered_model_alias(name, CHAMPION, back_to)
        if was is not None:
            mlflow_client.set_registered_model_alias(name, PREVIOUS, was)
    return Moved(name, back_to, was, f"{name} rolled back: {CHAMPION} is version {back_to} (was {was})")


def beats_champion(uri: str, name: str, accuracy: float) -> bool:
    """True when there is no champion or the candidate is more accurate than it."""
    best = champion_accuracy(uri, name)
    return best is None or accuracy > best


def target(root: Path, model: str | None) -> tuple[str, str]:
    """(tracking URI, registered model name) the registry commands talk to; one line if there is no store yet."""
    from tasks.bookkeeping.tracking import tracking_uri
    from tasks.params import load_params

    if model is None:
        try:
            model = load_params(root / "params.yaml").registry.model_name
        except EdgecompressError as error:
            raise EdgecompressError(f"{error} (or pass --model)") from None
    uri = tracking_uri(root)
    store = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if store is not None and not store.is_file():
        # Asking would create an empty store; there is nothing in it to show.
        raise EdgecompressError(
            f"no tracking store yet ({store}); run `edgecompress run` first, or set MLFLOW_TRACKING_URI"
        )
    return uri, model
