"""Reading the dataset: splits streamed through tf.data, seeded shuffles, the validation hold-out."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tasks.errors import DataError
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


def labelled(counts: list[int]) -> images.Images:
    """Images (paths only: nothing is decoded) with counts[c] of class c."""
    labels = np.repeat(np.arange(len(counts)), counts)
    paths = tuple(f"{label}/{index}.png" for index, label in enumerate(labels))
    return images.Images(paths, labels, tuple(str(c) for c in range(len(counts))), 8, 1)


@pytest.mark.parametrize("counts", [[1, 1, 3], [2] * 10, [5] * 10, [2, 9, 1, 40], [5, 5], [300, 2]])
def test_the_holdout_copes_with_the_classes_min_images_per_class_allows(counts: list[int]) -> None:
    """Down to one image per class (data.min_images_per_class: 1), where a stratified split cannot be drawn."""
    given = labelled(counts)
    fit, held = images.holdout(given, 0.1, seed=42)
    assert sorted(fit.paths + held.paths) == sorted(given.paths)
    fitted, validated = np.bincount(fit.labels, minlength=len(counts)), np.bincount(held.labels, minlength=len(counts))
    for label, count in enumerate(counts):
        assert fitted[label] >= 1  # every class is trained on
        if count >= 2:
            assert validated[label] >= 1  # and validated on, when it has an image to spare
    again_fit, again_held = images.holdout(given, 0.1, seed=42)
    assert again_fit.paths == fit.paths and again_held.paths == held.paths  # seeded


def test_the_holdout_is_scikit_learns_where_that_can_be_drawn() -> None:
    """The default data's split, and so its trained models, stay what they were."""
    from sklearn.model_selection import train_test_split

    given = labelled([140, 150, 139, 145, 141, 147, 143, 144, 137, 144])
    fit, held = images.holdout(given, 0.1, seed=42)
    rest, chosen = train_test_split(np.arange(len(given)), test_size=0.1, stratify=given.labels, random_state=42)
    assert fit.paths == given.subset(np.sort(rest)).paths and held.paths == given.subset(np.sort(chosen)).paths


def test_a_holdout_of_single_images_is_refused_in_one_line() -> None:
    with pytest.raises(DataError, match=r"every training class has a single image") as caught:
        images.holdout(labelled([1, 1, 1]), 0.1, seed=42)
    assert "\n" not in str(caught.value)
