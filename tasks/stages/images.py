"""How every stage reads the dataset: a split's image files, decoded batch by batch through tf.data."""

from __future__ import annotations

import errno
import logging
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.errors import DataError
from tasks.params import DataParams

if TYPE_CHECKING:
    from tasks.layout import Layout

log = logging.getLogger(__name__)


SPLITS = ("train", "test")


CALIBRATION_SPLIT = "representative"


# The formats tf.io.decode_image reads (TensorFlow 2.21: "One of JPEG, JPEG XL, PNG, GIF, BMP, WebP
# required"), which is how every stage reads an image; it tells the format by the bytes, not the name.
# JPEG XL is left out: nothing here can write one to test it. A file with another suffix is not an
# image here, and prepare names what it left out.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")


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

    def batches(
        self,
        batch_size: int,
        shuffle_seed: int | None = None,
        labels: bool = True,
        targets: np.ndarray | None = None,
    ) -> Any:
        """A tf.data pipeline of (pixels, labels) batches (pixels only with labels=False).

        With `shuffle_seed`, the order changes every epoch, the same way on every run: the paths
        are shuffled whole (strings, cheap), then decoded. `targets` (one row per image, e.g. a
        teacher model's probabilities) ride along: (pixels, labels, targets), shuffled together.
        """
        import tensorflow as tf

        size, channels = self.image_size, self.channels
        if targets is not None and len(targets) != len(self.paths):
            raise ValueError(f"{len(targets)} target rows for {len(self.paths)} images")

        def decode(path: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
            image = decode_file(path, channels)
            image = tf.image.resize(image, (size, size))  # float32, bilinear; exact when the size is the same
            return (tf.ensure_shape(image, (size, size, channels)), *rest)

        columns = (list(self.paths), self.labels) if targets is None else (list(self.paths), self.labels, targets)
        dataset = tf.data.Dataset.from_tensor_slices(columns)
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
            dataset = dataset.map(lambda image, *_rest: image)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole split as (pixels, labels) arrays: for small splits only (tests, notebooks, a sample)."""
        pixels = [batch for batch in self.batches(256, labels=False).as_numpy_iterator()]
        shape = (0, *self.shape)
        return (np.concatenate(pixels) if pixels else np.zeros(shape, np.float32)), self.labels.copy()


def decode_file(path: Any, channels: int) -> Any:
    """An image file as a uint8 tensor of `channels` channels: how every stage, and prepare's check, decodes it.

    tf.io.decode_image converts PNG and JPEG to one channel itself but refuses to for BMP, GIF and
    WebP ("channels must be 0 or 3 for GIF"): those are decoded as RGB and made grayscale here.
    PNG and JPEG go the way they always went, so their pixels do not change.
    """
    import tensorflow as tf

    data = tf.io.read_file(path)
    if channels == 3:
        return tf.io.decode_image(data, channels=3, expand_animations=False)
    png = tf.equal(tf.strings.substr(data, 0, 8), b"\x89PNG\r\n\x1a\n")
    return tf.cond(
        tf.logical_or(png, tf.io.is_jpeg(data)),
        lambda: tf.io.decode_image(data, channels=1, expand_animations=False),
        lambda: tf.image.rgb_to_grayscale(tf.io.decode_image(data, channels=3, expand_animations=False)),
    )


def first_undecodable(paths: list[Path], channels: int) -> tuple[Path, str] | None:
    """The first of `paths` that decode_file cannot decode, and TensorFlow's reason; None when all decode.

    Decoded in parallel through tf.data, errors skipped and only indices kept, so checking a folder
    costs one decode per image; the one that failed is decoded again alone for its reason.
    """
    import tensorflow as tf

    if not paths:
        return None
    names = [str(path) for path in paths]

    def decodes(index: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return index, tf.shape(decode_file(path, channels))  # the shape keeps the decode from being pruned

    dataset = tf.data.Dataset.from_tensor_slices((np.arange(len(names)), names))
    dataset = dataset.map(decodes, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
    decoded = np.zeros(len(names), dtype=bool)
    for batch, _ in dataset.batch(1024).as_numpy_iterator():
        decoded[batch] = True
    if decoded.all():
        return None
    first = paths[int(np.flatnonzero(~decoded)[0])]
    try:
        decode_file(str(first), channels)
    except tf.errors.OpError as error:
        return first, _op_message(error.message)
    return first, "TensorFlow could not decode it"


def _op_message(text: str) -> str:
    """TensorFlow's reason without the op's decorations ("{{function_node ...}}", "[Op:DecodeImage]")."""
    import re

    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", " ".join(text.split()))
    return re.sub(r"\s*\[Op:\w+\].*$", "", text)[:200]


def entry_kind(path: Path) -> str:
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


def class_folders(split_dir: Path) -> list[Path]:
    """The class folders of a split, sorted; dotfiles and plain files beside them are ignored."""
    entries = sorted(path for path in split_dir.iterdir() if not path.name.startswith("."))
    return [path for path in entries if entry_kind(path) == "dir"]


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside folder, in a stable order; DataError for one that is not a regular file."""
    images = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    for path in images:
        if entry_kind(path) != "file":
            raise DataError(f"{path}: a folder named like an image; rename or remove it")
    return images


def other_files(folder: Path) -> list[Path]:
    """Files directly inside folder that are not images by their suffix (dotfiles aside): what is never read."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() not in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def load_split(root: Path, split: str, params: DataParams, class_names: tuple[str, ...] | None = None) -> Images:
    """root/<split>/<class>/* as Images, files in sorted order; labels are the sorted class names' indices."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: missing; run the prepare stage first (edgecompress stage prepare)")
    folders = class_folders(split_dir)
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
    """Split off a seeded, class-stratified share of `images` for validation: (rest, held out).

    Every class is fitted on, and every class of two images or more gives at least one to
    validation. scikit-learn's stratified split does that when the classes are large enough (it is
    the split the bundled digits have always had), but it cannot be drawn at all for a class of one
    image, or when the share holds fewer images than there are classes; `data.min_images_per_class`
    allows both. Then each class of n >= 2 images gives round(fraction * n) of them, at least 1 and
    at most n - 1, and a class of a single image is fitted on only. Either way the seed decides.
    """
    import math

    from sklearn.model_selection import train_test_split

    labels = images.labels
    counts = np.bincount(labels) if len(labels) else np.zeros(0, np.int64)
    present = counts[counts > 0]
    held_out = math.ceil(fraction * len(labels))
    if len(present) and present.min() >= 2 and len(present) <= held_out <= len(labels) - len(present):
        rest, held = train_test_split(np.arange(len(images)), test_size=fraction, stratify=labels, random_state=seed)
        fitted = np.bincount(labels[rest], minlength=len(counts))
        validated = np.bincount(labels[held], minlength=len(counts))
        if np.all(((fitted >= 1) & (validated >= 1)) | (counts == 0)):
            return images.subset(np.sort(rest)), images.subset(np.sort(held))
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for label in np.flatnonzero(counts >= 2):
        members = np.flatnonzero(labels == label)
        share = min(len(members) - 1, max(1, math.floor(fraction * len(members) + 0.5)))
        chosen.append(rng.permutation(members)[:share])
    if not chosen:
        raise DataError(
            "data: every training class has a single image, so none can be held out for validation "
            "(data.validation_fraction); give at least one class a second image"
        )
    held = np.sort(np.concatenate(chosen))
    return images.subset(np.setdiff1d(np.arange(len(images)), held)), images.subset(held)


def load_fit_validation(layout: Layout, params: DataParams) -> tuple[Images, Images]:
    """The train split less a seeded validation share (to fit on), and that share (to choose models on)."""
    return holdout(load_split(layout.raw, "train", params), params.validation_fraction, params.seed)


def load_test(layout: Layout, params: DataParams) -> Images:
    """The test split, labelled like the training classes."""
    return load_split(layout.raw, "test", params, class_names(layout, params))


def load_calibration(layout: Layout, params: DataParams) -> Images:
    """The representative images drawn by prepare."""
    return load_split(layout.calibration, CALIBRATION_SPLIT, params, class_names(layout, params))
