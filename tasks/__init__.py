"""edgecompress domain code: one module per pipeline stage; nothing here imports Prefect."""

import os

# tfmot accepts only Keras 2 models, so `tf.keras` must resolve to tf_keras. TensorFlow reads
# this once, at its first import, which is why it is set in the package every entry point
# imports first rather than next to the code that needs it.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ start-up chatter (CPU feature notes, oneDNN banners) hides real progress.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
