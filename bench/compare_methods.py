"""The benchmarked methods on one data set: each returns a `MethodResult`.

Every method sees the same `Bench` (configuration, data and test split, budget plan). The four
non-searchlab searches refit their best candidate on all training rows with
`searchlab.final.refit_and_test`, for the epoch count where its validation loss was lowest.
`gbdt-reference` searches nothing: it is the reference searchlab's summary reports (gradient-boosted
trees with scikit-learn's defaults). Every method keeps its prediction on the test rows, so that
compare.py can score all of them on the same bootstrap resamples.
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
from compare_budget import Plan
from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (registers HalvingRandomSearchCV)
from sklearn.model_selection import HalvingRandomSearchCV, RandomizedSearchCV

from searchlab import pipeline
from searchlab.coarse import (
    end_fit_workers,
    find_net,
    make_cv,
    make_estimator,
    param_key,
    sampler_seed,
    silence_fit_warnings,
)
from searchlab.config import Config, compose
from searchlab.context import SearchContext
from searchlab.data import Dataset
from searchlab.errors import SearchInterrupted
from searchlab.final import RefitSchedule, best_epoch_count, reference_prediction, refit_and_test
from searchlab.fine import ScaledSplit, scaled_splits
from searchlab.infra.processes import worker_thread_env
from searchlab.metrics import Scoring, evaluate_predictions, scorer
from searchlab.model import (
    build_model,
    diverged,
    fit_model,
    split_hyperparameters,
    training_callbacks,
)
from searchlab.space import Param
from searchlab.uncertainty import Comparison

METHODS = ("searchlab-grid", "searchlab-hyperband", "random-search", "kerastuner-hyperband", "halving-random-search",
           "optuna-tpe", "gbdt-reference")
SEARCHLAB_EXPERIMENT = "bench-searchlab"  # the searchlab methods' own run trees
Trace = list[tuple[float, float]]  # (seconds since the method started, validation score) per finished trial


@dataclass(frozen=True)
class Bench:
    """What every method on one data set shares."""

    name: str
    overrides: tuple[str, ...]  # Hydra overrides (data set, budgets, seed, tracking); searchlab methods add theirs
    config: Config
    data: Dataset
    scoring: Scoring
    plan: Plan
    workdir: Path

    @property
    def space(self) -> dict[str, Param]:
        """What the other methods sample: searchlab's coarse space and the choices it compares on its winner."""
        return {**self.config.coarse_space(), **self.config.paired_choices()}

    @property
    def defaults(self) -> dict[str, Any]:
        return self.config.model.hyperparameters()

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def ctx(self) -> SearchContext:
        """What searchlab's stages take: the same data, metric, training settings and seed."""
        return SearchContext(self.data, self.scoring, self.config.model, self.seed)


@dataclass(frozen=True)
class MethodResult:
    method: str
    settings: dict[str, Any]
    planned_epochs: int
    best_val_score: float = math.nan  # the chosen candidate's validation score (scikit-learn sign: higher is better)
    test: dict[str, float] = field(default_factory=dict)
    started: float = 0.0
    wall_time: float = 0.0
    trials: int = 0
    epochs_trained: int = 0
    trace: Trace = field(default_factory=list)
    best_params: dict[str, Any] = field(default_factory=dict)
    search_run_id: str | None = None
    error: str | None = None
    # filled by compare.held_out: metric -> 95% bootstrap interval on the test rows, and the paired difference on
    # the searched metric against the first searchlab method (same resamples; positive: this method is better)
    test_interval: dict[str, tuple[float, float]] = field(default_factory=dict)
    versus_searchlab: Comparison | None = None
    # class probabilities or values on the test rows, for the bootstrap; not written to the JSON file
    test_prediction: np.ndarray | None = field(default=None, repr=False, compare=False)


