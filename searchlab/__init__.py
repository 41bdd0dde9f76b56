"""searchlab: coarse-to-fine hyperparameter search for Keras models, tracked in MLflow.

Data flows one way: config -> data -> coarse -> narrow -> fine -> final, and
`searchlab.tracking` records every step.
"""

from __future__ import annotations

import os

# TensorFlow's C++ start-up and retracing chatter is noise for users; set before TF loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__all__ = ["__version__"]
__version__ = "0.1.0"
