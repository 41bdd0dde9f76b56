"""searchlab against plain scikit-learn and KerasTuner searches, side by side on the same data.

    .venv/bin/python bench/compare.py [--quick] [--data-dir DIR] [--datasets NAME ...] [hydra overrides]
    make bench ARGS=--quick

Per data set, every method gets the same held-out test split (`load_dataset` with the same seed)
and about the same planned number of training epochs, B, taken from searchlab's grid settings:

  searchlab-grid         `pipeline.run` with search/fine=grid (defines B)
  searchlab-hyperband    `pipeline.run` with search/fine=hyperband, hyperband_iterations sized to B
  random-search          RandomizedSearchCV over the coarse space, n_iter * cv * epochs ~ B
  kerastuner-hyperband   KerasTuner Hyperband over the coarse space on a validation split
  halving-random-search  HalvingRandomSearchCV with epochs as the resource

The non-searchlab methods refit their best candidate on all training rows with
`searchlab.final.refit_and_test`, for the epoch count where its validation loss was lowest.
Results: a markdown table, a JSON file and a best-so-far plot per data set under bench/results/,
one MLflow parent run per data set (experiment `bench`) with a child run per method, and the
quality targets at the end. How epochs are counted: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
from hydra import compose, initialize_config_dir
from joblib.externals.loky import get_reusable_executor
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.exceptions import FitFailedWarning
from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (registers HalvingRandomSearchCV)
from sklearn.metrics import get_scorer
from sklearn.model_selection import HalvingRandomSearchCV, RandomizedSearchCV

from searchlab import pipeline
from searchlab.cli import _silence_native_stderr
from searchlab.coarse import _find_net, _threads_per_worker, _workers, make_cv, make_estimator, param_key
from searchlab.config import CONF_DIR, PROJECT_ROOT, Config, from_dictconfig, register_schemas
from searchlab.data import Dataset, check_cv_feasible, load_dataset
from searchlab.errors import SearchlabError
from searchlab.final import best_epoch_count, refit_and_test
from searchlab.fine import validation_split
from searchlab.metrics import Scoring, scoring_for
from searchlab.model import Scalers, build_model, split_hyperparameters, training_callbacks
from searchlab.progress import format_duration
from searchlab.space import Param
from searchlab.tracking import Tracker

METHODS = ("searchlab-grid", "searchlab-hyperband", "random-search", "kerastuner-hyperband", "halving-random-search")
SHARED = ("avila-tr", "tree_class", "traffic_volume")
TASKS = {"avila-tr": "binary", "tree_class": "binary", "traffic_volume": "regression"}
# Tiny budgets everywhere, but the full wide space: two data sets in under 10 minutes on 2 cores.
QUICK = ("model.epochs=6", "model.patience=2", "search.coarse.n_iter=4", "search.coarse.cv=2",
         "search.fine.max_params=1", "search.fine.points=2", "search.fine.max_epochs=6")
QUICK_DATASETS = ("digits", "avila-tr")
SEARCHLAB_EXPERIMENT = "bench-searchlab"  # the searchlab methods' own run trees
Trace = list[tuple[float, float]]  # (seconds since the method started, validation score) per finished trial


# -- budgets ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """Planned training epochs per method, each method's settings sized so they come close to `budget`."""

    epochs: int  # E, the per-fit upper bound (model.epochs)
    budget: int  # B: searchlab-grid's plan
    hyperband_iterations: int  # searchlab-hyperband's fine stage
    hyperband: int
    random_n_iter: int
    random: int
    kt_iterations: int
    kerastuner: int
    halving_candidates: int
    halving: int

    def planned(self, method: str) -> int:
        return {"searchlab-grid": self.budget, "searchlab-hyperband": self.hyperband, "random-search": self.random,
                "kerastuner-hyperband": self.kerastuner, "halving-random-search": self.halving}[method]


def hyperband_epochs(max_epochs: int, factor: int) -> int:
    """Epochs one KerasTuner Hyperband iteration trains (continued trials only train their extra epochs).

    Reads the schedule from KerasTuner's own oracle, so it cannot drift from what the tuner runs.
    """
    oracle = kt.oracles.HyperbandOracle(kt.Objective("val_loss", "min"), max_epochs=max_epochs, factor=factor)
    total = 0
    for bracket in range(oracle._get_num_brackets()):
        for rung in range(bracket + 1):
            before = oracle._get_epochs(bracket, rung - 1) if rung else 0
            total += oracle._get_size(bracket, rung) * (oracle._get_epochs(bracket, rung) - before)
    return total