def run_method(bench: Bench, method: str) -> MethodResult:
    """Run one method, timed; a method that fails is reported as failed and the benchmark goes on."""
    runners: dict[str, Callable[[Bench, float], MethodResult]] = {
        "searchlab-grid": lambda b, t: run_searchlab(b, "grid", t),
        "searchlab-hyperband": lambda b, t: run_searchlab(b, "hyperband", t),
        "random-search": run_random_search,
        "kerastuner-hyperband": run_keras_tuner,
        "halving-random-search": run_halving,
        "optuna-tpe": run_optuna,
        "gbdt-reference": run_reference,
    }
    started = time.time()
    try:
        result = runners[method](bench, started)
    except SearchInterrupted:
        raise
    except Exception as exc:  # one broken method must not lose the others' results
        traceback.print_exc()
        result = MethodResult(method, {}, bench.plan.planned(method), error=f"{type(exc).__name__}: {exc}")
    finally:
        keras.backend.clear_session()
        end_fit_workers(kill=False)  # every method starts its own workers and frees their memory
    return replace(result, started=started, wall_time=time.time() - started)


def run_searchlab(bench: Bench, kind: str, started: float) -> MethodResult:
    """A whole searchlab search; epochs from the result's curves (coarse: cv x the longest fold)."""
    extra = [f"search/fine={kind}", f"tracking.experiment={SEARCHLAB_EXPERIMENT}", "tracking.log_model=false",
             "verbose=0"]
    if kind == "hyperband":
        extra.append(f"search.fine.hyperband_iterations={bench.plan.hyperband_iterations}")
    config = compose(*bench.overrides, *extra)
    result = pipeline.run(config)
    coarse, fine = result.coarse, result.fine
    fine_trials = (*fine.trials, fine.coarse_winner)
    epochs = (config.search.coarse.cv * sum(len(t.curves.get("loss", [])) for t in coarse.trials)
              + config.search.fine.executions_per_trial * sum(len(t.curves.get("loss", [])) for t in fine_trials)
              + len(result.final.history.get("loss", [])))
    trace = sorted([(t.end_time - started, t.mean_score) for t in coarse.trials]
                   + [(t.end_time - started, t.score) for t in fine_trials])
    settings: dict[str, Any] = {"coarse.n_iter": config.search.coarse.n_iter, "coarse.cv": config.search.coarse.cv,
                                "epochs": config.model.epochs, "fine.kind": kind,
                                "fine.max_params": config.search.fine.max_params}
    if kind == "grid":
        settings["fine.points"] = config.search.fine.points
    else:
        settings |= {"fine.max_epochs": config.search.fine.max_epochs, "fine.factor": config.search.fine.factor,
                     "fine.hyperband_iterations": config.search.fine.hyperband_iterations}
    return MethodResult(f"searchlab-{kind}", settings, bench.plan.planned(f"searchlab-{kind}"), fine.best.score,
                        _test_metrics(result.final.test_metrics), trials=len(coarse.trials) + len(fine_trials),
                        epochs_trained=epochs, trace=trace, best_params=dict(result.final.params),
                        search_run_id=result.run_id, test_prediction=result.final.test_prediction)


# -- scikit-learn searches ----------------------------------------------------------------------

class FoldRecorder:
    """A scorer that also notes, per scored fold, the candidate, the time, the epochs trained and the
    validation-score curve (`Scoring.val_key`), one JSON line per fold in a file per worker process (workers
    cannot report back). A fold whose fit failed scores NaN and is not noted."""

    def __init__(self, scoring: Scoring, keys: Sequence[str], folder: Path) -> None:
        self.scorer = scorer(scoring)
        self.val_key = scoring.val_key
        self.keys = list(keys)
        self.folder = folder

    def __call__(self, estimator: Any, X: np.ndarray, y: np.ndarray) -> float:
        net = find_net(estimator)
        if net.fit_error_ is not None:  # `make_estimator`'s fits note a failure or NaN loss instead of raising
            return float("nan")  # as searchlab's coarse stage scores it; not recorded, so its epochs are not counted
        score = float(self.scorer(estimator, X, y))
        history = net.history_
        params = estimator.get_params()
        record = {"key": candidate_key({k: params[k] for k in self.keys}), "time": time.time(), "score": score,
                  "epochs": len(history.get("loss", [])),
                  "val_curve": [float(v) for v in history.get(self.val_key, [])],
                  "learning_rate": [float(v) for v in history.get("learning_rate", [])]}
        with open(self.folder / f"{os.getpid()}.jsonl", "a") as out:
            out.write(json.dumps(record) + "\n")
        return score

    def folds(self) -> list[dict[str, Any]]:
        return [json.loads(line) for path in sorted(self.folder.glob("*.jsonl"))
                for line in path.read_text().splitlines()]


