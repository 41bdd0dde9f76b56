"""Final model: refit the chosen hyperparameters on all training rows, then test it once.

With no validation rows left, training runs for the epoch count at which the chosen
configuration's validation score was best (what early stopping restored), at the learning rates that
fit used; of the validation splits the configuration trained on, the one whose best epoch came last.
The test split is used here and only here: for the model, a trivial baseline and a reference (gradient-boosted
trees with scikit-learn's defaults), all three scored with bootstrap intervals on the same resamples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from searchlab.config import FinalConfig
from searchlab.context import SearchContext
from searchlab.data import Dataset
from searchlab.metrics import Scoring, evaluate_predictions, metric_names
from searchlab.model import (
    Scalers,
    StopOnNonFiniteLoss,
    clear_keras_state,
    deterministic,
    execution_steps,
    fit_model,
    predict_scores,
    replay_learning_rate,
    split_hyperparameters,
)
from searchlab.trials import FineTrial
from searchlab.uncertainty import Comparison, Estimate, bootstrap, compare, estimate


@dataclass(frozen=True)
class HeldOutScores:
    """Every metric of the searched model, the trivial baseline and the reference on the test rows, each with its
    bootstrap interval (the same resamples for all three), and the searched metric compared pairwise."""

    model: dict[str, Estimate]  # metric -> estimate, the searched metric first
    baseline: dict[str, Estimate]
    reference: dict[str, Estimate] | None  # None: `final.reference` off
    versus_baseline: Comparison
    versus_reference: Comparison | None
    n_resamples: int


@dataclass(frozen=True)
class RefitSchedule:
    """How long the final refit trains, and at which learning rates: those of one validated fit."""

    epochs: int
    curves: Mapping[str, list[float]] = field(default_factory=dict)  # the validated fit's (its learning_rate)
    first_epoch: int = 0  # the epoch `curves` start at
    split_epochs: tuple[int, ...] = ()  # the best epoch count on each validation split `epochs` was chosen from


@dataclass(frozen=True)
class FinalResult:
    params: dict[str, Any]
    schedule: RefitSchedule
    scores: HeldOutScores
    history: dict[str, list[float]]
    model: Any  # keras.Model on raw features, predicting in target units / class probabilities
    test_prediction: np.ndarray  # class probabilities (classification) or predicted values on the test split

    @property
    def epochs(self) -> int:
        return self.schedule.epochs

    @property
    def test_metrics(self) -> dict[str, float]:
        return {name: e.value for name, e in self.scores.model.items()}

    @property
    def baseline_metrics(self) -> dict[str, float]:
        return {name: e.value for name, e in self.scores.baseline.items()}


def best_epoch_count(curves: dict[str, list[float]], fallback: int, key: str = "val_loss", mode: str = "min") -> int:
    """Epochs up to and including the best value of curve `key` (lowest for mode "min").

    Among epochs tied at the best value, the one with the lowest validation loss: a metric that saturates early
    (a perfect validation average precision from the first epoch on a small split) would otherwise have the
    final model trained for one epoch.
    """
    sign = 1.0 if mode == "min" else -1.0
    values = np.array([sign * v if np.isfinite(v) else np.inf for v in curves.get(key, [])])
    if not values.size:
        return fallback
    tied = np.flatnonzero(values == values.min())
    losses = curves.get("val_loss", [])
    if len(tied) > 1 and len(losses) == len(values):
        tied_losses = [losses[i] if np.isfinite(losses[i]) else np.inf for i in tied]
        return int(tied[int(np.argmin(tied_losses))]) + 1
    return int(tied[0]) + 1


def refit_schedule(trial: FineTrial, scoring: Scoring) -> RefitSchedule:
    """The refit of `trial` follows the validated fit (on the fine split, or on a split the re-scoring trained) whose
    best epoch came last: its epoch count and learning rates.

    One split's best epoch is noisy, and stopping too soon costs more than training on: a validation score climbs
    steeply before its best epoch and falls slowly after it, at the rates the cuts have lowered by then. So the
    longest of the splits' best epochs, not one split's or their median, is the one most likely to suit a fit on
    all the rows (docs/results.md, "How long the final refit trains").
    """
    splits = [(trial.curves, trial.first_epoch)] + [
        (curves, 0) for curves, score in zip(trial.confirm_curves, trial.confirm_scores, strict=True)
        if math.isfinite(score)]
    counts = [first + best_epoch_count(curves, trial.params["epochs"], scoring.val_key, scoring.direction)
              for curves, first in splits]
    longest = counts.index(max(counts))
    curves, first_epoch = splits[longest]
    return RefitSchedule(counts[longest], curves, first_epoch, tuple(counts))


def refit_and_test(ctx: SearchContext, params: dict[str, Any], schedule: RefitSchedule,
                   settings: FinalConfig | None = None) -> FinalResult:
    """Train `params` on all training rows as `schedule` says, evaluate on the test split against a baseline (and
    the reference, unless `settings.reference` is off), with intervals."""
    settings = settings or FinalConfig()
    data, seed = ctx.data, ctx.seed
    scalers = Scalers.fit(data.X_train, data.y_train, data.task, params["scaling"])
    X, y = scalers.transform(data.X_train, data.y_train)
    build, fit = split_hyperparameters(params)
    clear_keras_state()
    with deterministic(seed):
        net = ctx.builder.build(n_features=X.shape[1], task=data.task, n_classes=data.n_classes,
                                steps_per_execution=execution_steps(ctx.model.steps_per_execution, len(X),
                                                                    fit["batch_size"], schedule.epochs),
                                target_scale=scalers.target_scale, **build)
        learning_rates = replay_learning_rate(schedule.curves, schedule.first_epoch)
        callbacks = [StopOnNonFiniteLoss(), *([learning_rates] if learning_rates else [])]
        history = fit_model(net, X, y, batch_size=fit["batch_size"], epochs=schedule.epochs, seed=seed,
                            callbacks=callbacks, class_weight=ctx.model.class_weight,
                            verbose=2 if ctx.verbose >= 2 else 0)
    model = scalers.wrap(net)
    prediction = predict_scores(model, data.X_test, data.task)
    return FinalResult(
        params=dict(params),
        schedule=schedule,
        scores=score_held_out(ctx, prediction, settings),
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
        model=model,
        test_prediction=prediction,
    )


def score_held_out(ctx: SearchContext, prediction: np.ndarray, settings: FinalConfig) -> HeldOutScores:
    """`prediction` (the searched model's on the test rows), the baseline's and the reference's metrics with
    intervals from `settings.resamples` bootstrap resamples of the test rows (seeded by the search's seed)."""
    data, metric = ctx.data, ctx.scoring.display_name
    predictions = {"model": prediction, "baseline": baseline_prediction(data)}
    if settings.reference:
        predictions["reference"] = reference_prediction(data, ctx.seed)
    resampled = bootstrap(data.task, data.y_test, predictions, n_resamples=settings.resamples, seed=ctx.seed)
    names = metric_names(data.task, metric)
    points = {who: evaluate_predictions(data.task, data.y_test, p) for who, p in predictions.items()}
    estimates = {who: {name: estimate(points[who][name], resampled[f"{who}/{name}"]) for name in names}
                 for who in predictions}

    def versus(other: str) -> Comparison:
        return compare(ctx.scoring, resampled[f"model/{metric}"], resampled[f"{other}/{metric}"],
                       points["model"][metric], points[other][metric])

    return HeldOutScores(estimates["model"], estimates["baseline"], estimates.get("reference"), versus("baseline"),
                      versus("reference") if settings.reference else None, settings.resamples)


def baseline_prediction(data: Dataset) -> np.ndarray:
    """The trivial model's test prediction: class priors (so the majority class) or the training mean."""
    if data.is_classification:
        dummy = DummyClassifier(strategy="prior").fit(data.X_train, data.y_train)
        return _class_matrix(data, dummy.classes_, dummy.predict_proba(data.X_test))
    return DummyRegressor(strategy="mean").fit(data.X_train, data.y_train).predict(data.X_test)


def reference_prediction(data: Dataset, seed: int) -> np.ndarray:
    """A strong reference's test prediction: scikit-learn's histogram gradient-boosted trees with their
    defaults, fitted on the same training rows (seconds on tables of these sizes)."""
    if data.is_classification:
        trees = HistGradientBoostingClassifier(random_state=seed).fit(data.X_train, data.y_train)
        return _class_matrix(data, trees.classes_, trees.predict_proba(data.X_test))
    return HistGradientBoostingRegressor(random_state=seed).fit(data.X_train, data.y_train).predict(data.X_test)


def _class_matrix(data: Dataset, classes: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Probabilities over every class of `data` from a model that saw only `classes`."""
    full = np.zeros((len(proba), data.n_classes))
    full[:, classes] = proba
    return full
