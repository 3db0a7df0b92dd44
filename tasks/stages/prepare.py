"""prepare stage: materialise the dataset under data/raw and draw the calibration set."""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.errors import DataError
from tasks.fsutil import check_path_length, replace_dir, staging_dir
from tasks.params import DataParams, Params
from tasks.stages.images import (
    CALIBRATION_SPLIT,
    IMAGE_SUFFIXES,
    SPLITS,
    class_folders,
    first_undecodable,
    list_images,
    other_files,
)

if TYPE_CHECKING:
    from tasks.layout import Layout

log = logging.getLogger(__name__)

# Names the source data/raw came from; TFDS's ImageFolder reads only folders, so a file is safe here.
SOURCE_FILE = "SOURCE"
# Where TFDS fetches most datasets (its GCS mirror).
TFDS_HOST = "storage.googleapis.com"


@dataclass(frozen=True)
class PrepareResult:
    """What the prepare stage wrote."""

    images_per_split: dict[str, int]
    num_classes: int
    calibration_size: int


def prepare(params: DataParams, layout: Layout) -> PrepareResult:
    """Write data/raw/<split>/<class>/*.png from the configured source, then data/calibration.

    With the digits source, the bundled digits seed data/raw once; after that data/raw is the
    project's dataset and images a user adds under it are kept (delete data/raw to re-export).
    Folders are built beside their final place and swapped in only once complete, so a failure
    leaves the previous outputs untouched.
    """
    marker = layout.raw / SOURCE_FILE
    if params.kind == "digits" and marker.is_file() and marker.read_text().strip() == "digits":
        counts = check_image_tree(layout.raw, SPLITS, params.min_images_per_class, params.channels)
        drawn = _replace_calibration(layout.raw / "train", layout, params)
    else:
        with staging_dir(layout.raw) as raw:
            if params.kind == "digits":
                export_digits(raw, params)
            elif params.kind == "folder":
                copy_folder(Path(params.location).expanduser(), raw, params)
            else:
                export_tfds(params.location, raw, params)
            # A folder source was decoded before it was copied, the other sources were written here:
            # the copy is checked for its layout, not decoded a second time.
            counts = check_image_tree(raw, SPLITS, params.min_images_per_class, params.channels, decode=False)
            (raw / SOURCE_FILE).write_text(params.source + "\n")
            drawn = _replace_calibration(raw / "train", layout, params)
            replace_dir(raw, layout.raw)
    classes = {path.name for path in (layout.raw / "train").iterdir() if path.is_dir()}
    log.info("prepared %s images in %d classes; %d calibration samples", counts, len(classes), drawn)
    return PrepareResult(images_per_split=counts, num_classes=len(classes), calibration_size=drawn)


def _replace_calibration(train_dir: Path, layout: Layout, params: DataParams) -> int:
    with staging_dir(layout.calibration) as calibration:
        drawn = draw_calibration(train_dir, calibration / CALIBRATION_SPLIT, params)
        replace_dir(calibration, layout.calibration)
    return drawn


def export_digits(out: Path, params: DataParams) -> None:
    """Export scikit-learn's bundled 8x8 digits as PNGs, split by a seeded stratified rule."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # The bundled images hold 0..16 intensities; stretch them to the 0..255 of an 8-bit PNG.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    indices = np.arange(len(images))
    train_idx, test_idx = train_test_split(
        indices,
        test_size=params.test_fraction,
        stratify=digits.target,
        random_state=params.seed,
    )
    for split, chosen in (("train", train_idx), ("test", test_idx)):
        for index in sorted(chosen):
            folder = out / split / str(digits.target[index])
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(images[index], mode="L")
            if params.image_size != image.width:
                image = image.resize((params.image_size, params.image_size), Image.Resampling.BILINEAR)
            if params.channels == 3:
                image = image.convert("RGB")
            image.save(folder / f"{index:05d}.png")


def check_source(params: DataParams) -> None:
    """A quick look at a folder source before a run starts (the layout and the files, not the pixels)."""
    if params.kind == "folder":
        source = check_path_length("data.source", Path(params.location).expanduser())
        if not source.is_dir():
            raise DataError(
                f"data.source: folder {source} does not exist "
                "(expected <folder>/train/<class>/*.png and <folder>/test/<class>/*.png)"
            )
        check_image_tree(source, SPLITS, params.min_images_per_class, params.channels, decode=False)


def copy_folder(source: Path, out: Path, params: DataParams) -> None:
    """Copy a user's <split>/<class>/<image> tree after checking every image decodes."""
    if not check_path_length("data.source", source).is_dir():
        raise DataError(
            f"data.source: folder {source} does not exist "
            "(expected <folder>/train/<class>/*.png and <folder>/test/<class>/*.png)"
        )
    check_image_tree(source, SPLITS, params.min_images_per_class, params.channels)
    # Only the checked images: a stray FIFO or socket beside them would block or break a plain copy.
    for split in SPLITS:
        for class_dir in class_folders(source / split):
            target = out / split / class_dir.name
            target.mkdir(parents=True)
            for image in list_images(class_dir):
                shutil.copyfile(image, target / image.name)


