"""The final stage: the chosen values refit on every training row, tested once against a trivial baseline."""

from __future__ import annotations

import numpy as np
import pytest

from searchlab.final import baseline_metrics, best_epoch_count, refit_and_test
from searchlab.model import replay_learning_rate
from tests.conftest import stage_inputs


def test_best_epoch_count_follows_the_searched_metric() -> None:
    curves = {"val_loss": [0.9, 0.5, 0.6, 0.7], "val_accuracy": [0.5, 0.7, 0.8, 0.75]}
    assert best_epoch_count(curves, 99) == 2
    assert best_epoch_count(curves, 99, "val_accuracy", "max") == 3
    assert best_epoch_count({"val_loss": [float("nan"), 0.4]}, 99) == 2
    assert best_epoch_count({}, 99) == 99


def test_baseline_predicts_priors_or_the_mean() -> None:
    _, classification = stage_inputs("dataset.n_classes=3")
    priors = baseline_metrics(classification.data)
    assert priors["accuracy"] == pytest.approx(np.bincount(classification.data.y_test).max() / 40, abs=0.05)
    _, regression = stage_inputs("dataset.generator=regression")
    assert baseline_metrics(regression.data)["r2"] == pytest.approx(0.0, abs=0.1)


def test_refit_trains_every_row_for_the_given_epochs_and_tests_once() -> None:
    _, ctx = stage_inputs("dataset.generator=moons")
    params = {**ctx.defaults, "units": 16, "layers": 1}
    final = refit_and_test(ctx, params, 4, replay_learning_rate({"learning_rate": [0.01, 0.005]}))
    assert final.epochs == 4 and len(final.history["loss"]) == 4
    assert final.history["learning_rate"] == pytest.approx([0.01, 0.005, 0.005, 0.005])
    assert final.test_prediction.shape == (len(ctx.data.y_test), 2)
    assert set(final.test_metrics) == set(final.baseline_metrics) == {"accuracy", "log_loss", "roc_auc"}
    raw = np.asarray(final.model.predict(ctx.data.X_test, verbose=0)).ravel()  # takes raw features
    np.testing.assert_allclose(raw, final.test_prediction[:, 1], rtol=1e-5)


def test_a_regression_refit_predicts_in_target_units() -> None:
    _, ctx = stage_inputs("dataset.generator=regression")
    final = refit_and_test(ctx, {**ctx.defaults, "units": 16, "layers": 1, "learning_rate": 0.01}, 30)
    assert set(final.test_metrics) == {"rmse", "mae", "r2"}
    assert final.test_metrics["rmse"] < final.baseline_metrics["rmse"]  # 30 epochs on a linear target
    raw = np.asarray(final.model.predict(ctx.data.X_test, verbose=0)).ravel()  # raw features in, target units out
    np.testing.assert_allclose(raw, final.test_prediction, rtol=1e-5)
