"""Final model: refit the chosen hyperparameters on all training rows, then test it once.

With no validation rows left, training runs for the epoch count at which the chosen
configuration's fine-stage validation score was best (what early stopping restored), at the
learning rates that fit used.
The test split is used here and only here, for the model and for a trivial baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from sklearn.dummy import DummyClassifier, DummyRegressor

from searchlab.context import SearchContext
from searchlab.data import Dataset
from searchlab.metrics import evaluate_predictions
from searchlab.model import (
    Scalers,
    StopOnNonFiniteLoss,
    fit_model,
    predict_scores,
    split_hyperparameters,
)


@dataclass(frozen=True)
class FinalResult:
    params: dict[str, Any]
    epochs: int
    test_metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    history: dict[str, list[float]]
    model: Any  # keras.Model on raw features, predicting in target units / class probabilities
    test_prediction: np.ndarray  # class probabilities (classification) or predicted values on the test split


def best_epoch_count(curves: dict[str, list[float]], fallback: int, key: str = "val_loss", mode: str = "min") -> int:
    """Epochs up to and including the best value of curve `key` (lowest for mode "min")."""
    sign = 1.0 if mode == "min" else -1.0
    values = [sign * v if np.isfinite(v) else np.inf for v in curves.get(key, [])]
    return int(np.argmin(values)) + 1 if values else fallback


def refit_and_test(ctx: SearchContext, params: dict[str, Any], epochs: int,
                   learning_rates: keras.callbacks.Callback | None = None) -> FinalResult:
    """Train `params` on all training rows for `epochs`, evaluate on the test split against a baseline.

    `learning_rates` (`searchlab.model.replay_learning_rate`) replays the chosen fit's learning rates.
    """
    data, seed = ctx.data, ctx.seed
    scalers = Scalers.fit(data.X_train, data.y_train, data.task, params["scaling"])
    X, y = scalers.transform(data.X_train, data.y_train)
    build, fit = split_hyperparameters(params)
    keras.utils.set_random_seed(seed)
    net = ctx.builder.build(n_features=X.shape[1], task=data.task, n_classes=data.n_classes,
                            steps_per_execution=ctx.model.steps_per_execution, target_scale=scalers.target_scale,
                            **build)
    callbacks = [StopOnNonFiniteLoss(), *([learning_rates] if learning_rates else [])]
    history = fit_model(net, X, y, batch_size=fit["batch_size"], epochs=epochs, seed=seed, callbacks=callbacks,
                        verbose=2 if ctx.verbose >= 2 else 0)
    model = scalers.wrap(net)
    prediction = predict_scores(model, data.X_test, data.task)
    return FinalResult(
        params=dict(params),
        epochs=epochs,
        test_metrics=evaluate_predictions(data.task, data.y_test, prediction),
        baseline_metrics=baseline_metrics(data),
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
        model=model,
        test_prediction=prediction,
    )


def baseline_metrics(data: Dataset) -> dict[str, float]:
    """Test metrics of the trivial model: class priors (majority class) or the training mean."""
    if data.is_classification:
        dummy = DummyClassifier(strategy="prior").fit(data.X_train, data.y_train)
        proba = np.zeros((len(data.y_test), data.n_classes))
        proba[:, dummy.classes_] = dummy.predict_proba(data.X_test)
        return evaluate_predictions(data.task, data.y_test, proba)
    prediction = DummyRegressor(strategy="mean").fit(data.X_train, data.y_train).predict(data.X_test)
    return evaluate_predictions(data.task, data.y_test, prediction)
