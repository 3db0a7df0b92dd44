"""prepare stage: materialise the dataset under data/raw and draw the calibration set."""

from __future__ import annotations

import errno
import logging
import shutil
import stat
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.errors import DataError
from tasks.fsutil import replace_dir, staging_dir
from tasks.params import DataParams

if TYPE_CHECKING:
    from tasks.layout import Layout

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
CALIBRATION_SPLIT = "representative"
# Names the source data/raw came from; TFDS's ImageFolder reads only folders, so a file is safe here.
SOURCE_FILE = "SOURCE"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Where TFDS fetches most datasets (its GCS mirror).
TFDS_HOST = "storage.googleapis.com"


# Splits that decode to at most this much are kept in memory after the first pass (tf.data's cache);
# larger ones are read from disk batch by batch on every pass, so memory stays bounded.
CACHE_BYTES = 64 * 2**20


@dataclass(frozen=True, eq=False)
class Images:
    """One split's image files and labels, read from disk batch by batch through tf.data.

    Only the paths live in memory; `batches` decodes and resizes as the model consumes them, so
    memory is bounded by the batch, not by the split (a split smaller than CACHE_BYTES decoded is
    kept after the first pass). Images come out as float32 pixel values
    (0 to 255), exactly what the models take: normalisation is a layer inside each model.
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    image_size: int
    channels: int

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def decoded_bytes(self) -> int:
        """What the split takes in memory decoded, as float32 pixels."""
        return len(self.paths) * self.image_size * self.image_size * self.channels * 4

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image's shape: (size, size, channels)."""
        return (self.image_size, self.image_size, self.channels)

    def subset(self, indices: np.ndarray | list[int]) -> Images:
        """The images at `indices`, in that order."""
        chosen = np.asarray(indices, dtype=np.int64)
        return Images(
            tuple(self.paths[i] for i in chosen), self.labels[chosen], self.class_names, self.image_size, self.channels
        )

    def head(self, count: int) -> Images:
        """The first `count` images."""
        return self.subset(np.arange(min(count, len(self))))

    def batches(self, batch_size: int, shuffle_seed: int | None = None, labels: bool = True) -> Any:
        """A tf.data pipeline of (pixels, labels) batches (pixels only with labels=False).

        With `shuffle_seed`, the order changes every epoch, the same way on every run: the paths
        are shuffled whole (strings, cheap), then decoded.
        """
        import tensorflow as tf

        size, channels = self.image_size, self.channels

        def decode(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
            image = tf.image.resize(image, (size, size))  # float32, bilinear; exact when the size is the same
            return tf.ensure_shape(image, (size, size, channels)), label

        dataset = tf.data.Dataset.from_tensor_slices((list(self.paths), self.labels))
        if self.decoded_bytes <= CACHE_BYTES:
            # A small split is decoded once and kept: re-reading a thousand tiny PNGs every epoch
            # would cost more than training on them.
            dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
            if shuffle_seed is not None:
                dataset = dataset.shuffle(len(self.paths), seed=shuffle_seed, reshuffle_each_iteration=True)
        else:
            if shuffle_seed is not None:
                dataset = dataset.shuffle(len(self.paths), seed=shuffle_seed, reshuffle_each_iteration=True)
            dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if not labels:
            dataset = dataset.map(lambda image, _label: image)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole split as (pixels, labels) arrays: for small splits only (tests, notebooks, a sample)."""
        pixels = [batch for batch in self.batches(256, labels=False).as_numpy_iterator()]
        shape = (0, *self.shape)
        return (np.concatenate(pixels) if pixels else np.zeros(shape, np.float32)), self.labels.copy()


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
        counts = check_image_tree(layout.raw, SPLITS, params.min_images_per_class)
        drawn = _replace_calibration(layout.raw / "train", layout, params)
    else:
        with staging_dir(layout.raw) as raw:
            if params.kind == "digits":
                export_digits(raw, params)
            elif params.kind == "folder":
                copy_folder(Path(params.location).expanduser(), raw, params)
            else:
                export_tfds(params.location, raw, params)
            counts = check_image_tree(raw, SPLITS, params.min_images_per_class)
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
        source = Path(params.location).expanduser()
        if not source.is_dir():
            raise DataError(
                f"data.source: folder {source} does not exist "
                "(expected <folder>/train/<class>/*.png and <folder>/test/<class>/*.png)"
            )
        check_image_tree(source, SPLITS, params.min_images_per_class, decode=False)


def copy_folder(source: Path, out: Path, params: DataParams) -> None:
    """Copy a user's <split>/<class>/<image> tree after checking every image decodes."""
    if not source.is_dir():
        raise DataError(
            f"data.source: folder {source} does not exist "
            "(expected <folder>/train/<class>/*.png and <folder>/test/<class>/*.png)"
        )
    check_image_tree(source, SPLITS, params.min_images_per_class)
    # Only the checked images: a stray FIFO or socket beside them would block or break a plain copy.
    for split in SPLITS:
        for class_dir in _class_folders(source / split):
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
    root: Path, splits: tuple[str, ...], min_per_class: int = 1, decode: bool = True
) -> dict[str, int]:
    """Check root/<split>/<class>/ before anything trains on it; return the image count per split.

    Every image must be a regular file that decodes (a FIFO named *.png would block a reader for
    ever, a symlink loop never resolves), every class folder must hold images, the splits must
    have the same classes, at least two of them, and the first split at least `min_per_class`
    images of each. `decode=False` checks all but the decoding (a quick look before a run starts).
    """
    from PIL import Image, UnidentifiedImageError

    counts: dict[str, int] = {}
    class_sets: dict[str, list[str]] = {}
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(f"{split_dir}: missing split folder (expected {root}/{split}/<class>/*.png)")
        classes = _class_folders(split_dir)
        if not classes:
            raise DataError(f"{split_dir}: no class folders (expected {split_dir}/<class>/*.png)")
        class_sets[split] = [path.name for path in classes]
        total = 0
        for class_dir in classes:
            images = list_images(class_dir)
            if not images:
                raise DataError(f"{class_dir}: class folder has no images (.png or .jpg); add some or remove it")
            if split == splits[0] and len(images) < min_per_class:
                raise DataError(
                    f"{class_dir}: {len(images)} image(s), fewer than data.min_images_per_class={min_per_class}; "
                    "add images or lower it"
                )
            for image_path in images if decode else []:
                try:
                    with Image.open(image_path) as image:
                        image.load()
                except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
                    raise DataError(f"{image_path}: corrupt or unreadable image ({error}); fix or remove it") from None
            total += len(images)
        counts[split] = total
    check_classes(class_sets)
    return counts


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