def candidate_key(params: dict[str, Any]) -> str:
    return json.dumps(sorted((k, repr(v)) for k, v in params.items()))


def run_random_search(bench: Bench, started: float) -> MethodResult:
    """Plain RandomizedSearchCV over the coarse space, searchlab's estimator and folds."""
    coarse = bench.config.search.coarse
    distributions = _distributions(bench, skip=())
    recorder = FoldRecorder(bench.scoring, list(distributions), _fresh_dir(bench.workdir / "random-search"))
    search = RandomizedSearchCV(
        make_estimator(bench.ctx), distributions, n_iter=bench.plan.random_n_iter, scoring=recorder,
        cv=make_cv(bench.data, coarse.cv, bench.seed), n_jobs=coarse.n_jobs,
        random_state=sampler_seed(coarse, bench.seed), refit=False, error_score=np.nan, return_train_score=False)
    settings = {"n_iter": bench.plan.random_n_iter, "cv": coarse.cv, "epochs": bench.plan.epochs}
    return _sklearn_search(bench, "random-search", search, recorder, settings, started)


def run_halving(bench: Bench, started: float) -> MethodResult:
    """HalvingRandomSearchCV over the coarse space with the wrapper's epochs as the resource."""
    coarse, factor = bench.config.search.coarse, bench.config.search.fine.factor
    distributions = _distributions(bench, skip=("epochs",))  # the resource cannot also be searched
    resource = param_key(bench.data, "epochs")
    recorder = FoldRecorder(bench.scoring, [*distributions, resource],
                            _fresh_dir(bench.workdir / "halving-random-search"))
    search = HalvingRandomSearchCV(
        make_estimator(bench.ctx), distributions,
        n_candidates=bench.plan.halving_candidates, resource=resource, max_resources=bench.plan.epochs,
        min_resources="exhaust", factor=factor, scoring=recorder, cv=make_cv(bench.data, coarse.cv, bench.seed),
        n_jobs=coarse.n_jobs, random_state=sampler_seed(coarse, bench.seed), refit=False, error_score=np.nan,
        return_train_score=False)  # halving scores the train folds by default
    settings = {"n_candidates": bench.plan.halving_candidates, "factor": factor, "max_resources": bench.plan.epochs,
                "cv": coarse.cv}
    result = _sklearn_search(bench, "halving-random-search", search, recorder, settings, started)
    return replace(result, settings={**settings, "min_resources": search.min_resources_,
                                     "iterations": search.n_iterations_})


def _sklearn_search(bench: Bench, method: str, search: Any, recorder: FoldRecorder, settings: dict[str, Any],
                    started: float) -> MethodResult:
    """Fit a scikit-learn search as searchlab's coarse stage would, then refit its best on all training rows."""
    workers = (os.cpu_count() or 1) if search.n_jobs == -1 else search.n_jobs  # as the coarse stage counts them
    with worker_thread_env(workers), warnings.catch_warnings():
        silence_fit_warnings()  # failed fits score NaN, as in searchlab
        search.fit(bench.data.X_train, bench.data.y_train)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for fold in recorder.folds():
        by_key.setdefault(fold["key"], []).append(fold)
    results = search.cv_results_
    trace = sorted((max(f["time"] for f in by_key[key]) - started, float(score))
                   for params, score in zip(results["params"], results["mean_test_score"], strict=True)
                   if (key := candidate_key(params)) in by_key)
    best = by_key[candidate_key(search.best_params_)]
    # refit for the mean over folds of the epoch with the best validation score (what early stopping kept)
    key, mode = bench.scoring.val_key, bench.scoring.direction
    best_epochs = [best_epoch_count({key: f["val_curve"]}, f["epochs"], key, mode) for f in best]
    epochs = round(float(np.mean(best_epochs)))
    # and at the learning rates of the fold whose best epoch is nearest that count
    typical = best[int(np.argmin([abs(e - epochs) for e in best_epochs]))]
    params = {key.rsplit("__", 1)[-1]: _plain(value) for key, value in search.best_params_.items()}
    test, refit_epochs, prediction = _refit(bench, params, RefitSchedule(epochs, typical))
    return MethodResult(method, settings, bench.plan.planned(method), float(search.best_score_), test,
                        trials=len(results["params"]),
                        epochs_trained=sum(f["epochs"] for folds in by_key.values() for f in folds) + refit_epochs,
                        trace=trace, best_params=params, test_prediction=prediction)