def halving_epochs(n_candidates: int, max_resources: int, factor: int, cv: int) -> int:
    """Epochs `HalvingRandomSearchCV(min_resources="exhaust", resource=epochs)` plans (its schedule, per fold)."""
    required = 1 + math.floor(math.log(n_candidates, factor) + 1e-9)
    min_resources = max(1, max_resources // factor ** (required - 1))
    possible = 1 + math.floor(math.log(max_resources // min_resources, factor) + 1e-9)
    total, candidates = 0, n_candidates
    for iteration in range(min(required, possible)):
        total += candidates * min(min_resources * factor**iteration, max_resources)
        candidates = math.ceil(candidates / factor)
    return cv * total


def make_plan(config: Config) -> Plan:
    """B = coarse (n_iter * cv * E) + fine grid ((points ** max_params + 1) * E) + final refit (E)."""
    coarse, fine, epochs = config.search.coarse, config.search.fine, config.model.epochs
    grid_fine = fine.points**fine.max_params * epochs  # an estimate: choices and fixed ranges change the grid
    budget = coarse.n_iter * coarse.cv * epochs + grid_fine + 2 * epochs  # + the coarse winner + the refit
    coarse_part = coarse.n_iter * coarse.cv * epochs
    per_hb = hyperband_epochs(fine.max_epochs, fine.factor)
    hb_iterations = max(1, round(grid_fine / per_hb))
    hyperband = coarse_part + hb_iterations * per_hb + 2 * fine.max_epochs  # + the coarse winner + the refit
    n_iter = max(1, round((budget - epochs) / (coarse.cv * epochs)))
    per_kt = hyperband_epochs(epochs, fine.factor)
    kt_iterations = max(1, round((budget - epochs) / per_kt))
    candidates = min(range(1, budget // coarse.cv + 2),
                     key=lambda n: abs(halving_epochs(n, epochs, fine.factor, coarse.cv) + epochs - budget))
    return Plan(epochs, budget, hb_iterations, hyperband, n_iter, n_iter * coarse.cv * epochs + epochs,
                kt_iterations, kt_iterations * per_kt + epochs, candidates,
                halving_epochs(candidates, epochs, fine.factor, coarse.cv) + epochs)


# -- one data set, one method --------------------------------------------------------------------

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
        return self.config.coarse_space()

    @property
    def defaults(self) -> dict[str, Any]:
        return self.config.model.hyperparameters()

    @property
    def seed(self) -> int:
        return self.config.seed


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


def run_method(bench: Bench, method: str) -> MethodResult:
    """Run one method, timed; a method that fails is reported as failed and the benchmark goes on."""
    runners: dict[str, Callable[[Bench, float], MethodResult]] = {
        "searchlab-grid": lambda b, t: run_searchlab(b, "grid", t),
        "searchlab-hyperband": lambda b, t: run_searchlab(b, "hyperband", t),
        "random-search": run_random_search,
        "kerastuner-hyperband": run_keras_tuner,
        "halving-random-search": run_halving,
    }
    started = time.time()
    try:
        result = runners[method](bench, started)
    except Exception as exc:  # one broken method must not lose the others' results
        traceback.print_exc()
        result = MethodResult(method, {}, bench.plan.planned(method), error=f"{type(exc).__name__}: {exc}")
    finally:
        keras.backend.clear_session()
        get_reusable_executor().shutdown(wait=True)  # every method starts its own workers and frees their memory
    return replace(result, started=started, wall_time=time.time() - started)


def run_searchlab(bench: Bench, kind: str, started: float) -> MethodResult:
    """A whole searchlab search; epochs from the result's curves (coarse: cv x the longest fold)."""
    extra = [f"search/fine={kind}", f"tracking.experiment={SEARCHLAB_EXPERIMENT}", "tracking.log_model=false",
             "verbose=0"]
    if kind == "hyperband":
        extra.append(f"search.fine.hyperband_iterations={bench.plan.hyperband_iterations}")
    config = compose_config(*bench.overrides, *extra)
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
                        search_run_id=result.run_id)


# -- scikit-learn searches ----------------------------------------------------------------------

class FoldRecorder:
    """A scorer that also notes, per scored fold, the candidate, the time, the epochs trained and the
    validation-loss curve, one JSON line per fold in a file per worker process (workers cannot report back)."""

    def __init__(self, scoring: str, keys: Sequence[str], folder: Path) -> None:
        self.scorer = get_scorer(scoring)
        self.keys = list(keys)
        self.folder = folder

    def __call__(self, estimator: Any, X: np.ndarray, y: np.ndarray) -> float:
        score = float(self.scorer(estimator, X, y))
        history = _find_net(estimator).history_
        params = estimator.get_params()
        record = {"key": candidate_key({k: params[k] for k in self.keys}), "time": time.time(), "score": score,
                  "epochs": len(history.get("loss", [])), "val_loss": [float(v) for v in history.get("val_loss", [])]}
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
    recorder = FoldRecorder(bench.scoring.name, list(distributions), _fresh_dir(bench.workdir / "random-search"))
    search = RandomizedSearchCV(
        make_estimator(bench.data, bench.defaults, bench.config.model, bench.seed), distributions,
        n_iter=bench.plan.random_n_iter, scoring=recorder, cv=make_cv(bench.data, coarse.cv, bench.seed),
        n_jobs=coarse.n_jobs, random_state=bench.seed if coarse.random_state is None else coarse.random_state,
        refit=False, error_score=np.nan, return_train_score=False)
    settings = {"n_iter": bench.plan.random_n_iter, "cv": coarse.cv, "epochs": bench.plan.epochs}
    return _sklearn_search(bench, "random-search", search, recorder, settings, started)


def run_halving(bench: Bench, started: float) -> MethodResult:
    """HalvingRandomSearchCV over the coarse space with the wrapper's epochs as the resource."""
    coarse, factor = bench.config.search.coarse, bench.config.search.fine.factor
    distributions = _distributions(bench, skip=("epochs",))  # the resource cannot also be searched
    resource = param_key(bench.data, "epochs")
    recorder = FoldRecorder(bench.scoring.name, [*distributions, resource],
                            _fresh_dir(bench.workdir / "halving-random-search"))
    search = HalvingRandomSearchCV(
        make_estimator(bench.data, bench.defaults, bench.config.model, bench.seed), distributions,
        n_candidates=bench.plan.halving_candidates, resource=resource, max_resources=bench.plan.epochs,
        min_resources="exhaust", factor=factor, scoring=recorder, cv=make_cv(bench.data, coarse.cv, bench.seed),
        n_jobs=coarse.n_jobs, random_state=bench.seed if coarse.random_state is None else coarse.random_state,
        refit=False, error_score=np.nan, return_train_score=False)  # halving scores the train folds by default
    settings = {"n_candidates": bench.plan.halving_candidates, "factor": factor, "max_resources": bench.plan.epochs,
                "cv": coarse.cv}
    result = _sklearn_search(bench, "halving-random-search", search, recorder, settings, started)
    return replace(result, settings={**settings, "min_resources": search.min_resources_,
                                     "iterations": search.n_iterations_})


def _sklearn_search(bench: Bench, method: str, search: Any, recorder: FoldRecorder, settings: dict[str, Any],
                    started: float) -> MethodResult:
    """Fit a scikit-learn search as searchlab's coarse stage would, then refit its best on all training rows."""
    with _threads_per_worker(_workers(search.n_jobs)), warnings.catch_warnings():
        warnings.simplefilter("ignore", FitFailedWarning)  # failed fits score NaN, as in searchlab
        search.fit(bench.data.X_train, bench.data.y_train)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for fold in recorder.folds():
        by_key.setdefault(fold["key"], []).append(fold)
    results = search.cv_results_
    trace = sorted((max(f["time"] for f in by_key[key]) - started, float(score))
                   for params, score in zip(results["params"], results["mean_test_score"], strict=True)
                   if (key := candidate_key(params)) in by_key)
    best = by_key[candidate_key(search.best_params_)]
    # refit for the mean over folds of the epoch with the lowest validation loss (what early stopping kept)
    epochs = round(float(np.mean([best_epoch_count({"val_loss": f["val_loss"]}, f["epochs"]) for f in best])))
    params = {key.rsplit("__", 1)[-1]: _plain(value) for key, value in search.best_params_.items()}
    test, refit_epochs = _refit(bench, params, epochs)
    return MethodResult(method, settings, bench.plan.planned(method), float(search.best_score_), test,
                        trials=len(results["params"]),
                        epochs_trained=sum(f["epochs"] for folds in by_key.values() for f in folds) + refit_epochs,
                        trace=trace, best_params=params)


def _distributions(bench: Bench, skip: Sequence[str]) -> dict[str, Any]:
    return {param_key(bench.data, name): param.distribution() for name, param in bench.space.items()
            if name not in skip}


# -- KerasTuner ---------------------------------------------------------------------------------

class WideHyperModel(kt.HyperModel):
    """`searchlab.model.build_model` with every coarse-space hyperparameter declared on `hp`.

    Hyperband owns the epoch count, so `epochs` is never declared.
    """

    def __init__(self, bench: Bench, target_scale: float) -> None:
        super().__init__()
        self.bench, self.target_scale = bench, target_scale

    def values(self, hp: kt.HyperParameters) -> dict[str, Any]:
        declared = {name: param.declare(hp) for name, param in self.bench.space.items() if name != "epochs"}
        return {**self.bench.defaults, **declared}

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        keras.utils.set_random_seed(self.bench.seed)  # as searchlab's fine stage: same start for equal shapes
        build, _ = split_hyperparameters(self.values(hp))
        data = self.bench.data
        return build_model(n_features=data.n_features, task=data.task, n_classes=data.n_classes,
                           steps_per_execution=self.bench.config.model.steps_per_execution,
                           target_scale=self.target_scale, **build)

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
        _, fit = split_hyperparameters(self.values(hp))
        history = model.fit(*args, batch_size=fit["batch_size"], **kwargs)
        if not all(math.isfinite(v) for v in history.history.get("loss", [])):
            raise kt.errors.FailedTrialError("training loss became NaN or infinite")
        return history


class RecordingHyperband(kt.Hyperband):
    """Hyperband that keeps every trial's per-epoch validation loss and its end time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.val_loss: dict[str, list[tuple[int, float]]] = {}
        self.ended: dict[str, float] = {}

    def on_epoch_end(self, trial: Any, model: Any, epoch: int, logs: dict[str, float] | None = None) -> None:
        super().on_epoch_end(trial, model, epoch, logs=logs)
        self.val_loss.setdefault(trial.trial_id, []).append((epoch, float((logs or {}).get("val_loss", math.nan))))

    def on_trial_end(self, trial: Any) -> None:
        self.ended[trial.trial_id] = time.time()
        super().on_trial_end(trial)


def run_keras_tuner(bench: Bench, started: float) -> MethodResult:
    """KerasTuner Hyperband alone over the coarse space, on searchlab's fine-stage validation split."""
    data, fine, scoring = bench.data, bench.config.search.fine, bench.scoring
    X_fit, X_val, y_fit, y_val = validation_split(data, fine.validation_fraction, bench.seed)
    scalers = Scalers.fit(X_fit, y_fit, data.task)
    X_fit, y_fit = scalers.transform(X_fit, y_fit)
    X_val, y_val = scalers.transform(X_val, y_val)
    hypermodel = WideHyperModel(bench, scalers.target_scale)
    tuner = RecordingHyperband(
        hypermodel, objective=kt.Objective("val_" + scoring.keras_name, scoring.direction),
        max_epochs=bench.plan.epochs, factor=fine.factor, hyperband_iterations=bench.plan.kt_iterations,
        seed=bench.seed, max_consecutive_failed_trials=10**9, directory=str(bench.workdir), project_name="kerastuner",
        overwrite=True)
    tuner.search(X_fit, y_fit, validation_data=(X_val, y_val), callbacks=training_callbacks(bench.config.model),
                 verbose=0)
    trials = tuner.oracle.trials
    trace = sorted((tuner.ended[tid] - started, scoring.to_score(t.score) if t.score is not None else math.nan)
                   for tid, t in trials.items() if tid in tuner.ended)
    best = tuner.oracle.get_best_trials(1)[0]
    curve = tuner.val_loss.get(best.trial_id, [])
    first = curve[0][0] if curve else 0  # Hyperband continues some trials from an earlier one's epochs
    epochs = first + best_epoch_count({"val_loss": [v for _, v in curve]}, bench.plan.epochs)
    params = {k: v for k, v in hypermodel.values(best.hyperparameters.copy()).items() if k != "epochs"}
    test, refit_epochs = _refit(bench, params, epochs)
    settings = {"max_epochs": bench.plan.epochs, "factor": fine.factor,
                "hyperband_iterations": bench.plan.kt_iterations, "validation_fraction": fine.validation_fraction}
    return MethodResult("kerastuner-hyperband", settings, bench.plan.kerastuner, scoring.to_score(best.score), test,
                        trials=len(trials), epochs_trained=sum(map(len, tuner.val_loss.values())) + refit_epochs,
                        trace=trace, best_params=params)


def _refit(bench: Bench, params: dict[str, Any], epochs: int) -> tuple[dict[str, float], int]:
    """Test metrics of `params` refit on all training rows, and the epochs that refit trained."""
    final = refit_and_test(bench.data, {**bench.defaults, **params}, epochs, bench.config.model, bench.seed)
    return _test_metrics(final.test_metrics), len(final.history.get("loss", []))


def _test_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {**metrics, "mse": metrics["rmse"] ** 2} if "rmse" in metrics else dict(metrics)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _fresh_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=False)
    return path


# -- reporting ----------------------------------------------------------------------------------

def score_columns(bench: Bench) -> tuple[str, str]:
    return ("accuracy", "log_loss") if bench.data.is_classification else ("rmse", "mse")


def table(bench: Bench, results: Sequence[MethodResult]) -> str:
    """Markdown table of one data set."""
    metric, (first, second) = bench.scoring.display_name, score_columns(bench)
    lines = [f"### {bench.name}: {bench.data.describe()}", "",
             f"Planned budget B = {bench.plan.budget} epochs (at most {bench.plan.epochs} per fit).", "",
             f"| method | best val {metric} | test {first} | test {second} | wall time | trials | "
             "epochs trained (planned) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if r.error:
            lines.append(f"| {r.method} | failed: {r.error[:120]} | | | {format_duration(r.wall_time)} | | |")
            continue
        lines.append(f"| {r.method} | {bench.scoring.to_metric(r.best_val_score):.4f} | {r.test[first]:.4f} | "
                     f"{r.test[second]:.4f} | {format_duration(r.wall_time)} | {r.trials} | "
                     f"{r.epochs_trained} ({r.planned_epochs}) |")
    return "\n".join(lines)


def plot(bench: Bench, results: Sequence[MethodResult], path: Path) -> Path:
    """Best validation score so far against wall time, one line per method."""
    fig = Figure(figsize=(8.0, 5.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for r in results:
        if not r.trace:
            continue
        times = np.array([t for t, _ in r.trace])
        values = np.array([bench.scoring.to_metric(s) for _, s in r.trace])
        running = (np.fmin if bench.scoring.negated else np.fmax).accumulate(values)
        ax.step(np.r_[times, r.wall_time], np.r_[running, running[-1]], where="post", label=r.method)
    metric = bench.scoring.display_name
    ax.set(title=f"{bench.name}: best validation {metric} so far", xlabel="seconds since the method started",
           ylabel=f"{metric} ({'lower' if bench.scoring.negated else 'higher'} is better)")
    ax.legend(fontsize=8)
    fig.savefig(path, format="png")
    return path


def report(bench: Bench, results: Sequence[MethodResult], out: Path, prefix: str, tracker: Tracker,
           parent: str) -> str:
    """Write the table, JSON and plot of one data set, and log them and every method to MLflow."""
    text = table(bench, results)
    stem = out / f"{prefix}-{bench.name}"
    stem.with_suffix(".md").write_text(text + "\n")
    document = {"dataset": bench.name, "data": bench.data.describe(), "seed": bench.seed,
                "scoring": bench.scoring.name, "overrides": list(bench.overrides), "plan": asdict(bench.plan),
                "methods": [asdict(r) for r in results]}
    stem.with_suffix(".json").write_text(json.dumps(_finite(document), indent=1) + "\n")
    plot(bench, results, stem.with_suffix(".png"))

    for r in results:
        metrics = {"best_val_score": r.best_val_score,
                   f"best_val_{bench.scoring.display_name}": bench.scoring.to_metric(r.best_val_score),
                   **{f"test_{k}": v for k, v in r.test.items()}, "wall_time_s": r.wall_time, "trials": r.trials,
                   "epochs_trained": r.epochs_trained, "planned_epochs": r.planned_epochs}
        tags = {"bench.run": "method", "bench.method": r.method}
        if r.search_run_id:
            tags["bench.search_run_id"] = r.search_run_id
        running = (np.fmin if bench.scoring.negated else np.fmax).accumulate(
            [bench.scoring.to_metric(s) for _, s in r.trace] or [math.nan])
        tracker.log_trial(parent, r.method, tags, {**r.settings, **{f"best.{k}": v for k, v in r.best_params.items()}},
                          metrics, {f"best_so_far_{bench.scoring.display_name}": list(running)},
                          r.started, r.started + r.wall_time, r.error)
    tracker.log(parent, tags={"mlflow.note.content": text})
    for suffix in (".md", ".json", ".png"):
        tracker.client.log_artifact(parent, str(stem.with_suffix(suffix)))
    return text


def _finite(value: Any) -> Any:
    """JSON has no NaN: None instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# -- quality targets ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    dataset: str
    metric: str
    threshold: float
    lower_is_better: bool
    time_limit: float | None = None

    def describe(self) -> str:
        limit = f" within {self.time_limit / 60:.0f} min" if self.time_limit else ""
        return f"{self.dataset} test {self.metric} {'<=' if self.lower_is_better else '>='} {self.threshold:g}{limit}"

    def met(self, result: MethodResult) -> bool:
        value = result.test.get(self.metric, math.nan)
        good = value <= self.threshold if self.lower_is_better else value >= self.threshold
        return good and (self.time_limit is None or result.wall_time <= self.time_limit)


TARGETS = (Target("avila-tr", "accuracy", 0.97, False, 20 * 60), Target("tree_class", "log_loss", 0.155, True),
           Target("traffic_volume", "mse", 24.0, True))


def time_to_reach(trace: Trace, score: float) -> float | None:
    """Seconds until the best-so-far score first reaches `score` (scikit-learn sign), or None."""
    for elapsed, value in sorted(trace):
        if math.isfinite(value) and value >= score - 1e-12:
            return elapsed
    return None


def targets_report(all_results: dict[str, list[MethodResult]]) -> str:
    """The quality targets with measured values, and searchlab's speed against plain RandomizedSearchCV."""
    lines = ["## Quality targets", ""]
    for target in TARGETS:
        results = [r for r in all_results.get(target.dataset, []) if not r.error]
        if not results:
            lines.append(f"- {target.describe()}: not measured (data set not run)")
            continue
        cells = [f"{r.method} {r.test[target.metric]:.4f} in {format_duration(r.wall_time)}"
                 f" ({'met' if target.met(r) else 'not met'})" for r in results]
        searchlab_met = [r.method for r in results if r.method.startswith("searchlab") and target.met(r)]
        verdict = f"MET by {', '.join(searchlab_met)}" if searchlab_met else "NOT MET by searchlab"
        lines.append(f"- {target.describe()}: {verdict}; " + "; ".join(cells))
    lines += ["", "searchlab reaches plain RandomizedSearchCV's best validation score in at most half its wall time "
              "(from the best-so-far traces; CV and hold-out validation scores compared as they are):"]
    for name, results in all_results.items():
        by_method = {r.method: r for r in results if not r.error}
        plain = by_method.get("random-search")
        if plain is None:
            lines.append(f"- {name}: not measured (random-search missing or failed)")
            continue
        parts = []
        for method in ("searchlab-grid", "searchlab-hyperband"):
            if method not in by_method:
                continue
            reached = time_to_reach(by_method[method].trace, plain.best_val_score)
            met = reached is not None and reached <= plain.wall_time / 2
            when = f"after {format_duration(reached)}" if reached is not None else "never"
            parts.append(f"{method} {when} ({'met' if met else 'not met'})")
        lines.append(f"- {name}: random-search best {plain.best_val_score:.4f} in {format_duration(plain.wall_time)}, "
                     f"half is {format_duration(plain.wall_time / 2)}; " + "; ".join(parts or ["no searchlab result"]))
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------

def compose_config(*overrides: str) -> Config:
    """The project's real `conf/` with Hydra overrides, validated."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return from_dictconfig(compose("config", overrides=list(overrides)))


def dataset_overrides(name: str, data_dir: Path) -> tuple[str, ...] | str:
    """Hydra overrides selecting data set `name`, or why it is unavailable."""
    if name == "digits":
        return ("dataset=digits",)
    feats, target = data_dir / f"{name}_feats.csv", data_dir / f"{name}_target.csv"
    missing = [str(p) for p in (feats, target) if not p.is_file()]
    if missing:
        return f"skipping {name}: {', '.join(missing)} not found (point --data-dir at the shared data folder)"
    return ("dataset=csv", f"dataset.path='{feats}'", f"dataset.target_path='{target}'", f"dataset.task={TASKS[name]}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, digits + avila-tr: under 10 minutes")
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT.parent / "shared" / "data",
                        help="folder with the shared <name>_feats.csv / <name>_target.csv files")
    parser.add_argument("--datasets", nargs="+", choices=("digits", *SHARED), help="default: all (--quick: "
                        + " ".join(QUICK_DATASETS) + ")")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tracking-uri", help="MLflow store (default: the project's mlruns/mlflow.db)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    parser.add_argument("--verbose", action="store_true", help="keep TensorFlow's and the workers' console chatter")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every method, e.g. model.patience=3")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.verbose:
        _silence_native_stderr()  # as the searchlab command: TensorFlow's C++ and worker-process chatter
        for noisy in ("tensorflow", "absl", "mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", "Skipping variable loading for optimizer", UserWarning)  # Hyperband resumes
    register_schemas()
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = "compare-quick" if args.quick else "compare"
    common = (*(QUICK if args.quick else ()), *args.overrides, f"seed={args.seed}",
              *([f"tracking.uri='{args.tracking_uri}'"] if args.tracking_uri else []))
    names = args.datasets or (QUICK_DATASETS if args.quick else ("digits", *SHARED))
    started = time.time()
    all_results: dict[str, list[MethodResult]] = {}
    tables = []
    for name in names:
        overrides = dataset_overrides(name, args.data_dir.resolve())
        if isinstance(overrides, str):
            print(f"bench: {overrides}")
            continue
        overrides = (*overrides, *common)
        try:
            config = compose_config(*overrides)
            data = load_dataset(config.dataset, config.seed)
            check_cv_feasible(data, config.search.coarse.cv)
            scoring = scoring_for(data.task, config.search.coarse.scoring)
        except SearchlabError as exc:
            print(f"bench: skipping {name}: {exc}")
            continue
        plan = make_plan(config)
        tracker = Tracker(config.tracking.uri, "bench")
        parent = tracker.start_run(f"bench {name}", {"bench.run": "dataset", "bench.dataset": name,
                                                     "bench.quick": str(args.quick).lower()})
        tracker.log(parent, params={"seed": config.seed, "overrides": " ".join(overrides), **asdict(plan)})
        print(f"\n[{name}] {data.describe()}; planned budget B = {plan.budget} epochs")
        try:
            with tempfile.TemporaryDirectory(prefix="searchlab-bench-") as workdir:
                bench = Bench(name, overrides, config, data, scoring, plan, Path(workdir))
                results = []
                for method in args.methods:
                    print(f"[{name}] {method}: planned {plan.planned(method)} epochs ...", flush=True)
                    result = run_method(bench, method)
                    results.append(result)
                    print(f"[{name}] {method}: " + _one_line(bench, result), flush=True)
                tables.append(report(bench, results, args.out, prefix, tracker, parent))
            all_results[name] = results
            tracker.end_run(parent)
        except BaseException:
            tracker.end_all("KILLED")
            raise
        print("\n" + tables[-1])

    summary = "\n\n".join([*tables, targets_report(all_results),
                           f"Total wall time: {format_duration(time.time() - started)}"])
    (args.out / f"{prefix}.md").write_text(summary + "\n")
    print("\n" + summary)
    print(f"\nResults in {args.out}/{prefix}*; MLflow experiment 'bench' (run `make ui`).")
    return 0


def _one_line(bench: Bench, r: MethodResult) -> str:
    if r.error:
        return f"FAILED after {format_duration(r.wall_time)}: {r.error}"
    first, _ = score_columns(bench)
    return (f"done in {format_duration(r.wall_time)}: val {bench.scoring.display_name} "
            f"{bench.scoring.to_metric(r.best_val_score):.4f}, test {first} {r.test[first]:.4f}, {r.trials} trials, "
            f"{r.epochs_trained} epochs")


if __name__ == "__main__":
    sys.exit(main())