def export_tfds(name: str, out: Path, params: DataParams) -> None:
    """Export a named TFDS dataset's train and test splits as PNGs."""
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from PIL import Image

    hint = (
        "TFDS downloads a dataset on first use, so it needs internet or a TFDS data_dir where it was "
        "prepared (TFDS_DATA_DIR); offline, use data.source: digits or folder:<path>"
    )
    try:
        builder = tfds.builder(name)
    except Exception as error:  # TFDS raises registry errors of several types
        raise DataError(f"data.source: tfds:{name}: {_first_line(error)}") from None
    if not builder.is_prepared():
        if not internet_reachable():
            raise DataError(f"data.source: tfds:{name} is not prepared and {TFDS_HOST} is unreachable; {hint}")
        try:
            builder.download_and_prepare()
        except Exception as error:  # network, checksum and extraction errors alike
            raise DataError(
                f"data.source: tfds:{name} could not be downloaded ({_first_line(error)}); {hint}"
            ) from None
    names = builder.info.features["label"].names
    for split in SPLITS:
        if split not in builder.info.splits:
            raise DataError(f"data.source: tfds:{name} has no '{split}' split")
        dataset = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        for index, (image, label) in enumerate(dataset.as_numpy_iterator()):
            folder = out / split / names[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            resized = tf.image.resize(image, (params.image_size, params.image_size)).numpy()
            pixels = np.clip(np.round(resized), 0, 255).astype(np.uint8)
            picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            picture.convert("L" if params.channels == 1 else "RGB").save(folder / f"{index:06d}.png")


def internet_reachable(timeout: float = 3.0) -> bool:
    """Whether TFDS's download host answers; checked first so offline fails at once, not after retries."""
    import socket

    try:
        with socket.create_connection((TFDS_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def check_image_tree(
    root: Path, splits: tuple[str, ...], min_per_class: int, channels: int, decode: bool = True
) -> dict[str, int]:
    """Check root/<split>/<class>/ before anything trains on it; return the image count per split.

    Every image must be a regular file (a FIFO named *.png would block a reader for ever, a symlink
    loop never resolves) that TensorFlow decodes as the stages will, at `channels` channels; every
    class folder must hold images, the splits must have the same classes, at least two of them,
    and the first split at least `min_per_class` images of each. Files that are not images by
    their suffix are left out, and a warning names them. `decode=False` checks all but the
    decoding (a quick look before a run starts, or a copy of a tree that was checked).
    """
    counts: dict[str, int] = {}
    class_sets: dict[str, list[str]] = {}
    every_image: list[Path] = []
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(f"{split_dir}: missing split folder (expected {root}/{split}/<class>/*.png)")
        classes = class_folders(split_dir)
        if not classes:
            raise DataError(f"{split_dir}: no class folders (expected {split_dir}/<class>/*.png)")
        class_sets[split] = [path.name for path in classes]
        total = 0
        for class_dir in classes:
            images = list_images(class_dir)
            skipped = other_files(class_dir)
            if skipped and decode:
                log.warning(
                    "%s: %d file(s) left out, not images (%s): %s",
                    class_dir,
                    len(skipped),
                    " ".join(IMAGE_SUFFIXES),
                    ", ".join(path.name for path in skipped[:5]) + (", ..." if len(skipped) > 5 else ""),
                )
            if not images:
                raise DataError(
                    f"{class_dir}: class folder has no images ({' '.join(IMAGE_SUFFIXES)}); add some or remove it"
                )
            if split == splits[0] and len(images) < min_per_class:
                raise DataError(
                    f"{class_dir}: {len(images)} image(s), fewer than data.min_images_per_class={min_per_class}; "
                    "add images or lower it"
                )
            every_image.extend(images)
            total += len(images)
        counts[split] = total
    check_classes(class_sets)
    if decode:
        check_decodes(every_image, channels)
    return counts


def check_decodes(paths: list[Path], channels: int) -> None:
    """Every image decodes with the stages' decoder (images.decode_file), and none is a decompression bomb."""
    from PIL import Image

    for path in paths:
        try:
            # Reads the header only. PIL refuses sizes that would take gigabytes decoded (more than
            # twice Image.MAX_IMAGE_PIXELS), which TensorFlow would try to decode on every pass.
            Image.open(path).close()
        except Image.DecompressionBombError as error:
            raise DataError(f"{path}: too large to decode safely ({error}); shrink or remove it") from None
        except Exception:  # PIL's opinion of the format does not count: TensorFlow's does, below
            continue
    failed = first_undecodable(paths, channels)
    if failed is not None:
        path, reason = failed
        raise DataError(f"{path}: corrupt or unreadable image ({reason}); fix or remove it")


def check_classes(class_sets: dict[str, list[str]]) -> None:
    """At least two classes, and the same class names in every split (labels are their sorted order)."""
    first, names = next(iter(class_sets.items()))
    if len(names) < 2:
        raise DataError(
            f"data: the {first} split has {len(names)} class ({', '.join(names)}); a classifier needs at least 2"
        )
    for split, other in class_sets.items():
        only_first, only_other = sorted(set(names) - set(other)), sorted(set(other) - set(names))
        if only_first or only_other:
            parts = [
                f"only in {first}: {', '.join(only_first)}" if only_first else "",
                f"only in {split}: {', '.join(only_other)}" if only_other else "",
            ]
            raise DataError(
                f"data: {first} and {split} have different classes ({'; '.join(p for p in parts if p)}); "
                "every class needs a folder in both"
            )


def draw_calibration(train_dir: Path, out: Path, params: DataParams) -> int:
    """Copy a seeded, class-stratified sample of the training images into out/<class>/."""
    by_class = {path.name: list_images(path) for path in sorted(train_dir.iterdir()) if path.is_dir()}
    total = sum(len(files) for files in by_class.values())
    wanted = min(params.calibration_size, total)
    rng = np.random.default_rng(params.seed)
    # Largest-remainder apportionment: each class gets its share of `wanted`, rounding
    # handed to the classes with the largest fractional parts, so the sizes sum exactly.
    shares = {name: wanted * len(files) / total for name, files in by_class.items()}
    quota = {name: int(share) for name, share in shares.items()}
    leftover = wanted - sum(quota.values())
    for name in sorted(shares, key=lambda n: (quota[n] - shares[n], n))[:leftover]:
        quota[name] += 1
    drawn: dict[str, list[Path]] = defaultdict(list)
    for name, files in by_class.items():
        picks = rng.choice(len(files), size=quota[name], replace=False)
        drawn[name] = [files[i] for i in sorted(picks)]
    for name, files in drawn.items():
        target = out / name
        target.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copy2(path, target / path.name)
    return sum(len(files) for files in drawn.values())


def run(layout: Layout, params: Params) -> dict[str, Any]:
    """The prepare stage: data/raw and data/calibration from data.source."""
    return asdict(prepare(params.data, layout))


def is_stale(layout: Layout, params: Params) -> str:
    """A user's folder or a TFDS dataset lives outside the project, where DVC cannot hash it."""
    if params.data.kind == "digits":
        return ""
    # prepare re-reads it every run; its outs hash the same when nothing changed, so the stages
    # after it still skip.
    return f"data.source is {params.data.kind}: re-read every run"
