"""Scoring: one definition per metric, shared by every stage and by the test-score intervals.

A score is "higher is better", as in scikit-learn (`neg_root_mean_squared_error` is minus the RMSE). Each
metric is computed here, by `metric_values`, from a prediction (the class-probability matrix, or predicted
values) and optional per-row weights: the coarse stage's scorer (`scorer`), the fine stage's validation score
(Keras' own metric where it computes the same thing, else `searchlab.model.ValidationScore` calling this
module), the final test metrics and their bootstrap intervals (weights = how often each test row was drawn)
all use these functions. tests/test_metrics.py checks each against scikit-learn's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from searchlab.errors import ConfigError


@dataclass(frozen=True)
class Scoring:
    """A primary metric: its configuration name and how Keras logs it on validation rows."""

    name: str  # the `search.coarse.scoring` value (scikit-learn's name for the scorer)
    display_name: str  # what people call it (accuracy, rmse, f1, ...): the key in test metrics and Keras logs
    negated: bool  # True when score = -metric (lower metric is better)
    tasks: tuple[str, ...]
    native: bool  # Keras computes it exactly as `metric_values` does (else `ValidationScore` logs it)

    @property
    def keras_name(self) -> str:
        return self.display_name

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
        """This metric on validation rows in Keras' logs: early stopping, learning-rate cuts and the refit's epoch
        count follow it, so training stops where the score the search compares stops improving (accuracy often
        improves long after the validation loss has turned)."""
        return "val_" + self.keras_name


_CLASSIFICATION = ("binary", "multiclass")
SCORINGS = {
    s.name: s
    for s in (
        Scoring("accuracy", "accuracy", False, _CLASSIFICATION, True),
        Scoring("neg_log_loss", "log_loss", True, _CLASSIFICATION, True),
        Scoring("balanced_accuracy", "balanced_accuracy", False, _CLASSIFICATION, False),
        Scoring("f1", "f1", False, _CLASSIFICATION, False),  # binary: of class 1; multiclass: macro
        Scoring("roc_auc", "roc_auc", False, _CLASSIFICATION, False),  # multiclass: one-vs-rest, macro
        Scoring("average_precision", "average_precision", False, _CLASSIFICATION, False),  # multiclass: macro
        Scoring("neg_root_mean_squared_error", "rmse", True, ("regression",), True),
        Scoring("neg_mean_absolute_error", "mae", True, ("regression",), True),
        Scoring("r2", "r2", False, ("regression",), True),
    )
}


def scoring_for(task: str, name: str | None) -> Scoring:
    """The scoring named `name` (or the task's default), checked against the task.

    Raises:
        ConfigError: `name` is not a scoring for `task`.
    """
    if name is None:
        name = "neg_root_mean_squared_error" if task == "regression" else "accuracy"
    allowed = [s.name for s in SCORINGS.values() if task in s.tasks]
    if name not in allowed:
        raise ConfigError(
            f"search.coarse.scoring must be one of {', '.join(allowed)} for a {task} task, got {name!r}."
        )
    return SCORINGS[name]


def metric_names(task: str, first: str | None = None) -> list[str]:
    """The metrics reported for `task`, `first` (the searched one) first."""
    names = [s.display_name for s in SCORINGS.values() if task in s.tasks]
    return sorted(names, key=lambda name: name != first)


def evaluate_predictions(task: str, y_true: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Every metric of `task` on held-out rows.

    `prediction` is the class-probability matrix for classification (n_samples x n_classes) and the predicted
    values for regression.
    """
    return {name: float(values[0]) for name, values in metric_values(task, y_true, prediction).items()}


def metric_values(task: str, y_true: np.ndarray, prediction: np.ndarray, weights: np.ndarray | None = None,
                  names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Metrics (as people read them: RMSE positive) of `prediction` against `y_true`, once per row of `weights`.

    Args:
        weights: (n_weightings x n_rows) non-negative row weights, e.g. bootstrap counts; None: every row once.
        names: the metrics wanted (display names); None: all of `task`'s.

    Returns:
        name -> one value per weighting (NaN where a weighting leaves the metric undefined, e.g. AUC
        without both classes).
    """
    y = np.asarray(y_true).ravel()
    W = np.ones((1, len(y))) if weights is None else np.asarray(weights, dtype="float64")
    wanted = names or [s.display_name for s in SCORINGS.values() if task in s.tasks]
    if task == "regression":
        pred = np.asarray(prediction, dtype="float64").ravel()
        return {name: _REGRESSION[name](y.astype("float64"), pred, W) for name in wanted}
    proba = np.asarray(prediction, dtype="float64")
    y = y.astype("int64")
    with np.errstate(invalid="ignore", divide="ignore"):
        return {name: _CLASSIFIERS[name](y, proba, W) for name in wanted}


def value(task: str, name: str, y_true: np.ndarray, prediction: np.ndarray) -> float:
    """One metric (display name `name`) on every row once."""
    return float(metric_values(task, y_true, prediction, names=[name])[name][0])


def scorer(scoring: Scoring) -> Callable[[Any, np.ndarray, np.ndarray], float]:
    """A scikit-learn scorer (`scorer(estimator, X, y)`, higher is better) computing `scoring` by `metric_values`."""

    def score(estimator: Any, X: np.ndarray, y: np.ndarray) -> float:
        if "regression" in scoring.tasks:
            predicted = np.asarray(estimator.predict(X), dtype="float64")
            return scoring.to_score(value("regression", scoring.display_name, y, predicted))
        proba = as_probabilities(np.asarray(estimator.predict_proba(X), dtype="float64"))
        task = "multiclass" if proba.shape[1] > 2 else "binary"
        return scoring.to_score(value(task, scoring.display_name, y, proba))

    return score


def as_probabilities(raw: np.ndarray) -> np.ndarray:
    """A classifier network's output as a class-probability matrix (a binary network outputs one column,
    P(class 1))."""
    raw = np.asarray(raw)
    if raw.ndim == 1 or raw.shape[1] == 1:
        p = raw.ravel()
        return np.column_stack([1.0 - p, p])
    return raw


# --- the metrics, weighted: each takes (y, prediction, W) and returns one value per row of W -------------


def _mean(W: np.ndarray, per_row: np.ndarray) -> np.ndarray:
    return (W @ per_row) / W.sum(axis=1)


def _accuracy(y: np.ndarray, proba: np.ndarray, W: np.ndarray) -> np.ndarray:
    return _mean(W, (proba.argmax(axis=1) == y).astype("float64"))


def _log_loss(y: np.ndarray, proba: np.ndarray, W: np.ndarray) -> np.ndarray:
    clipped = np.clip(proba, 1e-7, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return _mean(W, -np.log(clipped[np.arange(len(y)), y]))


def _balanced_accuracy(y: np.ndarray, proba: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present (with weight) in `y`, as scikit-learn's `balanced_accuracy_score`."""
    correct = proba.argmax(axis=1) == y
    recalls = [(W @ (correct & (y == k))) / (W @ (y == k)) for k in range(proba.shape[1])]
    return np.nanmean(np.column_stack(recalls), axis=1)


def _f1(y: np.ndarray, proba: np.ndarray, W: np.ndarray) -> np.ndarray:
    """F1 of class 1 (binary) or the mean F1 over the classes that are true or predicted (multiclass, macro),
    as scikit-learn's `f1_score`; an undefined binary F1 (no positives, none predicted) is 0."""
    predicted = proba.argmax(axis=1)
    classes = [1] if proba.shape[1] == 2 else range(proba.shape[1])
    per_class = []
    for k in classes:
        said, true = predicted == k, y == k
        denominator = W @ said + W @ true  # 2 TP + FP + FN
        f1 = 2 * (W @ (said & true)) / np.where(denominator > 0, denominator, 1)
        per_class.append(np.where(denominator > 0, f1, 0.0 if proba.shape[1] == 2 else np.nan))
    return np.nanmean(np.column_stack(per_class), axis=1)


def _ranked(positive: np.ndarray, score: np.ndarray, W: np.ndarray, descending: bool
            ) -> tuple[np.ndarray, np.ndarray]:
    """Weights of positive and negative rows per distinct score (ties grouped), in score order: (n_w x groups)."""
    order = np.argsort(-score if descending else score, kind="mergesort")
    sorted_score = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    Ws = W[:, order]
    pos = np.add.reduceat(Ws * positive[order], starts, axis=1)
    neg = np.add.reduceat(Ws * ~positive[order], starts, axis=1)
    return pos, neg


def _binary_auc(positive: np.ndarray, score: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ROC AUC (the Mann-Whitney statistic, ties counting a half), NaN without both classes."""
    pos, neg = _ranked(positive, score, W, descending=False)
    below = np.cumsum(neg, axis=1) - neg
    return (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def _binary_ap(positive: np.ndarray, score: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Average precision (precision at each threshold weighted by the recall it adds, no interpolation), NaN
    without positives."""
    pos, neg = _ranked(positive, score, W, descending=True)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1), 0.0)
    return (pos * precision).sum(axis=1) / pos.sum(axis=1)