def _entry_kind(path: Path) -> str:
    """'dir', 'file' or why the entry is neither (a special file, a broken link, a symlink loop)."""
    try:
        mode = path.stat().st_mode  # follows symlinks
    except OSError as error:
        reason = "a symlink loop" if error.errno == errno.ELOOP else "a broken link" if path.is_symlink() else None
        raise DataError(f"{path}: {reason or error.strerror}; remove it") from None
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    raise DataError(f"{path}: {kind}, not an image file; remove it")


def _class_folders(split_dir: Path) -> list[Path]:
    """The class folders of a split, sorted; dotfiles and plain files beside them are ignored."""
    entries = sorted(path for path in split_dir.iterdir() if not path.name.startswith("."))
    return [path for path in entries if _entry_kind(path) == "dir"]


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside folder, in a stable order; DataError for one that is not a regular file."""
    images = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    for path in images:
        if _entry_kind(path) != "file":
            raise DataError(f"{path}: a folder named like an image; rename or remove it")
    return images


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


def load_split(root: Path, split: str, params: DataParams, class_names: tuple[str, ...] | None = None) -> Images:
    """root/<split>/<class>/* as Images, files in sorted order; labels are the sorted class names' indices."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: missing; run the prepare stage first (edgecompress stage prepare)")
    folders = _class_folders(split_dir)
    names = class_names or tuple(folder.name for folder in folders)
    index = {name: i for i, name in enumerate(names)}
    paths: list[str] = []
    labels: list[int] = []
    for folder in folders:
        if folder.name not in index:
            raise DataError(f"{folder}: class {folder.name!r} is not one of the training classes; prepare again")
        images = list_images(folder)
        paths.extend(str(path) for path in images)
        labels.extend([index[folder.name]] * len(images))
    return Images(tuple(paths), np.asarray(labels, dtype=np.int64), names, params.image_size, params.channels)


def class_names(layout: Layout, params: DataParams) -> tuple[str, ...]:
    """The training classes, in label order."""
    return load_split(layout.raw, "train", params).class_names


def holdout(images: Images, fraction: float, seed: int) -> tuple[Images, Images]:
    """Split off a seeded, class-stratified share of `images` for validation: (rest, held out)."""
    from sklearn.model_selection import train_test_split

    rest, held = train_test_split(np.arange(len(images)), test_size=fraction, stratify=images.labels, random_state=seed)
    return images.subset(np.sort(rest)), images.subset(np.sort(held))


def load_fit_validation(layout: Layout, params: DataParams) -> tuple[Images, Images]:
    """The train split less a seeded validation share (to fit on), and that share (to choose models on)."""
    return holdout(load_split(layout.raw, "train", params), params.validation_fraction, params.seed)


def load_test(layout: Layout, params: DataParams) -> Images:
    """The test split, labelled like the training classes."""
    return load_split(layout.raw, "test", params, class_names(layout, params))


def load_calibration(layout: Layout, params: DataParams) -> Images:
    """The representative images drawn by prepare."""
    return load_split(layout.calibration, CALIBRATION_SPLIT, params, class_names(layout, params))
