"""searchlab: coarse-to-fine hyperparameter search for Keras models, tracked in MLflow.

Data flows one way: config -> data -> coarse -> narrow -> fine -> final, and
`searchlab.tracking` records every step.
"""

from __future__ import annotations

import os
from typing import Any

# TensorFlow's C++ start-up and retracing chatter is noise for users; set before TF loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__all__ = ["__version__", "search"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `searchlab.search` loads on first use: `import searchlab` stays light (no TensorFlow, no Hydra).
    if name == "search":
        from searchlab.api import search

        return search
    raise AttributeError(f"module 'searchlab' has no attribute {name!r}")
