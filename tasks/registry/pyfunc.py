"""The registered model, defined from code: an MLflow pyfunc that runs the int8 .tflite on LiteRT.

MLflow executes this file when it loads the model (models-from-code), so nothing is pickled:
the model is this class plus the .tflite artifact it is given. The code registered with it is the
inference runtime alone (register.py, INFERENCE_CODE): this file must import nothing else of the
project, so that a client with only mlflow, ai-edge-litert and NumPy can load it.
"""

from __future__ import annotations

import warnings
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

# MLflow asks for predict type hints to infer a schema, but only accepts list[...] ones; the schema
# here is the tensor signature logged with the model, so its suggestion does not apply.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method", category=UserWarning)


class TFLiteClassifier(PythonModel):
    """Images as pixel values (uint8 frames, or floats from 0 to 255) in, class probabilities out."""

    def load_context(self, context: Any) -> None:
        from tasks.stages.inference import TFLiteModel

        self.model = TFLiteModel(context.artifacts["tflite"])

    # Untyped on purpose: MLflow reads predict's type hints as a schema and warns on array ones;
    # the schema comes from the signature logged with the model instead.
    def predict(self, context, model_input, params=None):
        """Class probabilities for a batch of images (N, H, W, C) of pixel values, uint8 or float."""
        pixels = np.asarray(model_input)
        return self.model.predict(pixels if pixels.dtype == np.uint8 else pixels.astype(np.float32))


mlflow.models.set_model(TFLiteClassifier())
