"""Knowledge distillation: fine-tune a smaller model on the labels and on a larger model's softened outputs.

Channel pruning cuts half a network at once; fine-tuning on the labels alone then has to relearn
what the cut channels knew from a thousand hard labels. The unpruned model still knows it: its
probabilities say which wrong classes an image resembles ("dark knowledge", Hinton, Vinyals and
Dean 2015, "Distilling the Knowledge in a Neural Network"). The loss is

    (1 - weight) * cross-entropy(labels, student)
        + weight * temperature**2 * KL(softmax(teacher_logits / T) || softmax(student_logits / T))

with the temperature's square keeping the soft term's gradients at the scale of the hard one's (as
Hinton et al. and Keras' own distillation example do). The models here end in a softmax, so the
logits are the log of the probabilities: softmax(log p / T) equals softmax(logits / T) exactly,
the per-image constant in the logarithm cancels.

The teacher's probabilities are computed once, in inference mode, before fine-tuning (Images
carries them beside the labels and shuffles them together): the stages do not augment, so every
epoch would ask the teacher the same question. That costs one forward pass over the training split
instead of one per step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.stages.fit import keras

if TYPE_CHECKING:
    import tf_keras

    from tasks.stages.images import Images

# Probabilities below this are treated as this before the logarithm: a softmax in float32 can
# underflow to exactly 0 (Keras' own epsilon, which its cross-entropy clips at too).
EPSILON = 1e-7


def teacher_probabilities(teacher: tf_keras.Model, images: Images, batch_size: int) -> np.ndarray:
    """The teacher's probabilities for every image, in the split's order, as float32."""
    predicted = teacher.predict(images.batches(batch_size, labels=False), verbose=0)
    return np.asarray(predicted, dtype=np.float32)


def distillation_loss(labels: Any, teacher: Any, student: Any, temperature: float, weight: float) -> Any:
    """Per-image loss: (1 - weight) * CE(labels, student) + weight * T^2 * KL(teacher_T || student_T)."""
    import tensorflow as tf

    hard = keras().losses.sparse_categorical_crossentropy(labels, student)
    soft_teacher = tf.nn.softmax(tf.math.log(tf.maximum(teacher, EPSILON)) / temperature)
    log_soft_student = tf.nn.log_softmax(tf.math.log(tf.maximum(student, EPSILON)) / temperature)
    log_soft_teacher = tf.math.log(tf.maximum(soft_teacher, EPSILON))
    soft = tf.reduce_sum(soft_teacher * (log_soft_teacher - log_soft_student), axis=-1)
    return (1.0 - weight) * hard + weight * temperature**2 * soft


def distiller(student: tf_keras.Model, temperature: float, weight: float, learning_rate: float | Any) -> Any:
    """A compiled Keras model whose `fit` trains `student` on (pixels, labels, teacher probabilities) batches.

    Only the student's variables train, and the student comes out an ordinary model (the wrapper
    holds no weights of its own). `fit` reports `loss` and the student's `accuracy` on the labels,
    as compile_model's models do, so the same epoch logger reads both.
    """
    import tensorflow as tf

    k = keras()

    class Distiller(k.Model):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.student = student
            self.loss_tracker = k.metrics.Mean(name="loss")
            self.accuracy_metric = k.metrics.SparseCategoricalAccuracy(name="accuracy")

        @property
        def metrics(self) -> list[Any]:
            return [self.loss_tracker, self.accuracy_metric]

        def call(self, inputs: Any, training: bool = False) -> Any:
            return self.student(inputs, training=training)

        def train_step(self, data: Any) -> dict[str, Any]:
            pixels, labels, teacher = data
            with tf.GradientTape() as tape:
                predicted = self.student(pixels, training=True)
                loss = tf.reduce_mean(distillation_loss(labels, teacher, predicted, temperature, weight))
                if self.student.losses:
                    loss += tf.add_n(self.student.losses)
            variables = self.student.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            self.loss_tracker.update_state(loss)
            self.accuracy_metric.update_state(labels, predicted)
            return {metric.name: metric.result() for metric in self.metrics}

    model = Distiller()
    model.compile(optimizer=k.optimizers.Adam(learning_rate))
    # As compile_model: every variable exists before the first trace, so fit traces once.
    model.optimizer.build(student.trainable_variables)
    return model