def _one_vs_rest(binary: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
                 ) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """A ranking metric for class 1 (binary), or its mean over classes one-vs-rest (multiclass, macro)."""

    def metric(y: np.ndarray, proba: np.ndarray, W: np.ndarray) -> np.ndarray:
        if proba.shape[1] == 2:
            return binary(y == 1, proba[:, 1], W)
        return np.nanmean(np.column_stack([binary(y == k, proba[:, k], W) for k in range(proba.shape[1])]), axis=1)

    return metric


_CLASSIFIERS = {
    "accuracy": _accuracy,
    "log_loss": _log_loss,
    "balanced_accuracy": _balanced_accuracy,
    "f1": _f1,
    "roc_auc": _one_vs_rest(_binary_auc),
    "average_precision": _one_vs_rest(_binary_ap),
}


def _r2(y: np.ndarray, pred: np.ndarray, W: np.ndarray) -> np.ndarray:
    mean = (W @ y / W.sum(axis=1))[:, None]
    return 1.0 - (W @ (y - pred) ** 2) / (W * (y[None, :] - mean) ** 2).sum(axis=1)


_REGRESSION = {
    "rmse": lambda y, pred, W: np.sqrt(_mean(W, (y - pred) ** 2)),
    "mae": lambda y, pred, W: _mean(W, np.abs(y - pred)),
    "r2": _r2,
}