def _distributions(bench: Bench, skip: Sequence[str]) -> dict[str, Any]:
    return {param_key(bench.data, name): param.distribution() for name, param in bench.space.items()
            if name not in skip}


# -- KerasTuner ---------------------------------------------------------------------------------

class WideHyperModel(kt.HyperModel):
    """`searchlab.model.build_model` with every coarse-space hyperparameter declared on `hp`.

    Hyperband owns the epoch count, so `epochs` is never declared.
    """

    def __init__(self, bench: Bench, splits: Mapping[str, ScaledSplit]) -> None:
        super().__init__()
        self.bench = bench
        self.splits = splits  # the fine stage's fixed split, scaled each way the space allows (`scaled_splits`)

    def values(self, hp: kt.HyperParameters) -> dict[str, Any]:
        declared = {name: param.declare(hp) for name, param in self.bench.space.items() if name != "epochs"}
        return {**self.bench.defaults, **declared}

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        keras.utils.set_random_seed(self.bench.seed)  # as searchlab's fine stage: same start for equal shapes
        values = self.values(hp)
        build, _ = split_hyperparameters(values)
        split, data = self.splits[values["scaling"]], self.bench.data
        return build_model(n_features=split.X_fit.shape[1], task=data.task, n_classes=data.n_classes,
                           steps_per_execution=self.bench.config.model.steps_per_execution,
                           target_scale=split.target_scale, **build)

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any, epochs: int, initial_epoch: int = 0,
            callbacks: list[keras.callbacks.Callback] | None = None, verbose: int = 0, **kwargs: Any) -> Any:
        """The split scaled as the trial's `scaling` says, through searchlab's tf.data input pipeline
        (`fit_model`), as every other method trains: fed NumPy arrays, Keras 3 re-wraps them every epoch
        (~4x the time per epoch, bench/speed.py). The tuner passes no data: the hypermodel holds it."""
        values = self.values(hp)
        _, fit = split_hyperparameters(values)
        split = self.splits[values["scaling"]]
        history = fit_model(model, split.X_fit, split.y_fit, validation=(split.X_val, split.y_val),
                            batch_size=fit["batch_size"], epochs=epochs, initial_epoch=initial_epoch,
                            seed=self.bench.seed, callbacks=callbacks, verbose=verbose)
        problem = diverged(history.history.get("loss", []), initial_epoch)
        if problem:
            raise kt.errors.FailedTrialError(problem)
        return history


