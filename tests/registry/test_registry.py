"""The model registry on a real MLflow SQLite store: register, promote, roll back, refuse, review."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tasks import registry
from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import STAGES
from tasks.stages.gate import run_gate
from tests.conftest import EDGECOMPRESS, LOOSE_GATE, QUICK, REPO, UNREACHABLE_TRACKING, repo_params


@pytest.fixture(scope="module")
def store(trained: tuple[Layout, Params], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Params, Layout]:
    """Two gated versions registered in a fresh store as the flow does it: v1 with uint8 I/O, v2 as configured."""
    layout, _ = trained
    # The registry's machinery is under test, not the tiny model: thresholds it always meets.
    # Nothing here reads the per-layer debugger's report or the timed invocations (QUICK).
    quick = [*LOOSE_GATE, *QUICK]
    params = repo_params(quick)
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("registry-test", artifact_location=(layout.root / "artifacts").as_uri())
    for commit, settings in (("a" * 40, repo_params([*quick, "quantize.io_dtype=uint8"])), ("b" * 40, params)):
        STAGES["quantize"](layout, settings)
        STAGES["evaluate"](layout, settings)
        STAGES["edgetpu"](layout, settings)
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.set_tags({"git.commit": commit, "dvc.raw_md5": "raw-md5", "dvc.calibration_md5": "cal-md5"})
            mlflow.log_params(settings.flat())
            result = run_gate(layout, settings.gate, registry.champion_accuracy(uri, settings.registry.model_name))
            mlflow.log_artifact(str(layout.gate_report), artifact_path="reports")
            assert registry.register(uri, layout, settings, run.info.run_id, result).new
    return uri, params, layout


def test_the_same_model_is_not_registered_twice(store: tuple[str, Params, Layout]) -> None:
    uri, params, layout = store
    name = params.registry.model_name
    before = registry.history(uri, name)
    with mlflow.start_run() as run:
        again = registry.register(uri, layout, params, run.info.run_id, run_gate(layout, params.gate, None))
    assert again == registry.Registered("2", new=False)
    assert registry.history(uri, name) == before


def aliases(uri: str, name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in registry.client(uri).get_registered_model(name).aliases.items()}


def test_registered_version_has_candidate_alias_and_lineage_tags(store: tuple[str, Params, Layout]) -> None:
    uri, params, _ = store
    name = params.registry.model_name
    version = registry.client(uri).get_model_version(name, "2")
    assert aliases(uri, name)["candidate"] == "2"
    tags = version.tags
    assert tags["gate.verdict"] == "passed"
    assert tags["git.commit"] == "b" * 40
    assert tags["dvc.calibration_md5"] == "cal-md5"
    assert tags["params.hash"] == registry.params_hash(params)
    assert tags["run_id"] == version.run_id
    assert 0 < float(tags["metrics.int8_accuracy"]) <= 1


def test_registered_pyfunc_predicts_like_the_tflite_model(store: tuple[str, Params, Layout]) -> None:
    uri, params, layout = store
    from tasks.stages import images
    from tasks.stages.inference import TFLiteModel

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{params.registry.model_name}@candidate")
    x, _ = images.load_calibration(layout, params.data).head(5).arrays()
    assert np.allclose(model.predict(x), TFLiteModel(layout.int8_tflite).predict(x))
    assert model.metadata.signature is not None


@pytest.fixture(scope="session")
def inference_env() -> Path:
    """A fresh virtualenv with only mlflow and ai-edge-litert (and NumPy), as requirements.lock pins them.

    Built with `python -m venv` and `pip install` constrained by requirements.lock (so pip takes
    MLflow's dependencies from the cache that building .venv filled; a minute or two) and kept between
    sessions in the user's cache, one folder per set of pins.
    """
    pins = {
        line.split("==")[0].lower(): line.strip()
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    wanted = [pins["mlflow"], pins["ai-edge-litert"], pins["numpy"]]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgecompress-tests"
    folder = cache / ("inference-env-" + hashlib.sha256(" ".join(wanted).encode()).hexdigest()[:12])
    if (folder / "installed").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)  # an install that did not finish
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    install = [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # Their dependencies at the versions .venv holds: pip finds them in its cache from building .venv.
    constraints = ["-c", str(REPO / "requirements.lock")]
    result = subprocess.run([*install, *constraints, *wanted], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder / "installed").write_text("\n".join(wanted) + "\n")
    return folder


@pytest.mark.slow
def test_a_client_with_only_mlflow_and_litert_loads_and_predicts(
    store: tuple[str, Params, Layout], inference_env: Path, tmp_path: Path
) -> None:
    """The registered model carries the inference runtime as its code, and nothing of the pipeline."""
    uri, params, layout = store
    from tasks.stages import images
    from tasks.stages.inference import TFLiteModel

    name = params.registry.model_name
    x, _ = images.load_calibration(layout, params.data).head(5).arrays()
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, mlflow, numpy as np; model = mlflow.pyfunc.load_model(sys.argv[1]); "
        "np.save(sys.argv[3], model.predict(np.load(sys.argv[2])))"
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": uri}
    result = subprocess.run(
        [str(inference_env / "bin" / "python"), "-c", script, f"models:/{name}/2", "x.npy", "y.npy"],
        cwd=tmp_path,  # not the project: nothing of it is importable
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.allclose(np.load(tmp_path / "y.npy"), TFLiteModel(layout.int8_tflite).predict(x))
    mlflow.set_tracking_uri(uri)
    model = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/2", dst_path=str(tmp_path / "model")))
    code = sorted(path.relative_to(model / "code").as_posix() for path in (model / "code").rglob("*.py"))
    assert code == ["tasks/__init__.py", "tasks/errors.py", "tasks/stages/__init__.py", "tasks/stages/inference.py"]


def test_promote_rollback_and_refusals(store: tuple[str, Params, Layout]) -> None:
    uri, params, _ = store
    name = params.registry.model_name
    assert registry.promote(uri, name, "1").champion == "1"
    moved = registry.promote(uri, name)  # the candidate, v2
    assert (moved.champion, moved.previous) == ("2", "1")
    assert aliases(uri, name)["champion"] == "2" and aliases(uri, name)["previous-champion"] == "1"
    assert registry.rollback(uri, name).champion == "1"
    assert aliases(uri, name)["champion"] == "1" and aliases(uri, name)["previous-champion"] == "2"

    # A version someone registered by hand, whose gate failed, and one with no gate record at all.
    client = registry.client(uri)
    source = client.get_model_version(name, "1").source
    failed = client.create_model_version(name, source, tags={"gate.verdict": "failed"})
    unrecorded = client.create_model_version(name, source)
    before = aliases(uri, name)
    with pytest.raises(registry.RegistryError, match="its gate failed"):
        registry.promote(uri, name, failed.version)
    with pytest.raises(registry.RegistryError, match="no gate record"):
        registry.promote(uri, name, unrecorded.version)
    with pytest.raises(registry.RegistryError, match="has no version '99'"):
        registry.promote(uri, name, "99")
    with pytest.raises(registry.RegistryError, match="has no alias 'golden'"):
        registry.lineage(uri, name, "golden")
    assert aliases(uri, name) == before


def test_history_and_diff(store: tuple[str, Params, Layout]) -> None:
    uri, params, _ = store
    name = params.registry.model_name
    rows = registry.history(uri, name)
    versions = [row["version"] for row in rows]
    assert versions == sorted(versions, reverse=True) and {1, 2} <= set(versions)
    by_version = {row["version"]: row for row in rows}
    assert by_version[2]["gate"] == "passed" and by_version[2]["int8_accuracy"] is not None
    changed = registry.diff(uri, name, "1", "2")
    assert changed["code"] == {"commit": ["a" * 40, "b" * 40]}
    assert changed["params"] == {"quantize.io_dtype": ["uint8", "int8"]}
    assert changed["data"] == {}


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [EDGECOMPRESS, "history", "--model", "anything"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, **UNREACHABLE_TRACKING},
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: tracking server http://127.0.0.1:9 is unreachable; check MLFLOW_TRACKING_URI"
    )
