"""Fine stage: KerasTuner GridSearch or Hyperband over the narrowed space.

Every trial trains on the same fixed split of the training rows and is scored by the
primary metric on its validation part (the best epoch, as KerasTuner does). The coarse
winner is trained under the same protocol, so the final choice compares like with like.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import keras_tuner.src.config as kt_config
import numpy as np
from sklearn.model_selection import train_test_split

from searchlab.config import FineConfig, ModelConfig
from searchlab.data import Dataset
from searchlab.metrics import Scoring
from searchlab.model import Scalers, build_model, split_hyperparameters, training_callbacks
from searchlab.narrow import FineSpace

COARSE_WINNER = "coarse-winner"


@dataclass(frozen=True)
class FineTrial:
    """One fine trial: its tuned values, score on the validation split and per-epoch curves."""

    trial_id: str  # KerasTuner's id, or COARSE_WINNER
    params: dict[str, Any]  # every hyperparameter the trial trained with
    tuned: dict[str, Any]  # the values the fine stage chose (empty for the coarse winner)
    score: float
    curves: dict[str, list[float]] = field(default_factory=dict)  # per epoch, from `first_epoch`
    error: str | None = None
    start_time: float = 0.0
    end_time: float = 0.0
    first_epoch: int = 0  # Hyperband continues some trials from an earlier one's weights

    @property
    def ok(self) -> bool:
        return self.error is None and math.isfinite(self.score)


@dataclass(frozen=True)
class FineResult:
    trials: tuple[FineTrial, ...]  # the tuner's trials, in order
    coarse_winner: FineTrial

    @property
    def best(self) -> FineTrial:
        """The best completed trial, the coarse winner included."""
        candidates = [t for t in (*self.trials, self.coarse_winner) if t.ok]
        return max(candidates, key=lambda t: t.score)


def validation_split(data: Dataset, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """The fine stage's fixed split of the training rows: X_fit, X_val, y_fit, y_val."""
    stratify = data.y_train if data.is_classification else None
    return tuple(train_test_split(data.X_train, data.y_train, test_size=fraction, random_state=seed,
                                  shuffle=True, stratify=stratify))


def run_fine(
    data: Dataset,
    space: FineSpace,
    defaults: dict[str, Any],
    coarse_best: dict[str, Any],
    settings: FineConfig,
    model_settings: ModelConfig,
    scoring: Scoring,
    seed: int,
    workdir: Path,
    verbose: int = 0,
    on_trial: Callable[[FineTrial], None] = lambda trial: None,
    done: Mapping[str, FineTrial] | None = None,
) -> FineResult:
    """Search `space` with KerasTuner, then train the coarse winner under the same protocol.

    Args:
        defaults: values for hyperparameters neither tuned nor fixed by `space`.
        coarse_best: the coarse winner's sampled values.
        workdir: KerasTuner's project directory; an existing one is resumed (KerasTuner reloads
            its finished trials and retries the one that was running).
        on_trial: called with each newly finished trial, the coarse winner last.
        done: trials already recorded (by trial id), reused rather than reported again.
    """
    done = dict(done or {})
    kt_config.DEBUG = verbose >= 2  # KerasTuner prints every failed trial's traceback by default
    X_fit, X_val, y_fit, y_val = validation_split(data, settings.validation_fraction, seed)
    scalers = Scalers.fit(X_fit, y_fit, data.task)
    X_fit, y_fit = scalers.transform(X_fit, y_fit)
    X_val, y_val = scalers.transform(X_val, y_val)
    base = {**defaults, **space.fixed}
    hypermodel = _MLPHyperModel(data, space, base, settings, model_settings, scalers.target_scale, seed, verbose)
    objective = kt.Objective("val_" + scoring.keras_name, scoring.direction)
    common = dict(objective=objective, seed=seed, max_consecutive_failed_trials=10**9,
                  executions_per_trial=settings.executions_per_trial, directory=str(workdir),
                  project_name="fine", overwrite=not (workdir / "fine" / "oracle.json").exists())
    tuner: kt.Tuner
    if settings.kind == "hyperband":
        tuner = _TrackedHyperband(hypermodel, max_epochs=settings.max_epochs, factor=settings.factor,
                                  hyperband_iterations=settings.hyperband_iterations, **common)
    else:
        tuner = _TrackedGridSearch(hypermodel, **common)
    tuner.setup_tracking(scoring, on_trial, done)
    fit_data = dict(x=X_fit, y=y_fit, validation_data=(X_val, y_val), callbacks=training_callbacks(model_settings))
    tuner.search(**fit_data, verbose=0)

    winner = done.get(COARSE_WINNER)
    if winner is None:
        winner_values = {**defaults, **coarse_best}
        if settings.kind == "hyperband":
            winner_values["epochs"] = settings.max_epochs
        winner = tuner.train_fixed(COARSE_WINNER, winner_values, fit_data)
        on_trial(winner)
    trials = sorted(tuner.finished.values(), key=lambda t: t.trial_id)
    return FineResult(tuple(trials), winner)