class RecordingHyperband(kt.Hyperband):
    """Hyperband that keeps every trial's per-epoch validation score (`val_key`), learning rate and end time."""

    def __init__(self, *args: Any, val_key: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.val_key = val_key
        self.val_curve: dict[str, list[tuple[int, float]]] = {}
        self.learning_rate: dict[str, list[float]] = {}
        self.ended: dict[str, float] = {}

    def on_epoch_end(self, trial: Any, model: Any, epoch: int, logs: dict[str, float] | None = None) -> None:
        super().on_epoch_end(trial, model, epoch, logs=logs)
        self.val_curve.setdefault(trial.trial_id, []).append((epoch, float((logs or {}).get(self.val_key, math.nan))))
        if logs and "learning_rate" in logs:
            self.learning_rate.setdefault(trial.trial_id, []).append(float(logs["learning_rate"]))

    def on_trial_end(self, trial: Any) -> None:
        self.ended[trial.trial_id] = time.time()
        super().on_trial_end(trial)


def run_keras_tuner(bench: Bench, started: float) -> MethodResult:
    """KerasTuner Hyperband alone over the coarse space, on searchlab's fine-stage validation split."""
    data, fine, scoring = bench.data, bench.config.search.fine, bench.scoring
    scaling = bench.space.get("scaling")
    scalings = scaling.values if scaling is not None else (bench.defaults["scaling"],)
    hypermodel = WideHyperModel(bench, scaled_splits(data, fine.validation_fraction, bench.seed, scalings))
    tuner = RecordingHyperband(
        hypermodel, objective=kt.Objective(scoring.val_key, scoring.direction), val_key=scoring.val_key,
        max_epochs=bench.plan.epochs, factor=fine.factor, hyperband_iterations=bench.plan.kt_iterations,
        seed=bench.seed, max_consecutive_failed_trials=10**9, directory=str(bench.workdir), project_name="kerastuner",
        overwrite=True)
    tuner.search(verbose=0, callbacks=training_callbacks(bench.config.model, scoring))
    trials = tuner.oracle.trials
    trace = sorted((tuner.ended[tid] - started, scoring.to_score(t.score) if t.score is not None else math.nan)
                   for tid, t in trials.items() if tid in tuner.ended)
    best = tuner.oracle.get_best_trials(1)[0]
    curve = tuner.val_curve.get(best.trial_id, [])
    first = curve[0][0] if curve else 0  # Hyperband continues some trials from an earlier one's epochs
    epochs = first + best_epoch_count({"v": [v for _, v in curve]}, bench.plan.epochs, "v", scoring.direction)
    params = {k: v for k, v in hypermodel.values(best.hyperparameters.copy()).items() if k != "epochs"}
    rates = {"learning_rate": tuner.learning_rate.get(best.trial_id, [])}
    test, refit_epochs, prediction = _refit(bench, params, RefitSchedule(epochs, rates, first))
    settings = {"max_epochs": bench.plan.epochs, "factor": fine.factor,
                "hyperband_iterations": bench.plan.kt_iterations, "validation_fraction": fine.validation_fraction}
    return MethodResult("kerastuner-hyperband", settings, bench.plan.kerastuner, scoring.to_score(best.score), test,
                        trials=len(trials), epochs_trained=sum(map(len, tuner.val_curve.values())) + refit_epochs,
                        trace=trace, best_params=params, test_prediction=prediction)


# -- Optuna -------------------------------------------------------------------------------------

class _ReportEpochs(keras.callbacks.Callback):
    """Reports each epoch's validation score to an Optuna trial and stops the fit when the pruner says so."""

    def __init__(self, trial: Any, val_key: str, scoring: Scoring) -> None:
        super().__init__()
        self.trial, self.val_key, self.scoring = trial, val_key, scoring
        self.pruned = False

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        value = (logs or {}).get(self.val_key)
        if value is None or not math.isfinite(float(value)):
            return
        self.trial.report(self.scoring.to_score(float(value)), epoch)
        if self.trial.should_prune():
            self.pruned = True
            self.model.stop_training = True


def run_optuna(bench: Bench, started: float) -> MethodResult:
    """Optuna's TPE sampler with a median pruner on epochs, over the coarse space, on searchlab's fine-stage
    validation split and training callbacks: as many trials of up to `epochs` as B holds (less the refit), planned
    as the other methods' fits are (the pruner and early stopping end most sooner)."""
    try:
        import optuna
    except ImportError as exc:
        raise RuntimeError("optuna-tpe needs the bench extras: pip install -e '.[bench]' (make bench does)") from exc
    data, fine, scoring = bench.data, bench.config.search.fine, bench.scoring
    scaling = bench.space.get("scaling")
    scalings = scaling.values if scaling is not None else (bench.defaults["scaling"],)
    splits = scaled_splits(data, fine.validation_fraction, bench.seed, scalings)
    curves: dict[int, dict[str, list[float]]] = {}
    ended: dict[int, float] = {}

    def suggest(trial: Any, param: Param) -> Any:
        if param.kind == "choice":
            return trial.suggest_categorical(param.name, list(param.values))
        if param.kind == "int":
            return trial.suggest_int(param.name, int(param.low), int(param.high), log=param.log)
        return trial.suggest_float(param.name, param.low, param.high, log=param.log)

    def objective(trial: Any) -> float:
        values = {**bench.defaults, **{name: suggest(trial, p) for name, p in bench.space.items()}}
        build, fit = split_hyperparameters(values)
        split = splits[values["scaling"]]
        keras.backend.clear_session()
        keras.utils.set_random_seed(bench.seed)
        model = build_model(n_features=split.X_fit.shape[1], task=data.task, n_classes=data.n_classes,
                            steps_per_execution=bench.config.model.steps_per_execution,
                            target_scale=split.target_scale, **build)
        report = _ReportEpochs(trial, scoring.val_key, scoring)
        callbacks = [*training_callbacks(bench.config.model, scoring), report]
        history = fit_model(model, split.X_fit, split.y_fit, validation=(split.X_val, split.y_val),
                            batch_size=fit["batch_size"], epochs=bench.plan.epochs, seed=bench.seed,
                            callbacks=callbacks)
        curves[trial.number] = {k: [float(v) for v in vs] for k, vs in history.history.items()}
        ended[trial.number] = time.time()
        if diverged(history.history.get("loss", [])):
            raise optuna.TrialPruned("diverged")
        if report.pruned:
            raise optuna.TrialPruned()
        series = [v for v in curves[trial.number].get(scoring.val_key, []) if math.isfinite(v)]
        return scoring.to_score(min(series) if scoring.negated else max(series))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=bench.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5))
    study.optimize(objective, n_trials=bench.plan.optuna_trials)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    trace = sorted((ended[t.number] - started, float(t.value if t.value is not None else math.nan)) for t in complete)
    best = study.best_trial
    curve = curves[best.number]
    epochs = best_epoch_count(curve, bench.plan.epochs, scoring.val_key, scoring.direction)
    params = {**bench.defaults, **best.params}
    test, refit_epochs, prediction = _refit(bench, params, RefitSchedule(epochs, curve))
    settings = {"sampler": "TPESampler", "pruner": "MedianPruner(n_startup_trials=5, n_warmup_steps=5)",
                "validation_fraction": fine.validation_fraction, "pruned": len(study.trials) - len(complete)}
    best_value = float(best.value if best.value is not None else math.nan)
    return MethodResult("optuna-tpe", settings, bench.plan.budget, best_value, test, trials=len(study.trials),
                        epochs_trained=sum(len(c.get("loss", [])) for c in curves.values()) + refit_epochs,
                        trace=trace, best_params={k: _plain(v) for k, v in best.params.items()},
                        test_prediction=prediction)


