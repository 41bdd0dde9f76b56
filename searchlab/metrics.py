"""Scoring: one definition per metric, shared by every stage.

A score is "higher is better", as in scikit-learn (`neg_root_mean_squared_error`
is minus the RMSE). The coarse stage scores with the scikit-learn scorer; the
fine stage tracks the matching Keras metric on its validation split; the final
model is evaluated on the test split with `evaluate_predictions`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from searchlab.errors import ConfigError


@dataclass(frozen=True)
class Scoring:
    """A primary metric: its scikit-learn scorer name and its Keras counterpart."""

    name: str  # scikit-learn scoring name
    keras_name: str  # key in Keras logs (prefixed by "val_" for validation)
    display_name: str  # what people call it: accuracy, rmse, ...
    negated: bool  # True when score = -metric (lower metric is better)
    tasks: tuple[str, ...]

    def to_score(self, metric_value: float) -> float:
        return -metric_value if self.negated else metric_value

    def to_metric(self, score: float) -> float:
        """The metric as people read it (RMSE positive), from a score."""
        return -score if self.negated else score

    @property
    def direction(self) -> str:
        return "min" if self.negated else "max"

    @property
    def val_key(self) -> str:
        """This metric on validation rows in Keras' logs: early stopping and the refit's epoch count follow it,
        so training stops where the score the search compares stops improving (accuracy often improves long
        after the validation loss has turned)."""
        return "val_" + self.keras_name


_CLASSIFICATION = ("binary", "multiclass")
SCORINGS = {
    s.name: s
    for s in (
        Scoring("accuracy", "accuracy", "accuracy", False, _CLASSIFICATION),
        Scoring("neg_log_loss", "log_loss", "log_loss", True, _CLASSIFICATION),
        Scoring("roc_auc", "auc", "roc_auc", False, ("binary",)),
        Scoring("neg_root_mean_squared_error", "rmse", "rmse", True, ("regression",)),
        Scoring("neg_mean_absolute_error", "mae", "mae", True, ("regression",)),
        Scoring("r2", "r2", "r2", False, ("regression",)),
    )
}


def scoring_for(task: str, name: str | None) -> Scoring:
    """The scoring named `name` (or the task's default), checked against the task."""
    if name is None:
        name = "neg_root_mean_squared_error" if task == "regression" else "accuracy"
    allowed = [s.name for s in SCORINGS.values() if task in s.tasks]
    if name not in allowed:
        raise ConfigError(
            f"search.coarse.scoring must be one of {', '.join(allowed)} for a {task} task, got {name!r}."
        )
    return SCORINGS[name]


def evaluate_predictions(task: str, y_true: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Primary and secondary metrics on held-out data.

    `prediction` is the class-probability matrix for classification (n_samples x
    n_classes) and the predicted values for regression.
    """
    if task == "regression":
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, prediction))),
            "mae": float(skm.mean_absolute_error(y_true, prediction)),
            "r2": float(skm.r2_score(y_true, prediction)),
        }
    n_classes = prediction.shape[1]
    labels = np.arange(n_classes)
    proba = np.clip(prediction, 1e-7, 1.0)
    proba = proba / proba.sum(axis=1, keepdims=True)
    result = {
        "accuracy": float(skm.accuracy_score(y_true, prediction.argmax(axis=1))),
        "log_loss": float(skm.log_loss(y_true, proba, labels=labels)),
    }
    if task == "binary":
        both = len(np.unique(y_true)) == 2  # ROC AUC needs both classes in the test split
        result["roc_auc"] = float(skm.roc_auc_score(y_true, prediction[:, 1])) if both else float("nan")
    return result