class _MLPHyperModel(kt.HyperModel):
    """Builds `searchlab.model.build_model` from the tuned hyperparameters plus fixed ones."""

    def __init__(self, data: Dataset, space: FineSpace, base: dict[str, Any], settings: FineConfig,
                 model_settings: ModelConfig, target_scale: float, seed: int, verbose: int) -> None:
        super().__init__()
        self.data, self.space, self.base = data, space, base
        self.settings, self.model_settings = settings, model_settings
        self.target_scale, self.seed, self.verbose = target_scale, seed, verbose

    def values(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """Every hyperparameter for one trial: the tuned ones from `hp`, the rest from `base`."""
        tuned = {}
        for name, param in self.space.tuned.items():
            if self.settings.kind == "grid":
                tuned[name] = hp.Choice(name, param.grid(self.settings.points))
            else:
                tuned[name] = param.declare(hp)
        return {**self.base, **tuned}

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        return self.build_values(self.values(hp))

    def build_values(self, values: dict[str, Any]) -> keras.Model:
        keras.utils.set_random_seed(self.seed)
        build, _ = split_hyperparameters(values)
        return build_model(n_features=self.data.n_features, task=self.data.task, n_classes=self.data.n_classes,
                           steps_per_execution=self.model_settings.steps_per_execution,
                           target_scale=self.target_scale, **build)

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
        return self.fit_values(self.values(hp), model, *args, **kwargs)

    def fit_values(self, values: dict[str, Any], model: keras.Model, *args: Any, **kwargs: Any) -> Any:
        _, fit = split_hyperparameters(values)
        kwargs.setdefault("epochs", fit["epochs"])  # Hyperband passes its own epoch budget
        kwargs["verbose"] = 2 if self.verbose >= 2 else 0
        history = model.fit(*args, batch_size=fit["batch_size"], **kwargs)
        losses = history.history.get("loss", [])
        bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
        if bad:
            raise kt.errors.FailedTrialError(f"training loss became {losses[bad[0]]} at epoch {bad[0] + 1}")
        return history


class _TrackingMixin:
    """Turns KerasTuner's trial hooks into `FineTrial` records handed to a callback.

    Hooks, not a callback passed to `search()`: KerasTuner deep-copies those (COMPAT.md).
    """

    hypermodel: _MLPHyperModel
    executions_per_trial: int

    def setup_tracking(self, scoring: Scoring, on_trial: Callable[[FineTrial], None],
                       done: dict[str, FineTrial]) -> None:
        self.scoring, self.on_trial_done = scoring, on_trial
        self.finished = {trial_id: t for trial_id, t in done.items() if trial_id != COARSE_WINNER}
        self._epochs: list[dict[str, float]] = []
        self._started = 0.0

    def on_trial_begin(self, trial: kt.engine.trial.Trial) -> None:
        super().on_trial_begin(trial)  # type: ignore[misc]
        self._epochs, self._started = [], time.time()

    def on_epoch_end(self, trial: Any, model: Any, epoch: int, logs: dict[str, float] | None = None) -> None:
        super().on_epoch_end(trial, model, epoch, logs=logs)  # type: ignore[misc]
        self._epochs.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})

    def on_trial_end(self, trial: kt.engine.trial.Trial) -> None:
        # Report before KerasTuner saves the trial as ended: if the search stops in between, the
        # resumed tuner retries the trial and the duplicate is dropped here (already finished).
        if trial.trial_id not in self.finished:
            values = self.hypermodel.values(trial.hyperparameters.copy())
            tuned = {name: values[name] for name in self.hypermodel.space.tuned}
            error = None
            if trial.status != kt.engine.trial.TrialStatus.COMPLETED:
                error = _last_line(trial.message) or f"trial ended {trial.status}"
            record = self._record(trial.trial_id, values, tuned, error)
            self.finished[trial.trial_id] = record
            self.on_trial_done(record)
        super().on_trial_end(trial)  # type: ignore[misc]

    def train_fixed(self, trial_id: str, values: dict[str, Any], fit_data: dict[str, Any]) -> FineTrial:
        """Train fixed hyperparameter values under the trials' protocol (data, callbacks, executions)."""
        self._epochs, self._started = [], time.time()
        error = None
        try:
            for _ in range(self.executions_per_trial):
                model = self.hypermodel.build_values(values)
                callbacks = [*fit_data["callbacks"], _EpochRecorder(self._epochs)]
                self.hypermodel.fit_values(values, model, fit_data["x"], fit_data["y"],
                                           validation_data=fit_data["validation_data"], callbacks=callbacks)
                del model
        except kt.errors.FailedTrialError as exc:
            error = str(exc)
        return self._record(trial_id, values, {}, error)

    def _record(self, trial_id: str, values: dict[str, Any], tuned: dict[str, Any], error: str | None) -> FineTrial:
        curves = _mean_by_epoch(self._epochs)
        first_epoch = min((int(r["epoch"]) for r in self._epochs), default=0)
        key = "val_" + self.scoring.keras_name
        series = [v for v in curves.get(key, []) if math.isfinite(v)]
        best = (min(series) if self.scoring.negated else max(series)) if series else float("nan")
        score = self.scoring.to_score(best) if error is None else float("nan")
        keras.backend.clear_session()
        return FineTrial(trial_id, values, tuned, score, curves, error, self._started, time.time(), first_epoch)


class _EpochRecorder(keras.callbacks.Callback):
    def __init__(self, sink: list[dict[str, float]]) -> None:
        super().__init__()
        self.sink = sink

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.sink.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})


class _TrackedGridSearch(_TrackingMixin, kt.GridSearch):
    pass


class _TrackedHyperband(_TrackingMixin, kt.Hyperband):
    pass


def _mean_by_epoch(records: list[dict[str, float]]) -> dict[str, list[float]]:
    """Per-epoch means over executions (each execution restarts its epoch count)."""
    by_epoch: dict[int, list[dict[str, float]]] = {}
    for record in records:
        by_epoch.setdefault(int(record["epoch"]), []).append(record)
    keys = sorted({k for r in records for k in r if k != "epoch"})
    return {k: [float(np.mean([r[k] for r in by_epoch[e] if k in r])) for e in sorted(by_epoch)] for k in keys}


def _last_line(message: str | None) -> str:
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