# -- the reference --------------------------------------------------------------------------------

def run_reference(bench: Bench, started: float) -> MethodResult:
    """Gradient-boosted trees with scikit-learn's defaults on the same training rows, as searchlab's summary
    reports them (`searchlab.final.reference_prediction`): no search, no validation score."""
    data = bench.data
    prediction = reference_prediction(data, bench.seed)
    test = _test_metrics(evaluate_predictions(data.task, data.y_test, prediction))
    return MethodResult("gbdt-reference", {"model": "HistGradientBoosting (defaults)"}, 0, test=test, trials=1,
                        test_prediction=prediction)


def _refit(bench: Bench, params: dict[str, Any], schedule: RefitSchedule) -> tuple[dict[str, float], int, np.ndarray]:
    """Test metrics of `params` refit on all training rows (as long as `schedule` says, at its learning rates), the
    epochs that refit trained, and its prediction on the test rows. The reference is left to the `gbdt-reference`
    method (fitted once)."""
    final = refit_and_test(bench.ctx, {**bench.defaults, **params}, schedule,
                           settings=replace(bench.config.final, reference=False))
    return _test_metrics(final.test_metrics), len(final.history.get("loss", [])), final.test_prediction


def _test_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {**metrics, "mse": metrics["rmse"] ** 2} if "rmse" in metrics else dict(metrics)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _fresh_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=False)
    return path
