"""Knowledge distillation for channel pruning's fine-tune: the loss, the teacher's targets, the trainer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
import tensorflow as tf

from tasks.layout import Layout
from tasks.params import Params
from tasks.stages import images, prepare
from tasks.stages.distill import distillation_loss, distiller
from tasks.stages.fit import keras, load_model, save_model, seed_everything

if TYPE_CHECKING:
    import tf_keras


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    return np.exp(scaled) / np.exp(scaled).sum(axis=-1, keepdims=True)


def test_the_loss_is_hintons_mix_of_cross_entropy_and_softened_kl() -> None:
    rng = np.random.default_rng(0)
    teacher_logits, student_logits = rng.normal(size=(6, 5)) * 3, rng.normal(size=(6, 5)) * 3
    teacher, student = softmax(teacher_logits), softmax(student_logits)
    labels = rng.integers(0, 5, size=6)
    temperature, weight = 4.0, 0.3
    soft_t, soft_s = softmax(teacher_logits, temperature), softmax(student_logits, temperature)
    kl = np.sum(soft_t * (np.log(soft_t) - np.log(soft_s)), axis=-1)
    hard = -np.log(student[np.arange(6), labels])
    expected = (1 - weight) * hard + weight * temperature**2 * kl
    got = distillation_loss(labels, teacher.astype(np.float32), student.astype(np.float32), temperature, weight)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)


def test_weight_zero_is_the_plain_loss_and_a_student_that_agrees_pays_only_for_the_labels() -> None:
    rng = np.random.default_rng(1)
    probabilities = softmax(rng.normal(size=(4, 3)) * 2).astype(np.float32)
    other = softmax(rng.normal(size=(4, 3)) * 2).astype(np.float32)
    labels = np.array([0, 1, 2, 0])
    plain = keras().losses.sparse_categorical_crossentropy(labels, probabilities).numpy()
    np.testing.assert_allclose(distillation_loss(labels, other, probabilities, 4.0, 0.0).numpy(), plain, rtol=1e-6)
    agreeing = distillation_loss(labels, probabilities, probabilities, 4.0, 0.5).numpy()
    np.testing.assert_allclose(agreeing, 0.5 * plain, rtol=1e-5, atol=1e-6)
    assert np.all(distillation_loss(labels, other, probabilities, 4.0, 0.5).numpy() > agreeing)


def test_a_softmax_that_underflows_to_zero_gives_a_finite_loss() -> None:
    certain = np.array([[1.0, 0.0, 0.0]], np.float32)
    loss = distillation_loss(np.array([1]), certain, certain[:, ::-1].copy(), 4.0, 0.5).numpy()
    assert np.all(np.isfinite(loss))


def test_teacher_targets_ride_with_their_images_through_the_shuffle(layout: Layout, params: Params) -> None:
    prepare.prepare(params.data, layout)
    fit, _ = images.load_fit_validation(layout, params.data)
    # A target that names its own row: after the shuffle each must still sit beside its label.
    targets = np.stack([np.arange(len(fit)), fit.labels], axis=1).astype(np.float32)
    pixels_by_row = {}
    for pixels, labels, rows in fit.batches(64, shuffle_seed=3, targets=targets).as_numpy_iterator():
        assert np.array_equal(rows[:, 1], labels)
        pixels_by_row.update({int(row): image for row, image in zip(rows[:, 0], pixels, strict=True)})
    assert sorted(pixels_by_row) == list(range(len(fit)))
    unshuffled, _ = fit.head(5).arrays()
    for row in range(5):
        assert np.array_equal(pixels_by_row[row], unshuffled[row])
    with pytest.raises(ValueError, match="3 target rows"):
        fit.batches(8, targets=targets[:3])


def test_distilling_trains_only_the_student_towards_the_teacher_and_leaves_a_plain_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    k = keras()
    seed_everything(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)

    def classifier(width: int, name: str) -> tf_keras.Model:
        inputs = k.Input((6,))
        hidden = k.layers.Dense(width, activation="relu", name=f"{name}_hidden")(inputs)
        return k.Model(inputs, k.layers.Dense(3, activation="softmax", name="classes")(hidden), name=name)

    teacher, student = classifier(32, "teacher"), classifier(4, "student")
    teacher_weights = teacher.get_weights()
    targets = teacher.predict(x, verbose=0)

    def divergence() -> float:
        return float(np.mean(distillation_loss(y, targets, student.predict(x, verbose=0), 4.0, 1.0).numpy()))

    before = divergence()
    trainer = distiller(student, temperature=4.0, weight=1.0, learning_rate=0.01)
    history = trainer.fit(tf.data.Dataset.from_tensor_slices((x, y, targets)).batch(32), epochs=20, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}  # what the epoch logger reads
    assert divergence() < 0.5 * before
    for kept, now in zip(teacher_weights, teacher.get_weights(), strict=True):
        assert np.array_equal(kept, now)  # the teacher only answered
    # The student comes out an ordinary model: saved and loaded as any other, the same outputs.
    save_model(student, tmp_path / "student.keras")
    again = load_model(tmp_path / "student.keras")
    assert [layer.name for layer in again.layers] == [layer.name for layer in student.layers]
    np.testing.assert_allclose(again.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6)
