"""prepare: the digits export, user folders, TFDS, the calibration draw, and loading through TFDS."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.errors import DataError
from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import images, prepare
from tests.conftest import repo_params


def tree_digest(root: Path) -> str:
    digest = hashlib.md5()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def class_counts(folder: Path) -> Counter[str]:
    return Counter({c.name: len(images.list_images(c)) for c in folder.iterdir() if c.is_dir()})


def test_digits_export_is_stratified_and_complete(layout: Layout, params: Params) -> None:
    result = prepare.prepare(params.data, layout)
    train, test = class_counts(layout.raw / "train"), class_counts(layout.raw / "test")
    assert sorted(train) == [str(d) for d in range(10)] == sorted(test)
    assert sum(train.values()) + sum(test.values()) == 1797  # every bundled digit, once
    for label in train:
        share = test[label] / (train[label] + test[label])
        assert abs(share - params.data.test_fraction) < 0.02
    assert result.images_per_split == {"train": sum(train.values()), "test": sum(test.values())}


def test_prepare_is_deterministic(tmp_path: Path, params: Params) -> None:
    first, second = Layout(tmp_path / "a"), Layout(tmp_path / "b")
    prepare.prepare(params.data, first)
    prepare.prepare(params.data, second)
    assert tree_digest(first.raw) == tree_digest(second.raw)
    assert tree_digest(first.calibration) == tree_digest(second.calibration)


def test_calibration_is_class_stratified(layout: Layout) -> None:
    params = repo_params(["data.calibration_size=100"])
    prepare.prepare(params.data, layout)
    drawn = class_counts(layout.calibration / images.CALIBRATION_SPLIT)
    train = class_counts(layout.raw / "train")
    assert sum(drawn.values()) == 100
    assert set(drawn) == set(train)
    total = sum(train.values())
    for label, count in drawn.items():
        assert abs(count - 100 * train[label] / total) <= 1
    # drawn from the training split, never from test
    train_names = {p.name for p in (layout.raw / "train").rglob("*.png")}
    assert {p.name for p in layout.calibration.rglob("*.png")} <= train_names


def test_images_added_to_exported_digits_are_kept(layout: Layout, params: Params) -> None:
    prepare.prepare(params.data, layout)
    extra = layout.raw / "train" / "3" / "mine.png"
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint8), mode="L").save(extra)
    result = prepare.prepare(params.data, layout)
    assert extra.is_file()
    assert result.images_per_split["train"] == 1 + sum(1 for p in (layout.raw / "train").rglob("*.png") if p != extra)


def make_folder(root: Path, classes: int = 3, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for split in images.SPLITS:
        for label in range(classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True)
            for index in range(per_class):
                pixels = rng.integers(0, 255, size=(8, 8), dtype=np.uint8)
                Image.fromarray(pixels, mode="L").save(folder / f"{index}.png")
    return root


def test_folder_source_is_copied(layout: Layout, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "mine")
    params = repo_params([f"data.source=folder:{source}", "data.calibration_size=6"])
    result = prepare.prepare(params.data, layout)
    assert result.num_classes == 3
    assert result.images_per_split == {"train": 12, "test": 12}
    (layout.raw / prepare.SOURCE_FILE).unlink()  # the only file prepare adds: where the data came from
    assert tree_digest(layout.raw) == tree_digest(source)
    assert sum(class_counts(layout.calibration / images.CALIBRATION_SPLIT).values()) == 6


def prepare_fails(layout: Layout, source: Path, match: str) -> None:
    """Prepare must fail naming the problem and leave the earlier outputs exactly as they were."""
    prepare.prepare(repo_params().data, layout)
    before_raw, before_cal = tree_digest(layout.raw), tree_digest(layout.calibration)
    params = repo_params([f"data.source=folder:{source}"])
    with pytest.raises(DataError, match=match) as caught:
        prepare.prepare(params.data, layout)
    assert "\n" not in str(caught.value)
    assert tree_digest(layout.raw) == before_raw
    assert tree_digest(layout.calibration) == before_cal
    assert sorted(p.name for p in layout.raw.parent.iterdir()) == ["calibration", "raw"]


def test_missing_folder(layout: Layout, tmp_path: Path) -> None:
    prepare_fails(layout, tmp_path / "nowhere", match=r"nowhere does not exist")


def test_class_folder_without_images(layout: Layout, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "mine")
    empty = source / "train" / "class_1"
    shutil.rmtree(empty)
    empty.mkdir()
    prepare_fails(layout, source, match=r"class_1: class folder has no images")


def test_corrupt_png(layout: Layout, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "mine")
    broken = source / "test" / "class_2" / "1.png"
    broken.write_bytes(broken.read_bytes()[:30])
    prepare_fails(layout, source, match=r"class_2/1.png: corrupt or unreadable image")


def test_tfds_offline_fails_at_once(layout: Layout, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Test double for the network: this machine has none, and a test must not send traffic out.
    monkeypatch.setattr(prepare, "internet_reachable", lambda timeout=3.0: False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    params = repo_params(["data.source=tfds:mnist"])
    with pytest.raises(DataError, match=r"tfds:mnist is not prepared .* unreachable; .* needs internet"):
        prepare.prepare(params.data, layout)
    assert not layout.raw.exists()


def test_tfds_unknown_dataset(layout: Layout) -> None:
    params = repo_params(["data.source=tfds:no_such_dataset_here"])
    with pytest.raises(DataError, match="tfds:no_such_dataset_here"):
        prepare.prepare(params.data, layout)


def test_a_file_pil_reads_and_tensorflow_cannot_is_refused(layout: Layout, tmp_path: Path) -> None:
    """A TIFF named .png: PIL opens it, the stages' decoder (tf.io.decode_image) does not."""
    source = make_folder(tmp_path / "mine")
    tiff = source / "train" / "class_0" / "2.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8), mode="L").save(tiff, format="TIFF")
    with Image.open(tiff) as image:
        image.load()  # PIL has no objection
    prepare_fails(layout, source, match=r"class_0/2\.png: corrupt or unreadable image \(Unknown image file format")


