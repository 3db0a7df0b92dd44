"""Bad input, as a user gives it on the command line: one line naming the problem, exit 1, nothing written.

Each case runs the real `edgecompress` on a fresh copy of the project. Unless a case says otherwise,
nothing may change: params.yaml byte for byte, no journal, no data/, no mlflow.db, no Traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import EDGECOMPRESS, TINY, UNREACHABLE_TRACKING, cli_env, make_project

# A real command per case: about two seconds each, a dozen for those that start a run.
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    """What the user types, what is set up before, and what the one error line must say."""

    args: tuple[str, ...]
    says: str
    setup: Callable[[Path], None] = lambda root: None
    env: dict[str, str] = field(default_factory=dict)
    writes_data: bool = False  # the failure comes from a stage: prepare may have run before it


def images(root: Path, classes: dict[str, int], splits: tuple[str, ...] = ("train", "test")) -> Path:
    """A folder source with `classes` {name: count} in each split, 8x8 grayscale PNGs."""
    rng = np.random.default_rng(0)
    for split in splits:
        for name, count in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(folder / f"{index}.png")
    return root


def identical(root: Path) -> None:
    """A folder source of 5 classes whose 20 images each are all the same: no model can beat chance on it."""
    for split in ("train", "test"):
        for label in range(5):
            folder = root.parent / "images" / split / f"class_{label}"
            folder.mkdir(parents=True)
            for index in range(20):
                Image.new("L", (8, 8), 128).save(folder / f"{index}.png")


def folder(classes: dict[str, int], then: Callable[[Path], None] = lambda source: None) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        then(images(root.parent / "images", classes))

    return setup


def source(root: Path) -> str:
    return f"data.source=folder:{root.parent / 'images'}"


def edit_params(old: str, new: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        path = root / "params.yaml"
        path.write_text(path.read_text().replace(old, new, 1))

    return setup


def write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda root: (root / name).write_bytes(content)


TWO = {"a": 3, "b": 3}
BUILDER = b"def raises(shape, classes):\n    raise ValueError('nope')\n"
LAMBDA_BUILDER = b"""import tf_keras as k


def doubled(shape, classes):
    x = k.Input(shape)
    y = k.layers.Lambda(lambda t: t * 2.0, name="double")(k.layers.Conv2D(8, 3)(x))
    return k.Model(x, k.layers.Dense(classes, activation="softmax")(k.layers.Flatten()(y)))
"""


EXITS = b"import sys\n\n\ndef exits(shape, classes):\n    sys.exit(3)\n"
HUGE = "x" * 100_000  # a value of 100 KB, which an error must not echo whole


def tiff_named_png(source: Path) -> None:
    """An image PIL reads and TensorFlow's decoder (the one the stages use) does not."""
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8), mode="L").save(source / "train/a/0.png", format="TIFF")


def decompression_bomb(source: Path) -> None:
    """A PNG that says it is 14000 x 14000 (196 million pixels, over PIL's limit): its header is enough."""
    from tests.stages.test_prepare import png_header

    (source / "train/a/huge.png").write_bytes(png_header(14_000, 14_000))


