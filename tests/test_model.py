"""The training protocol every stage shares: learning-rate cuts on a stalled validation score, replayed by a refit."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from searchlab.config import Config
from searchlab.metrics import SCORINGS, as_probabilities, value
from searchlab.model import (
    build_model,
    clear_keras_state,
    diverged,
    execution_steps,
    fit_model,
    mean_curves,
    replay_learning_rate,
    training_callbacks,
)


def _noisy_binary(rows: int = 240) -> tuple[np.ndarray, np.ndarray]:
    """Labels that are half noise: the validation loss stalls within a few epochs at a high learning rate."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 5)).astype("float32")
    y = ((X[:, 0] + rng.normal(scale=2.0, size=rows)) > 0).astype("float32").reshape(-1, 1)
    return X, y


def _fit(epochs: int, **kwargs: Any) -> keras.callbacks.History:
    """The same seeded network on the same rows; `kwargs` (validation, callbacks) make the difference."""
    X, y = _noisy_binary()
    keras.utils.set_random_seed(0)
    model = build_model(n_features=5, task="binary", units=64, learning_rate=0.05)
    return fit_model(model, X[:180], y[:180], batch_size=32, epochs=epochs, seed=0, **kwargs)


def test_a_stalled_fit_gets_smaller_learning_rates_and_a_refit_replays_them(
        make_config: Callable[..., Config]) -> None:
    config = make_config("model.patience=30", "model.reduce_lr=0.5", "model.reduce_lr_patience=2")
    X, y = _noisy_binary()
    validated = _fit(20, validation=(X[180:], y[180:]), callbacks=training_callbacks(config.model))
    rates = validated.history["learning_rate"]
    assert rates[0] == np.float32(0.05)
    assert min(rates) < 0.05 / 2 + 1e-9  # cut at least twice, by 0.5 each time
    assert all(later <= earlier for earlier, later in zip(rates, rates[1:], strict=False))

    refit = _fit(25, callbacks=[replay_learning_rate(validated.history)])
    assert refit.history["learning_rate"] == rates + [rates[-1]] * 5


def test_a_continued_fit_replays_from_its_first_epoch() -> None:
    """Hyperband continues trials from an earlier one's weights: epochs before the curve run at the initial rate."""
    schedule = replay_learning_rate({"learning_rate": [0.01, 0.001]}, first_epoch=2)
    assert schedule is not None
    assert [schedule.schedule(epoch, 0.1) for epoch in range(5)] == [0.1, 0.1, 0.01, 0.001, 0.001]


def test_no_reduction_records_no_rates(make_config: Callable[..., Config]) -> None:
    config = make_config("model.reduce_lr=1")
    X, y = _noisy_binary()
    history = _fit(3, validation=(X[180:], y[180:]), callbacks=training_callbacks(config.model))
    assert "learning_rate" not in history.history
    assert replay_learning_rate(history.history) is None


def test_a_metric_keras_lacks_is_logged_on_validation_rows_and_stops_training(
        make_config: Callable[..., Config]) -> None:
    """Average precision, which Keras does not compute, is logged per epoch as `val_average_precision` by
    `searchlab.metrics`; early stopping watches it and restores the epoch where it was best."""
    config = make_config("model.patience=2", "model.reduce_lr=1")
    X, y = _noisy_binary()
    history = _fit(30, validation=(X[180:], y[180:]), callbacks=training_callbacks(config.model,
                                                                                  SCORINGS["average_precision"]))
    curve = history.history["val_average_precision"]
    assert len(curve) == len(history.history["loss"]) < 30  # stopped early, on this curve
    assert int(np.argmax(curve)) == len(curve) - 1 - 2  # `patience` epochs after its best
    restored = as_probabilities(np.asarray(history.model.predict(X[180:], verbose=0)))
    assert value("binary", "average_precision", y[180:], restored) == max(curve)


def test_balanced_class_weights_favour_the_rare_class() -> None:
    """With 15% positives, `class_weight=balanced` makes the same seeded fit predict the rare class more often."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5)).astype("float32")
    y = ((X[:, 0] + rng.normal(size=400)) > 1.5).astype("float32").reshape(-1, 1)
    assert 0.08 < y.mean() < 0.2
    predicted = {}
    for weighting in ("none", "balanced"):
        keras.utils.set_random_seed(0)
        model = build_model(n_features=5, task="binary", learning_rate=0.01, steps_per_execution=16)
        fit_model(model, X, y, batch_size=32, epochs=5, seed=0, class_weight=weighting)
        predicted[weighting] = float((np.asarray(model.predict(X, verbose=0)) > 0.5).mean())
    assert predicted["balanced"] > 1.5 * predicted["none"]  # measured: 0.275 against 0.14


def test_diverged_names_the_first_bad_epoch() -> None:
    assert diverged([0.9, 0.5, 0.4]) is None
    assert diverged([0.9, float("nan"), float("inf")]) == "training loss became nan at epoch 2"
    assert diverged([float("inf")], first_epoch=4) == "training loss became inf at epoch 5"


def test_mean_curves_average_epoch_by_epoch() -> None:
    """Folds or executions that stopped early count in the epochs they trained."""
    curves = mean_curves([{"loss": [4.0, 2.0, 1.0], "acc": [0.5]}, {"loss": [2.0, 1.0]}])
    assert curves == {"acc": [0.5], "loss": [3.0, 1.5, 1.0]}
    assert mean_curves([]) == {}


def test_a_fit_of_few_batches_runs_one_batch_per_call() -> None:
    """The loop over `steps_per_execution` batches traces longer than it saves on a short fit."""
    assert execution_steps(16, rows=200, batch_size=32, epochs=8) == 1  # 56 batches
    assert execution_steps(16, rows=1437, batch_size=32, epochs=30) == 16  # 1,350 batches
    assert execution_steps(16, rows=299, batch_size=1, epochs=1) == 1 < execution_steps(16, 300, 1, 1) == 16


def test_clearing_keras_state_freezes_what_lives_and_still_collects_new_garbage() -> None:
    """The imported modules are frozen out of the collector's walks; garbage made after the freeze is still
    collected, a model's graphs among it."""
    clear_keras_state()
    frozen = gc.get_freeze_count()
    assert frozen > 100_000  # TensorFlow's and Keras' modules at least
    model = build_model(n_features=5, task="binary", units=8)
    cycle: list[Any] = [model]
    cycle.append(cycle)
    del model, cycle
    clear_keras_state()
    assert gc.get_freeze_count() <= frozen  # frozen once: the new model was not
    cycle = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