def png_header(width: int, height: int) -> bytes:
    """A PNG that says it is width x height and holds no pixels: all PIL reads before it decodes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_named_in_one_line(layout: Layout, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "mine")
    (source / "test" / "class_1" / "huge.png").write_bytes(png_header(14_000, 14_000))
    prepare_fails(layout, source, match=r"class_1/huge\.png: too large to decode safely")


def test_every_format_the_decoder_reads_is_an_image(
    layout: Layout, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """BMP, GIF, WebP, JPEG, PNG: counted, copied and read alike; other files are left out with a warning."""
    source = make_folder(tmp_path / "mine", per_class=2)
    rng = np.random.default_rng(1)
    formats = {"bmp": "BMP", "gif": "GIF", "webp": "WEBP", "jpg": "JPEG", "jpeg": "JPEG"}
    for split in images.SPLITS:
        for suffix, kind in formats.items():
            pixels = rng.integers(0, 255, size=(8, 8), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(source / split / "class_1" / f"extra.{suffix}", format=kind)
    (source / "train" / "class_2" / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(source / "train" / "class_2" / "scan.tif")
    params = repo_params([f"data.source=folder:{source}", "data.calibration_size=6", "data.min_images_per_class=1"])
    with caplog.at_level("WARNING", logger="tasks"):
        result = prepare.prepare(params.data, layout)
    assert result.images_per_split == {"train": 6 + len(formats), "test": 6 + len(formats)}
    assert sorted(p.name for p in (layout.raw / "train" / "class_1").iterdir()) == sorted(
        ["0.png", "1.png", *(f"extra.{suffix}" for suffix in formats)]
    )
    assert "class_2: 2 file(s) left out, not images" in caplog.text and "notes.txt, scan.tif" in caplog.text
    for channels in (1, 3):
        split = images.load_split(layout.raw, "train", repo_params([f"data.channels={channels}"]).data)
        pixels, labels = split.arrays()
        assert pixels.shape == (6 + len(formats), 8, 8, channels) and len(labels) == len(split)
