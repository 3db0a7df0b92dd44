"""benchmarks/shapes.py: an 8-class image folder drawn offline, the same for the same seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import shapes
from tasks.layout import Layout
from tasks.stages import STAGES, images
from tests.conftest import repo_params


def files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*.png"))}


def test_shapes_are_a_folder_source_the_same_for_the_same_seed(tmp_path: Path) -> None:
    counts = shapes.generate(tmp_path / "a", 16, 4, 1, seed=5)
    assert counts == {"train": 32, "test": 8}
    drawn = files(tmp_path / "a")
    assert {name.split("/")[1] for name in drawn} == set(shapes.CLASSES) and len(drawn) == 40
    with Image.open(tmp_path / "a" / "train" / "star" / "00000.png") as image:
        assert (image.mode, image.size) == ("RGB", (16, 16))
    shapes.generate(tmp_path / "b", 16, 4, 1, seed=5)
    assert files(tmp_path / "b") == drawn  # image by image
    shapes.generate(tmp_path / "c", 16, 2, 1, seed=5)
    smaller = files(tmp_path / "c")
    assert all(drawn[name] == content for name, content in smaller.items())  # a larger set keeps these
    shapes.generate(tmp_path / "d", 16, 4, 1, seed=6)
    assert files(tmp_path / "d") != drawn
    # Colour says nothing about the class: the images of one class differ from each other.
    first, second = (np.asarray(Image.open(tmp_path / "a" / "train" / "ring" / f"0000{i}.png")) for i in (0, 1))
    assert not np.array_equal(first, second)
    # What `edgecompress run -S data.source=folder:...` makes of it: eight classes, 16x16x3.
    layout = Layout(tmp_path / "project")
    overrides = [f"data.source=folder:{tmp_path / 'a'}", "data.image_size=16", "data.channels=3"]
    params = repo_params([*overrides, "data.validation_fraction=0.25"])  # one validation image per class
    STAGES["prepare"](layout, params)
    fit, validation = images.load_fit_validation(layout, params.data)
    assert fit.class_names == tuple(sorted(shapes.CLASSES)) and fit.shape == (16, 16, 3)
    assert len(fit) + len(validation) == 32