CASES: dict[str, Case] = {
    # --- params.yaml and -S -------------------------------------------------------------------
    "sparsity out of range": Case(("run", "-S", "prune.final_sparsity=1.5"), "prune.final_sparsity"),
    "negative epochs": Case(("run", "-S", "train.epochs=-1"), "train.epochs"),
    "unknown key": Case(("run", "-S", "prune.unknown_knob=3"), "unknown key 'prune.unknown_knob'"),
    "unknown section": Case(("run", "-S", "nonsense.key=1"), "nonsense"),
    "override without a section": Case(("run", "-S", "final_sparsity=0.5"), "expected section.key=value"),
    "unknown io dtype": Case(("run", "-S", "quantize.io_dtype=float32"), "quantize.io_dtype"),
    "unknown data source": Case(("run", "-S", "data.source=s3://bucket"), "data.source"),
    "unknown model source": Case(("run", "-S", "train.model=resnet50"), "train.model"),
    "model with a trailing newline": Case(("run", "-S", 'train.model="cnn\\n"'), "train.model: must be cnn"),
    "huge value": Case(("run", "-S", f"prune.final_sparsity={HUGE}"), "prune.final_sparsity"),
    "bad cron": Case(("run", "-S", "retrain.cron=a b c d e"), "not a 5-field cron expression"),
    "weights for the cnn": Case(("run", "-S", "train.weights=w.h5"), "weights is for the mobilenet"),
    "cnn with zero epochs": Case(("run", "-S", "train.epochs=0"), "must be trained"),
    "qat with float16": Case(
        ("run", "-S", "quantize.method=qat", "-S", "quantize.ptq_mode=float16"), "always makes an int8 model"
    ),
    "pruning ramp going down": Case(("run", "-S", "prune.initial_sparsity=0.95"), "must not exceed final_sparsity"),
    "input scale for the cnn": Case(("run", "-S", "train.input_scale=unit"), "normalises its own input"),
    "unknown key in the file": Case(
        ("run",),
        "params.yaml: unknown key 'prune.sparsity_goal'",
        edit_params("prune:\n", "prune:\n  sparsity_goal: 1\n"),
    ),
    "file that is not YAML": Case(("run",), "is not valid YAML", write("params.yaml", b"data: [unclosed\n")),
    "file that is a list": Case(("run",), "must be a mapping of sections", write("params.yaml", b"- a\n- b\n")),
    "missing key in the file": Case(("run",), "missing key 'data.seed'", edit_params("  seed: 42\n", "")),
    # --- data -----------------------------------------------------------------------------------
    "missing folder": Case(("run", "-S", "data.source=folder:/nonexistent/images"), "does not exist"),
    "one class": Case(("run", "-S", "{source}"), "a classifier needs at least 2", folder({"only": 3})),
    "different classes": Case(
        ("run", "-S", "{source}"),
        "only in test: c",
        folder(TWO, lambda s: images(s, {"c": 2}, ("test",))),
    ),
    "FIFO named like an image": Case(
        ("run", "-S", "{source}"), "a FIFO, not an image file", folder(TWO, lambda s: os.mkfifo(s / "train/a/x.png"))
    ),
    "symlink loop": Case(
        ("run", "-S", "{source}"),
        "a symlink loop",
        folder(TWO, lambda s: (s / "train/loop").symlink_to(s / "train/loop")),
    ),
    "too few images": Case(
        ("run", "-S", "{source}", "-S", "data.min_images_per_class=5"),
        "fewer than data.min_images_per_class=5",
        folder(TWO),
    ),
    "empty class folder": Case(
        ("run", "-S", "{source}"), "class folder has no images", folder(TWO, lambda s: (s / "train/empty").mkdir())
    ),
    "missing test split": Case(
        ("run", "-S", "{source}"), "missing split folder", folder(TWO, lambda s: shutil.rmtree(s / "test"))
    ),
    "corrupt image": Case(
        ("run", "-S", "{source}"),
        "corrupt or unreadable image",
        folder(TWO, lambda s: (s / "test/a/0.png").write_bytes(b"not a png")),
        writes_data=True,
    ),
    "image TensorFlow cannot decode": Case(
        ("run", "-S", "{source}"),
        "train/a/0.png: corrupt or unreadable image (Unknown image file format",
        folder(TWO, tiff_named_png),
        writes_data=True,
    ),
    "decompression bomb": Case(
        ("run", "-S", "{source}"),
        "train/a/huge.png: too large to decode safely",
        folder(TWO, decompression_bomb),
        writes_data=True,
    ),
    "huge folder path": Case(
        ("run", "-S", f"data.source=folder:/{HUGE}"), "data.source: the path is too long for this system"
    ),
    # --- models ---------------------------------------------------------------------------------
    "missing model file": Case(("run", "-S", "train.model=file:missing.keras"), "missing.keras does not exist"),
    "missing weights file": Case(
        ("run", "-S", "train.model=mobilenet_v2", "-S", "train.weights=none.h5"), "none.h5 does not exist"
    ),
    "file that is not a model": Case(
        ("run", "-S", "train.model=file:fake.keras", "-S", "train.epochs=0"),
        "could not be loaded as a Keras model",
        write("fake.keras", b"not a zip"),
        writes_data=True,
    ),
    "builder that raises": Case(
        ("run", "-S", "train.model=python:builders:raises"),
        "raised ValueError: nope",
        write("builders.py", BUILDER),
        writes_data=True,
    ),
    "a layer channel pruning cannot follow": Case(
        ("run", "-S", "prune.method=channels", "-S", "train.model=python:builders:doubled"),
        "layer 'double' (Lambda): not a layer it knows how to slice; use prune.method: magnitude",
        write("builders.py", LAMBDA_BUILDER),
    ),
    "builder that calls sys.exit": Case(
        ("run", "-S", "train.model=python:builders:exits"),
        "python:builders:exits((8, 8, 1), 10) called sys.exit(3)",
        write("builders.py", EXITS),
        writes_data=True,
    ),
    "huge model path": Case(
        ("run", "-S", f"train.model=file:{HUGE}.h5", "-S", "train.epochs=0"),
        "train.model: the path is too long for this system",
    ),
    "model at chance": Case(
        ("run", "-S", "{source}"),
        "scores 0.200 on the validation split (10 images), at or near chance",
        identical,
        writes_data=True,
    ),
    # --- the command line -----------------------------------------------------------------------
    "unknown stage": Case(("stage", "distill"), "unknown stage 'distill'"),
    "no project here": Case(("run", "--project", "/"), "params.yaml: not found"),
    "no DVC repository": Case(("run",), "not a DVC repository", lambda root: shutil.rmtree(root / ".dvc")),
    "checkout into a file": Case(("checkout", "1", "--into", "params.yaml"), "exists and is a file"),
    "promote with no registry": Case(("promote",), "no tracking store yet"),
    "lineage with no registry": Case(("lineage", "golden"), "no tracking store yet"),
    "serve with a bad cron": Case(("serve", "--cron", "61 * * * *"), "--cron: '61 * * * *' is not a 5-field"),
    "reproduce with no registry": Case(("reproduce", "3"), "no tracking store yet"),
    "not a tflite": Case(("check-edgetpu", "params.yaml"), "not a TensorFlow Lite model"),
    "sweep over the gate": Case(("sweep", "-S", "gate.min_accuracy=0.5,0.9"), "cannot vary gate.*"),
    "sweep out of range": Case(("sweep", "-S", "prune.final_sparsity=0.5,2"), "in grid point"),
    # --- the environment ------------------------------------------------------------------------
    "unreachable tracking server": Case(
        ("run",), "tracking server http://127.0.0.1:9 is unreachable", env=UNREACHABLE_TRACKING
    ),
    "unreachable Prefect server": Case(
        ("run",),
        "Prefect server http://127.0.0.1:9/api is unreachable",
        env={"PREFECT_API_URL": "http://127.0.0.1:9/api"},
    ),
    "Prefect URL without a scheme": Case(
        ("run",),
        "PREFECT_API_URL=127.0.0.1:4200/api is not an http(s) URL; write it as http://HOST:PORT/api",
        env={"PREFECT_API_URL": "127.0.0.1:4200/api"},
    ),
    "Prefect host without a scheme": Case(
        ("retrain",), "PREFECT_API_URL=localhost/api is not an http(s) URL", env={"PREFECT_API_URL": "localhost/api"}
    ),
    "tracking URI that is no store": Case(
        ("run",),
        "MLFLOW_TRACKING_URI=garbage is not a usable tracking store",
        env={"MLFLOW_TRACKING_URI": "garbage"},
    ),
    "unreachable tracking server on retrain": Case(
        ("retrain",),
        "tracking server http://127.0.0.1:9 is unreachable",
        env=UNREACHABLE_TRACKING,
    ),
    "corrupt mlflow.db": Case(("history",), "not a usable MLflow store", write("mlflow.db", b"garbage" * 100)),
    "corrupt dvc.yaml": Case(("run",), "dvc:", write("dvc.yaml", b"stages: [unclosed\n")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_leaves_nothing(name: str, tmp_path: Path, prefect_api: str) -> None:
    case = CASES[name]
    root = make_project(tmp_path / "project", overrides=TINY).root
    case.setup(root)
    before = (root / "params.yaml").read_bytes()
    had_db = (root / "mlflow.db").exists()
    args = [arg.replace("{source}", source(root)) for arg in case.args]
    # The session's Prefect server (a failed run's own would only cost time); a case may name another.
    env = {**cli_env(prefect_api), **case.env}
    result = subprocess.run([EDGECOMPRESS, *args], cwd=root, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 1, result.stdout[-1000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert case.says in errors[0], errors[0]
    assert len(errors[0]) < 1200, errors[0][:1200]  # one line a terminal can show, whatever the input
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (root / "params.yaml").read_bytes() == before  # a failed -S is never kept
    assert not (root / "params.yaml.journal").exists()
    if not case.writes_data:
        assert not (root / "data" / "raw").exists()
        assert (root / "mlflow.db").exists() == had_db
    assert not (root / "data" / "models" / "float.keras").exists()


# A model whose output never looks at the image (zero kernels and biases): it always answers class 0.
CONSTANT = b"""import tf_keras as k


def constant(shape, classes):
    inputs = k.Input(shape=shape)
    x = k.layers.Conv2D(4, 3, kernel_initializer="zeros", bias_initializer="zeros")(inputs)
    x = k.layers.GlobalAveragePooling2D()(x)
    return k.Model(inputs, k.layers.Dense(classes, activation="softmax", bias_initializer="zeros")(x))
"""


def test_a_model_given_as_it_is_is_scored_before_compression(tmp_path: Path, prefect_api: str) -> None:
    import json

    root = make_project(tmp_path / "project", overrides=TINY).root
    (root / "builders.py").write_bytes(CONSTANT)
    # Told to go on at chance, so that what stops it is the flow's check of a finished model against the gate.
    args = ["-S", "train.model=python:builders:constant", "-S", "train.epochs=0", "-S", "train.stop_near_chance=false"]
    result = subprocess.run(
        [EDGECOMPRESS, "run", *args, "-S", "gate.min_accuracy=0.5"],
        cwd=root,
        capture_output=True,
        text=True,
        env=cli_env(prefect_api),
        timeout=600,
    )
    assert result.returncode == 1, result.stdout[-1000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    measured = json.loads((root / "data" / "reports" / "train.json").read_text())["validation_accuracy"]
    assert measured < 0.5  # scored as given: no epoch ran
    assert f"as given (train.epochs 0) scores {measured:.3f} on the validation split" in errors[0]
    assert "below gate.min_accuracy 0.5, before any compression" in errors[0]
    assert not (root / "data" / "models" / "pruned.keras").exists()  # stopped before prune
