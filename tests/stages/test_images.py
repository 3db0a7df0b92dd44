"""Reading the dataset: splits streamed through tf.data, seeded shuffles, the validation hold-out."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import images, prepare
from tests.conftest import repo_params
from tests.stages.test_prepare import class_counts


def test_splits_stream_pixels_batch_by_batch(layout: Layout, params: Params) -> None:
    prepare.prepare(params.data, layout)
    test = images.load_test(layout, params.data)
    assert test.class_names == tuple(str(d) for d in range(10))
    assert len(test) == sum(class_counts(layout.raw / "test").values())
    batches = list(test.batches(64).as_numpy_iterator())
    assert [len(labels) for _, labels in batches[:-1]] == [64] * (len(batches) - 1)
    pixels = np.concatenate([x for x, _ in batches])
    assert pixels.shape == (len(test), params.data.image_size, params.data.image_size, 1)
    assert pixels.dtype == np.float32
    # Pixel values, as a camera gives them: the models normalise inside.
    assert pixels.min() >= 0.0 and pixels.max() == 255.0
    assert np.array_equal(np.concatenate([y for _, y in batches]), test.labels)


def test_a_seeded_shuffle_differs_by_epoch_and_repeats_by_run(layout: Layout, params: Params) -> None:
    prepare.prepare(params.data, layout)
    fit, _ = images.load_fit_validation(layout, params.data)

    def epochs(seed: int) -> list[list[int]]:
        dataset = fit.batches(len(fit), shuffle_seed=seed)
        return [next(dataset.as_numpy_iterator())[1].tolist() for _ in range(2)]

    first, again = epochs(7), epochs(7)
    assert first == again  # the same order on every run
    assert first[0] != first[1]  # a new order every epoch
    assert sorted(first[0]) == sorted(fit.labels.tolist())


def test_validation_holdout_is_stratified_and_disjoint(layout: Layout, params: Params) -> None:
    prepare.prepare(params.data, layout)
    fit, validation = images.load_fit_validation(layout, params.data)
    assert not set(fit.paths) & set(validation.paths)
    assert len(fit) + len(validation) == len(images.load_split(layout.raw, "train", params.data))
    shares = np.bincount(validation.labels) / np.bincount(validation.labels + 0).sum()
    assert np.allclose(shares, np.bincount(fit.labels) / len(fit), atol=0.02)


def test_image_size_and_channels_are_applied(layout: Layout) -> None:
    params = repo_params(["data.image_size=16", "data.channels=3"])
    prepare.prepare(params.data, layout)
    with Image.open(next((layout.raw / "train").rglob("*.png"))) as image:
        assert image.size == (16, 16) and image.mode == "RGB"
    pixels, _ = images.load_split(layout.raw, "train", params.data).head(4).arrays()
    assert pixels.shape == (4, 16, 16, 3)
