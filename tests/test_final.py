"""The final stage: the chosen values refit on every training row, tested once against a trivial baseline."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from searchlab.config import FinalConfig
from searchlab.final import (
    RefitSchedule,
    baseline_prediction,
    best_epoch_count,
    refit_and_test,
    refit_schedule,
    score_held_out,
)
from searchlab.metrics import evaluate_predictions, metric_names, scoring_for
from searchlab.trials import FineTrial
from tests.conftest import stage_inputs


def test_best_epoch_count_follows_the_searched_metric() -> None:
    curves = {"val_loss": [0.9, 0.5, 0.6, 0.7], "val_accuracy": [0.5, 0.7, 0.8, 0.75]}
    assert best_epoch_count(curves, 99) == 2
    assert best_epoch_count(curves, 99, "val_accuracy", "max") == 3
    assert best_epoch_count({"val_loss": [float("nan"), 0.4]}, 99) == 2
    assert best_epoch_count({}, 99) == 99
    # a metric tied at its best from the first epoch: the tied epoch with the lowest validation loss
    saturated = {"val_loss": [0.6, 0.4, 0.3, 0.35], "val_average_precision": [1.0, 1.0, 1.0, 0.9]}
    assert best_epoch_count(saturated, 99, "val_average_precision", "max") == 3
    assert best_epoch_count({"val_auc": [1.0, 1.0]}, 99, "val_auc", "max") == 1  # no loss to break the tie


def _curve(best_epoch: int, length: int, rate: float) -> dict[str, list[float]]:
    """Validation accuracy peaking at epoch `best_epoch` (counted from 1), at a constant learning rate."""
    return {"val_accuracy": [0.9 - abs(e - best_epoch) / 100 for e in range(1, length + 1)],
            "learning_rate": [rate] * length}


def test_the_refit_follows_the_split_whose_best_epoch_came_last() -> None:
    scoring = scoring_for("multiclass", None)
    fine_split = _curve(7, 22, 0.1)
    trial = FineTrial("t", {"epochs": 200}, {}, 0.9, fine_split)
    assert refit_schedule(trial, scoring) == RefitSchedule(7, fine_split, 0, (7,))  # no re-scoring: its one split
    rescored = FineTrial("t", {"epochs": 200}, {}, 0.9, fine_split, confirm_scores=(0.89, 0.88),
                         confirm_curves=(_curve(25, 40, 0.2), _curve(40, 55, 0.3)))
    schedule = refit_schedule(rescored, scoring)
    assert (schedule.epochs, schedule.split_epochs) == (40, (7, 25, 40))
    assert schedule.curves["learning_rate"][0] == 0.3 and schedule.first_epoch == 0  # that split's rates
    # a re-scoring split that failed counts for nothing
    failed = dataclasses.replace(rescored, confirm_scores=(0.89, float("nan")), confirm_curves=(_curve(25, 40, 0.2), {}))
    assert refit_schedule(failed, scoring) == RefitSchedule(25, _curve(25, 40, 0.2), 0, (7, 25))
    # a Hyperband trial continued from epoch 35: its best epoch counts from 0, and its rates start there
    continued = dataclasses.replace(rescored, first_epoch=35)
    assert refit_schedule(continued, scoring) == RefitSchedule(42, fine_split, 35, (42, 25, 40))
    # on a tie, the fine split's own fit
    tied = dataclasses.replace(rescored, confirm_curves=(_curve(7, 30, 0.2), _curve(5, 30, 0.3)))
    assert refit_schedule(tied, scoring) == RefitSchedule(7, fine_split, 0, (7, 7, 5))


def test_baseline_predicts_priors_or_the_mean() -> None:
    _, classification = stage_inputs("dataset.n_classes=3")
    data = classification.data
    priors = evaluate_predictions(data.task, data.y_test, baseline_prediction(data))
    assert priors["accuracy"] == pytest.approx(np.bincount(data.y_test).max() / 40, abs=0.05)
    _, regression = stage_inputs("dataset.generator=regression")
    data = regression.data
    assert evaluate_predictions(data.task, data.y_test, baseline_prediction(data))["r2"] == pytest.approx(0.0, abs=0.1)


def test_refit_trains_every_row_for_the_given_epochs_and_tests_once() -> None:
    _, ctx = stage_inputs("dataset.generator=moons")
    params = {**ctx.defaults, "units": 16, "layers": 1}
    final = refit_and_test(ctx, params, RefitSchedule(4, {"learning_rate": [0.01, 0.005]}))
    assert final.epochs == 4 and len(final.history["loss"]) == 4
    assert final.history["learning_rate"] == pytest.approx([0.01, 0.005, 0.005, 0.005])
    assert final.test_prediction.shape == (len(ctx.data.y_test), 2)
    assert list(final.test_metrics) == list(final.baseline_metrics) == metric_names("binary", "accuracy")
    raw = np.asarray(final.model.predict(ctx.data.X_test, verbose=0)).ravel()  # takes raw features
    np.testing.assert_allclose(raw, final.test_prediction[:, 1], rtol=1e-5)
    # the same seed and values repeat bit for bit (op determinism on, `searchlab.model.deterministic`)
    again = refit_and_test(ctx, params, RefitSchedule(4, {"learning_rate": [0.01, 0.005]}))
    np.testing.assert_array_equal(again.test_prediction, final.test_prediction)
    assert again.history == final.history and again.scores == final.scores


def test_a_regression_refit_predicts_in_target_units() -> None:
    _, ctx = stage_inputs("dataset.generator=regression")
    final = refit_and_test(ctx, {**ctx.defaults, "units": 16, "layers": 1, "learning_rate": 0.01}, RefitSchedule(30))
    assert list(final.test_metrics) == ["rmse", "mae", "r2"]
    assert final.test_metrics["rmse"] < final.baseline_metrics["rmse"]  # 30 epochs on a linear target
    raw = np.asarray(final.model.predict(ctx.data.X_test, verbose=0)).ravel()  # raw features in, target units out
    np.testing.assert_allclose(raw, final.test_prediction, rtol=1e-5)


def test_every_test_score_has_an_interval_and_the_reference_stands_beside_it() -> None:
    """Intervals hold their scores; the reference (gradient-boosted trees) learns the moons, the prior cannot.
    The model here is the truth with every 8th row's class flipped: far ahead of the baseline."""
    _, ctx = stage_inputs("dataset.generator=moons", "dataset.n_samples=400")
    data = ctx.data
    flipped = np.where(np.arange(len(data.y_test)) % 8 == 0, 1 - data.y_test, data.y_test)
    scores = score_held_out(ctx, np.eye(2)[flipped] * 0.9 + 0.05, FinalConfig(reference=True, resamples=300))
    assert scores.reference is not None and scores.versus_reference is not None
    for table in (scores.model, scores.baseline, scores.reference):
        assert list(table) == metric_names("binary", "accuracy")
        for name, e in table.items():
            assert e.low <= e.value <= e.high, (name, e)
            # (a constant prediction's AUC, balanced accuracy and F1, a perfect one's, are the same on every resample)
            assert e.low < e.high or table is not scores.model, (name, e)
    assert scores.model["accuracy"].value == pytest.approx(0.875)
    assert scores.reference["accuracy"].value > 0.8 > scores.baseline["accuracy"].value
    assert scores.versus_baseline.verdict == "ahead"
    assert scores.versus_reference.low < scores.versus_reference.difference < scores.versus_reference.high
    off = score_held_out(ctx, baseline_prediction(data), FinalConfig(reference=False, resamples=300))
    assert off.reference is None and off.versus_reference is None
    assert off.versus_baseline.verdict == "level"  # the baseline against itself: nothing learned
