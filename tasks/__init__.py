"""edgecompress's domain; nothing here imports Prefect.

- stages/       the pipeline, one module per stage (prepare, train, prune, cluster, quantize, evaluate,
                edgetpu), with the model sources, the image reader and the gate
- registry/     a gated model's life in MLflow: register, promote, lineage, reproduce, the pyfunc
- bookkeeping/  a run's plan, DVC and git, journal, lock, MLflow runs, summaries
- search/       the sweep over settings
- params.py, layout.py, fsutil.py, errors.py: the settings, where files live, whole-file writes, errors
"""

import os

# tfmot accepts only Keras 2 models, so `tf.keras` must resolve to tf_keras. TensorFlow reads
# this once, at its first import, which is why it is set in the package every entry point
# imports first rather than next to the code that needs it.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ start-up chatter (CPU feature notes, oneDNN banners) hides real progress.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
