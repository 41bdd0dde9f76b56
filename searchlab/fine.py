"""Fine stage: KerasTuner GridSearch or Hyperband over the narrowed space.

Every trial trains on the same fixed split of the training rows and is scored by the
primary metric on its validation part (the best epoch, as KerasTuner does). The coarse
winner is trained under the same protocol, so the final choice compares like with like.
With `search.fine.workers`, the trials train on KerasTuner's distributed workers (`searchlab.worker`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import keras
import keras_tuner as kt
import keras_tuner.src.config as kt_config  # the only switch for KerasTuner's traceback per failed trial
import keras_tuner.src.engine.oracle as kt_oracle  # its oracles' locks: see _ReleasingOracle
import numpy as np
from joblib.externals.loky import ProcessPoolExecutor
from sklearn.model_selection import train_test_split

from searchlab.builders import Builder
from searchlab.config import FineConfig, ModelConfig
from searchlab.context import SearchContext
from searchlab.data import Dataset
from searchlab.infra.processes import process_count, tf_thread_env, threads_per_worker
from searchlab.metrics import Scoring
from searchlab.model import (
    Scalers,
    clear_keras_state,
    deterministic,
    diverged,
    execution_steps,
    fit_model,
    mean_curves,
    split_hyperparameters,
    training_callbacks,
)
from searchlab.narrow import FineSpace
from searchlab.space import Param
from searchlab.trials import COARSE_WINNER, EDGE_PREFIX, REVISIT_PREFIX, SETTLE_PREFIX, FineTrial

_T = TypeVar("_T")


@dataclass(frozen=True)
class FineResult:
    trials: tuple[FineTrial, ...]  # the tuner's trials, in order
    coarse_winner: FineTrial

    @property
    def all_trials(self) -> tuple[FineTrial, ...]:
        """The tuner's trials, then the coarse winner."""
        return (*self.trials, self.coarse_winner)

    @property
    def best(self) -> FineTrial:
        """The completed trial (the coarse winner included) with the best mean over its splits among those
        `confirm` re-scored; without re-scoring, the best score on the fixed split."""
        candidates = [t for t in self.all_trials if t.ok]
        confirmed = [t for t in candidates if t.confirm_scores and math.isfinite(t.confirmed_score)]
        if confirmed:
            return max(confirmed, key=lambda t: t.confirmed_score)
        return max(candidates, key=lambda t: t.score)


def validation_split(data: Dataset, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """The fine stage's fixed split of the training rows: X_fit, X_val, y_fit, y_val."""
    stratify = data.y_train if data.is_classification else None
    return tuple(train_test_split(data.X_train, data.y_train, test_size=fraction, random_state=seed,
                                  shuffle=True, stratify=stratify))


@dataclass(frozen=True)
class ScaledSplit:
    """The fine stage's fixed split, scaled one way (fitted on its fit rows)."""

    X_fit: np.ndarray
    y_fit: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    target_scale: float


def scaled_splits(data: Dataset, fraction: float, seed: int, scalings: Iterable[str]) -> dict[str, ScaledSplit]:
    """The fixed split (`validation_split`), scaled once for each of `scalings`."""
    X_fit, X_val, y_fit, y_val = validation_split(data, fraction, seed)
    splits = {}
    for scaling in set(scalings):
        scalers = Scalers.fit(X_fit, y_fit, data.task, scaling)
        splits[scaling] = ScaledSplit(*scalers.transform(X_fit, y_fit), *scalers.transform(X_val, y_val),
                                      scalers.target_scale)
    return splits


# Has the trials run on KerasTuner workers while serving the oracle; returns the finished trials.
Distribute = Callable[["FineSearch", kt.Oracle], Mapping[str, FineTrial]]


def run_fine(
    ctx: SearchContext,
    space: FineSpace,
    coarse_best: Mapping[str, Any],
    settings: FineConfig,
    *,
    workdir: Path,
    on_trial: Callable[[FineTrial], None] | None = None,
    finished: Mapping[str, FineTrial] | None = None,
    distribute: Distribute | None = None,
    pool: TrialPool | None = None,
) -> FineResult:
    """Search `space` with KerasTuner, then train the coarse winner under the same protocol; choices the coarse
    stage left open are settled first (`_settle`), starting from the coarse winner. When no trial reaches the
    coarse winner's score, the values the narrowing fixed are revisited (`_revisit`). Trials train `pool.size`
    at a time.

    Args:
        coarse_best: the coarse winner's sampled values (the rest are `ctx.defaults`).
        workdir: where KerasTuner and the Hyperband checkpoints live; kept for resuming.
        on_trial: called with each newly finished trial as it ends, one call at a time.
        finished: trials already recorded (by trial id), replayed rather than trained again. KerasTuner
            cannot reload a grid search (keras-tuner#1055), so a resumed search starts the tuner
            afresh: it proposes the same trials in the same order and the recorded ones are replayed.
        distribute: given, this process only holds the oracle and `distribute` has the trials run
            elsewhere (`searchlab.infra.tuner_workers`); `on_trial` then sees only the trials trained here (the
            coarse winner, the settling of choices left open, the edge round and the revisit).
        pool: the worker processes to train in, owned (and ended) by the caller; None: the stage's own.
    """
    finished = dict(finished or {})
    lock = threading.Lock()

    def report(trial: FineTrial) -> None:
        if on_trial is not None:
            with lock:
                on_trial(trial)

    winner_values = {**ctx.defaults, **coarse_best}
    if settings.kind == "hyperband":
        winner_values["epochs"] = settings.max_epochs
    scalings = {winner_values["scaling"], space.fixed.get("scaling", winner_values["scaling"])}
    for param in (space.tuned.get("scaling"), space.left_open.get("scaling")):
        scalings.update(param.values if param else ())
    if settings.revisit:  # a scaling the narrowing fixed (sampled, not compared) may be revisited
        scalings.update(revisit_options(space, settings.points).get("scaling", ()))
    job = _train_job(ctx, settings, ctx.seed, scalings)
    owned = pool is None
    pool = pool or TrialPool.of(settings)

    def train(trial_id: str, values: dict[str, Any], tuned: Mapping[str, Any]) -> FineTrial:
        trial = finished.get(trial_id)
        if trial is None:
            trial = _fixed_trial(pool, job, ctx.scoring, trial_id, values, tuned)
            report(trial)
        return trial

    def train_all(calls: Sequence[_Call]) -> list[FineTrial]:
        return pool.run_all([functools.partial(train, *call) for call in calls])

    winner_call: _Call = (COARSE_WINNER, winner_values, {})
    try:
        winner, settled, settling = _settle(space.left_open, winner_call, train_all)
        base = {**ctx.defaults, **space.fixed, **settled}
        search = FineSearch(space, base, settings, ctx.scoring, ctx.seed, workdir, job)
        done: dict[str, FineTrial]
        if distribute is None:
            tuners = search.tuners(report, finished, pool)
            pool.run_all([functools.partial(tuner.search, verbose=0) for tuner in tuners])
            done = dict(tuners[0].finished)
        else:
            done = dict(distribute(search, search.tuner(report, finished, pool=pool).oracle))
        # the tuner's own trials: a resumed tuner (or the store the workers wrote) holds every recorded one
        done = {trial_id: t for trial_id, t in done.items()
                if trial_id != COARSE_WINNER and not trial_id.startswith((SETTLE_PREFIX, EDGE_PREFIX, REVISIT_PREFIX))}
        edges = _beyond_edges(space, settings.points, done) if settings.kind == "grid" and settings.beyond_edges else []
        trained = train_all([*edges, *([winner_call] if winner is None else [])])  # the winner beside the edges
        done.update(zip((call[0] for call in edges), trained, strict=False))
        winner = winner or trained[-1]
        if settings.revisit:
            done.update(_revisit(space, settings.points, [winner, *settling.values()], list(done.values()), train_all))
    finally:
        if owned:
            pool.kill()
    trials = sorted((t for trial_id, t in {**settling, **done}.items() if trial_id != COARSE_WINNER),
                    key=lambda t: t.trial_id)
    return FineResult(tuple(trials), winner)


def settling_trials(space: FineSpace) -> int:
    """How many trials `_settle` trains: each value of a choice left open but one."""
    return sum(len(param.values) - 1 for param in space.left_open.values())


def _settle(left_open: Mapping[str, Param], winner_call: _Call, train_all: _TrainAll) -> tuple[
        FineTrial | None, dict[str, Any], dict[str, FineTrial]]:
    """Settle the choices the coarse stage left open, one after the other, on the fine split, starting from the
    coarse winner (`_one_at_a_time`, ids `settle-<name>-<value>`). Returns the coarse winner's trial (None with
    nothing left open), the settled values and the trials."""
    if not left_open:
        return None, {}, {}
    options = {name: list(param.values) for name, param in left_open.items()}
    winner, best, trials = _one_at_a_time(options, winner_call, None, train_all, SETTLE_PREFIX)
    return winner, {name: best.params[name] for name in left_open}, trials


def _one_at_a_time(options: Mapping[str, Sequence[Any]], start_call: _Call, start: FineTrial | None,
                   train_all: _TrainAll, prefix: str) -> tuple[FineTrial, FineTrial, dict[str, FineTrial]]:
    """A coordinate search from `start_call`'s values: the best so far trained with each other value of the first
    hyperparameter in `options`, the best score keeping its value (a tie: the earlier), then the next. `start` is
    the start's trial when it is trained already; otherwise it trains beside the first hyperparameter's values.
    Returns the start's trial, the best trial and the trials, ids `<prefix><name>-<value>`."""
    trials: dict[str, FineTrial] = {}
    best = start
    for name, values in options.items():
        best_values = best.params if best is not None else start_call[1]
        calls: list[_Call] = [(f"{prefix}{name}-{_id_value(value)}", {**best_values, name: value}, {name: value})
                              for value in values if value != best_values[name]]
        if best is None:
            best, *trained = train_all([start_call, *calls])
            start = best
        else:
            trained = train_all(calls)
        trials.update(zip((call[0] for call in calls), trained, strict=True))
        best = max((t for t in [best, *trained] if t.ok), key=lambda t: t.score, default=best)
    assert start is not None and best is not None  # options is not empty, or start was given
    return start, best, trials


def _id_value(value: Any) -> str:
    """A value as a trial id shows it: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def revisit_options(space: FineSpace, points: int) -> dict[str, list[Any]]:
    """The values a revisit tries, most influential first: for each hyperparameter the narrowing fixed, `points`
    values spread over its original range (a choice: all its values)."""
    return {d.name: d.original.grid(points) for d in space.decisions if not d.kept}


def _revisit(space: FineSpace, points: int, handed_on: Sequence[FineTrial], searched: Iterable[FineTrial],
             train_all: _TrainAll) -> dict[str, FineTrial]:
    """When no `searched` trial (the grid's, Hyperband's, the edge round's) reached the best trial the coarse stage
    `handed_on` (the coarse winner, or one of its settled choices), the narrowing searched the wrong
    hyperparameters or fixed the wrong values (a near-chance average rank picked a choice the winner did not
    have; a heavy dropout was fixed at the winner's). Then the values it fixed are tried one at a time from that
    trial (`_one_at_a_time`, ids `revisit-<name>-<value>`); otherwise nothing trains."""
    start = max((t for t in handed_on if t.ok), key=lambda t: t.score, default=None)
    options = revisit_options(space, points)
    if start is None or not options or any(t.ok and t.score >= start.score for t in searched):
        return {}
    return _one_at_a_time(options, (start.trial_id, start.params, start.tuned), start, train_all, REVISIT_PREFIX)[2]


def edge_values(space: FineSpace, best: Mapping[str, Any], points: int) -> dict[str, list[Any]]:
    """Values beyond the narrowed range of each tuned number whose best grid value lies on an edge of that range
    which the narrowing moved inward: `points - 1` more grid steps outward, within the original bounds."""
    found = {}
    for decision in space.decisions:
        narrowed, original = decision.narrowed, decision.original
        if narrowed is None or not narrowed.is_numeric or decision.name not in best:
            continue
        grid = narrowed.grid(points)
        if len(grid) < 2:
            continue
        forward, backward = (math.log, math.exp) if narrowed.log else (float, float)
        step = (forward(grid[-1]) - forward(grid[0])) / (len(grid) - 1)
        value, beyond = best[decision.name], []
        if value == grid[-1] and grid[-1] < original.high:
            beyond = [min(original.high, backward(forward(grid[-1]) + k * step)) for k in range(1, points)]
        elif value == grid[0] and grid[0] > original.low:
            beyond = [max(original.low, backward(forward(grid[0]) - k * step)) for k in range(1, points)]
        values = sorted({narrowed.cast(v) for v in beyond} - set(grid))
        if values:
            found[decision.name] = values
    return found


def _beyond_edges(space: FineSpace, points: int, done: Mapping[str, FineTrial]) -> list[_Call]:
    """A second round for the grid's best trial (`done`: the tuner's trials) when it sits on an edge the narrowing
    drew: the same values with that one hyperparameter moved further out (`edge_values`), to train under the fine
    protocol. Trial ids `edge-<name>-<k>`."""
    completed = [t for t in done.values() if t.ok]
    if not completed:
        return []
    best = max(completed, key=lambda t: t.score)
    return [(f"{EDGE_PREFIX}{name}-{k}", {**best.params, name: value}, {**best.tuned, name: value})
            for name, values in edge_values(space, best.tuned, points).items() for k, value in enumerate(values, 1)]


def confirm(ctx: SearchContext, fine: FineResult, settings: FineConfig,
            on_trial: Callable[[FineTrial], None] | None = None, pool: TrialPool | None = None) -> FineResult:
    """Re-score the `settings.confirm_top` best trials (the coarse winner among them) on `settings.confirm_splits`
    further validation splits, each trained afresh under the fine protocol, so the final choice is the best mean
    over several splits rather than the maximum of many single-split scores (the winner's curse).

    Args:
        on_trial: called with each re-scored trial, once all are.
        pool: the worker processes to train in, owned (and ended) by the caller; None: its own.
    """
    ranked = sorted((t for t in fine.all_trials if t.ok), key=lambda t: -t.score)[:settings.confirm_top]
    if len(ranked) < 2:
        return fine
    epochs = settings.max_epochs if settings.kind == "hyperband" else ctx.model.epochs
    scalings = {t.params["scaling"] for t in ranked}
    jobs = [dataclasses.replace(_train_job(ctx, settings, ctx.seed + k, scalings), epochs=epochs)
            for k in range(1, settings.confirm_splits + 1)]  # each split drawn and scaled once
    owned = pool is None
    pool = pool or TrialPool.of(settings)
    rescored: dict[str, FineTrial] = {}

    def curves(trial: FineTrial, job: _TrainJob) -> dict[str, list[float]]:
        try:
            return execution_means(pool.run(_train, dataclasses.replace(job, values=trial.params)))
        except kt.errors.FailedTrialError:
            return {}

    try:
        trained = iter(pool.run_all([functools.partial(curves, trial, job) for trial in ranked for job in jobs]))
        for trial in ranked:
            split_curves = tuple(next(trained) for _ in jobs)
            rescored[trial.trial_id] = dataclasses.replace(
                trial, confirm_scores=tuple(best_score(c, ctx.scoring) for c in split_curves),
                confirm_curves=split_curves)
            if on_trial is not None:
                on_trial(rescored[trial.trial_id])
    finally:
        if owned:
            pool.kill()
    trials = tuple(rescored.get(t.trial_id, t) for t in fine.trials)
    return FineResult(trials, rescored.get(COARSE_WINNER, fine.coarse_winner))


def execution_means(histories: Iterable[Mapping[str, list[float]]]) -> dict[str, list[float]]:
    """A trial's per-epoch curves: its executions' logs (`_train`) averaged, epoch numbers left out."""
    return mean_curves([{k: v for k, v in h.items() if k != "epoch"} for h in histories])


def best_score(curves: Mapping[str, list[float]], scoring: Scoring) -> float:
    """A trial's score from its curves: the best epoch's validation metric (higher is better)."""
    series = [v for v in curves.get(scoring.val_key, []) if math.isfinite(v)]
    if not series:
        return float("nan")
    return scoring.to_score(min(series) if scoring.negated else max(series))


def _train_job(ctx: SearchContext, settings: FineConfig, split_seed: int, scalings: Iterable[str]) -> _TrainJob:
    """The fine protocol's training job (values still to fill in) on the validation split `split_seed` draws."""
    return _TrainJob(values={}, data=scaled_splits(ctx.data, settings.validation_fraction, split_seed, scalings),
                     task=ctx.data.task, n_classes=ctx.data.n_classes, builder=ctx.builder, model_settings=ctx.model,
                     seed=ctx.seed, executions=settings.executions_per_trial, epochs=ctx.model.epochs,
                     scoring=ctx.scoring, verbose=ctx.verbose)


class StageStopped(kt.errors.FatalError):
    """The trial pool was ended (Ctrl-C, an error elsewhere, the stage's end) with trials still to train.

    A KerasTuner `FatalError`: the tuner stops instead of recording the trial as failed."""


class TrialPool:
    """The worker processes that train the fine stage's trials, `size` trials at once.

    Trials train away from the search process because TensorFlow keeps a few MiB per trained model that
    `clear_session` does not give back; each worker is replaced every `recycle_every` trials. With `size` > 1 the
    workers share the cores (TensorFlow's threads split between them). `in_process`: the trials train in the
    search process instead, one at a time, with no worker to start (a TensorFlow import, seconds).
    """

    def __init__(self, size: int = 1, recycle_every: int = 25, in_process: bool = False) -> None:
        self.size = 1 if in_process else size
        self.in_process = in_process
        env = tf_thread_env(threads_per_worker(self.size)) if self.size > 1 else None
        self._all = [_Worker(recycle_every, env) for _ in range(self.size)]
        self._workers: queue.SimpleQueue[_Worker] = queue.SimpleQueue()  # the free ones
        for worker in self._all:
            self._workers.put(worker)
        self._stopped = False

    @classmethod
    def of(cls, settings: FineConfig) -> TrialPool:
        """The pool `settings` asks for: `n_jobs` worker processes (-1: one per core), or the search process."""
        return cls(size=process_count(settings.n_jobs), in_process=not settings.trial_worker)

    def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """`fn(*args)` in a free worker process, waiting for one (a trial: `fn` trains); raises what it raised,
        or `StageStopped` once the pool is ended."""
        if self.in_process:
            return fn(*args)
        worker = self._workers.get()
        try:
            return worker.run(fn, *args)
        except Exception:
            if self._stopped:
                raise StageStopped("the fine stage was stopped") from None
            raise
        finally:
            self._workers.put(worker)

    def run_all(self, calls: Sequence[Callable[[], _T]]) -> list[_T]:
        """Each call (which trains through `run`) in a thread of its own, `size` at a time; their results in
        order. The first call to fail ends the pool (the other calls' trials with it) and its error is raised;
        so does a Ctrl-C while waiting."""
        if self.size == 1:
            return [call() for call in calls]
        errors: list[Exception] = []

        def guarded(call: Callable[[], _T]) -> _T:
            try:
                return call()
            except Exception as exc:
                errors.append(exc)
                self.kill()
                raise

        with ThreadPoolExecutor(self.size) as threads:
            futures = [threads.submit(guarded, call) for call in calls]
            try:
                return [future.result() for future in futures]
            except Exception:
                raise errors[0] from None
            except BaseException:  # Ctrl-C: the threads end with the pool before the caller records the stop
                self.kill()
                raise

    def kill(self) -> None:
        """End every worker at once, running trials with them (at the end of a stage, on Ctrl-C or an error);
        the pool trains nothing after."""
        self._stopped = True
        for worker in self._all:
            worker.kill()


class _Worker:
    """One worker process of a `TrialPool`, started on first use and replaced every `recycle_every` runs."""

    def __init__(self, recycle_every: int, env: dict[str, str] | None) -> None:
        self.recycle_every, self.env = recycle_every, env
        self.trained = 0
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # a kill never misses a process being started
        self._killed = False

    def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        with self._lock:
            if self._killed:
                raise StageStopped("the fine stage was stopped")
            if self._executor is not None and self.trained and self.trained % self.recycle_every == 0:
                self._executor.shutdown(wait=True)
                self._executor = None
            if self._executor is None:
                self._executor = ProcessPoolExecutor(max_workers=1, env=self.env)
            self.trained += 1
            future = self._executor.submit(fn, *args)
        try:
            return future.result()
        except BrokenProcessPool:  # the process died (out of memory, killed): the next run starts another
            with self._lock:
                self._executor = None
            raise

    def kill(self) -> None:
        with self._lock:
            self._killed = True
            if self._executor is not None:
                self._executor.shutdown(wait=False, kill_workers=True)
                self._executor = None


@dataclass(frozen=True)
class FineSearch:
    """What the fine stage's tuner is built from: the search process and its distributed workers
    (which get it pickled) build the same one."""

    space: FineSpace
    base: dict[str, Any]  # values of the hyperparameters `space` does not tune
    settings: FineConfig
    scoring: Scoring
    seed: int
    workdir: Path  # KerasTuner's directory and the Hyperband checkpoints
    job: _TrainJob  # the training protocol, data included

    def tuner(self, on_trial: Callable[[FineTrial], None], done: Mapping[str, FineTrial],
              overwrite: bool = True, pool: TrialPool | None = None) -> _TrackedTuner:
        """A tuner that trains each trial, reports it to `on_trial` and replays the ones in `done`.

        `overwrite=False` keeps the directory: a distributed worker joins the chief's project. `pool`: the
        worker processes to train in, which the caller ends; None: the tuner's own single worker, ended by `stop`.
        """
        return self.tuners(on_trial, done, pool, count=1, overwrite=overwrite)[0]

    def tuners(self, on_trial: Callable[[FineTrial], None], done: Mapping[str, FineTrial], pool: TrialPool | None,
               count: int | None = None, overwrite: bool = True) -> list[_TrackedTuner]:
        """`count` (default `pool.size`) tuners over one oracle, ids tuner0, tuner0-1, ...: searched together in
        threads (`TrialPool.run_all`), each trains one trial at a time in `pool`. They share their finished trials
        and report each trial once."""
        kt_config.DEBUG = self.job.verbose >= 2  # KerasTuner prints every failed trial's traceback by default
        objective = kt.Objective(self.scoring.val_key, self.scoring.direction)
        common = dict(objective=objective, seed=self.seed, max_consecutive_failed_trials=10**9)
        oracle: kt.Oracle
        if self.settings.kind == "hyperband":
            oracle = _HyperbandOracle(max_epochs=self.settings.max_epochs, factor=self.settings.factor,
                                      hyperband_iterations=self.settings.hyperband_iterations, **common)
        else:
            oracle = _GridOracle(**common)
        hypermodel = _MLPHyperModel(self.space, self.base, self.settings)
        finished = {trial_id: t for trial_id, t in done.items() if trial_id != COARSE_WINNER}
        lock = threading.Lock()
        tuners = []
        for k in range(count or (pool.size if pool else 1)):
            # The first clears the directory (unless `overwrite` is false); the others join its project.
            tuner = _TrackedTuner(oracle, hypermodel, directory=str(self.workdir), project_name="fine",
                                  overwrite=overwrite and not k)
            if k:
                tuner.tuner_id = f"{tuner.tuner_id}-{k}"
            tuner.setup(self.scoring, on_trial, finished, self.job, self.workdir / "weights", pool, lock)
            tuners.append(tuner)
        return tuners


@dataclass(frozen=True)
class _TrainJob:
    """One trial's training, run in a worker process (`_train`)."""

    values: dict[str, Any]
    data: dict[str, ScaledSplit]  # by the trial's `scaling`
    task: str
    n_classes: int
    builder: Builder
    model_settings: ModelConfig
    seed: int
    executions: int
    epochs: int
    scoring: Scoring  # the searched metric: early stopping, learning-rate cuts and the best epoch follow it
    initial_epoch: int = 0
    load_weights: str | None = None  # Hyperband continues a trial from an earlier one's weights
    save_weights: str | None = None
    verbose: int = 0


def _train(job: _TrainJob) -> list[dict[str, list[float]]]:
    """Train `job.executions` models; return each one's per-epoch logs (with an "epoch" key).

    Runs in a worker process: TensorFlow keeps a few MiB per trained model that clear_session
    does not give back, so trials train away from the search process, whose workers are replaced.
    """
    split = job.data[job.values["scaling"]]
    X_fit, y_fit, X_val, y_val = split.X_fit, split.y_fit, split.X_val, split.y_val
    build, fit = split_hyperparameters(job.values)
    histories = []
    steps = execution_steps(job.model_settings.steps_per_execution, len(X_fit), fit["batch_size"],
                            job.epochs - job.initial_epoch)
    for execution in range(job.executions):
        clear_keras_state()
        with deterministic(job.seed + execution):  # repeats differ in initial weights and order
            model = job.builder.build(n_features=X_fit.shape[1], task=job.task, n_classes=job.n_classes,
                                      steps_per_execution=steps,
                                      target_scale=split.target_scale, **build)
            if job.load_weights:
                model.load_weights(job.load_weights)
            callbacks = training_callbacks(job.model_settings, job.scoring)
            if job.save_weights:
                callbacks.append(_SaveBestWeights(job.scoring.val_key, job.scoring.direction, job.save_weights))
            history = fit_model(model, X_fit, y_fit, validation=(X_val, y_val), batch_size=fit["batch_size"],
                                epochs=job.epochs, initial_epoch=job.initial_epoch, callbacks=callbacks,
                                seed=job.seed + execution, class_weight=job.model_settings.class_weight,
                                verbose=2 if job.verbose >= 2 else 0)
        problem = diverged(history.history.get("loss", []), job.initial_epoch)
        if problem:
            raise kt.errors.FailedTrialError(problem)
        histories.append({"epoch": [float(e) for e in history.epoch],
                          **{k: [float(v) for v in vs] for k, vs in history.history.items()}})
    return histories


class _SaveBestWeights(keras.callbacks.Callback):
    """Saves the weights at the best epoch of `monitor`, for Hyperband to continue a trial from."""

    def __init__(self, monitor: str, mode: str, path: str) -> None:
        super().__init__()
        self.monitor, self.sign, self.path = monitor, (1.0 if mode == "min" else -1.0), path
        self.best = math.inf

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or self.sign * float(value) < self.best:
            self.best = self.best if value is None else self.sign * float(value)
            self.model.save_weights(self.path)


class _MLPHyperModel(kt.HyperModel):
    """Declares the fine space to KerasTuner; models are built and trained in `_train`."""

    def __init__(self, space: FineSpace, base: dict[str, Any], settings: FineConfig) -> None:
        super().__init__()
        self.space, self.base, self.settings = space, base, settings

    def values(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """Every hyperparameter for one trial: the tuned ones from `hp`, the rest from `base`."""
        tuned = {}
        for name, param in self.space.tuned.items():
            if self.settings.kind == "grid":
                tuned[name] = hp.Choice(name, param.grid(self.settings.points))
            else:
                tuned[name] = param.declare(hp)
        return {**self.base, **tuned}

    def build(self, hp: kt.HyperParameters) -> None:
        self.values(hp)  # declaring is all KerasTuner needs here: `_TrackedTuner.run_trial` trains


class _TrackedTuner(kt.Tuner):
    """A KerasTuner tuner over the grid's or Hyperband's oracle that trains each trial in a worker process and
    turns it into a `FineTrial` record for a callback. `run_trial` trains (Hyperband's epochs and weights
    included), so KerasTuner's own Hyperband tuner would add nothing."""

    hypermodel: _MLPHyperModel

    def setup(self, scoring: Scoring, on_trial: Callable[[FineTrial], None], finished: dict[str, FineTrial],
              job: _TrainJob, weights_dir: Path, pool: TrialPool | None, lock: threading.Lock) -> None:
        """`finished`: the trials recorded so far, replayed; shared with the tuners searching together, as is
        `lock`, which keeps their ends of trials one at a time."""
        self.scoring, self.on_trial_done, self.job = scoring, on_trial, job
        self.weights_dir = weights_dir
        weights_dir.mkdir(parents=True, exist_ok=True)
        self.finished = finished
        self.pool = pool or TrialPool(in_process=not self.hypermodel.settings.trial_worker)
        self._owns_pool = pool is None
        self._lock = lock
        self._histories: list[dict[str, list[float]]] = []
        self._started = 0.0
        self._asked = False

    def pre_create_trial(self) -> None:
        # KerasTuner asks again at once when the oracle answers IDLE (a distributed Hyperband
        # worker waiting for other workers' trials): don't spin.
        if self._asked:
            time.sleep(0.5)
        self._asked = True

    def run_trial(self, trial: kt.engine.trial.Trial, *args: Any, **kwargs: Any) -> list[keras.callbacks.History]:
        hp = trial.hyperparameters.values
        values = self.hypermodel.values(trial.hyperparameters.copy())
        recorded = self.finished.get(trial.trial_id)
        if recorded is not None and recorded.params == values:  # resumed: replay, don't train again
            if recorded.error:
                raise kt.errors.FailedTrialError(recorded.error)
            epochs = len(next(iter(recorded.curves.values()), []))
            first = recorded.first_epoch
            return [_history({**recorded.curves, "epoch": [float(first + i) for i in range(epochs)]})]
        previous = hp.get("tuner/trial_id")
        job = dataclasses.replace(
            self.job, values=values,
            epochs=int(hp.get("tuner/epochs", self.job.epochs)), initial_epoch=int(hp.get("tuner/initial_epoch", 0)),
            load_weights=str(self.weights_dir / f"{previous}.weights.h5") if previous else None,
            save_weights=str(self.weights_dir / f"{trial.trial_id}.weights.h5") if "tuner/epochs" in hp else None,
        )
        return [_history(logs) for logs in self._in_worker(job)]

    def on_trial_begin(self, trial: kt.engine.trial.Trial) -> None:
        super().on_trial_begin(trial)
        self._histories, self._started, self._asked = [], time.time(), False

    def on_trial_end(self, trial: kt.engine.trial.Trial) -> None:
        # Report before KerasTuner saves the trial as ended: if the search stops in between, the
        # resumed tuner retries the trial and the duplicate is dropped here (already finished).
        with self._lock:  # KerasTuner writes the oracle's and the tuner's state files here
            if trial.trial_id not in self.finished:
                values = self.hypermodel.values(trial.hyperparameters.copy())
                tuned = {name: values[name] for name in self.hypermodel.space.tuned}
                error = None
                if trial.status != kt.engine.trial.TrialStatus.COMPLETED:
                    error = _last_line(trial.message) or f"trial ended {trial.status}"
                record = self._record(trial.trial_id, values, tuned, error)
                self.finished[trial.trial_id] = record
                self.on_trial_done(record)
            super().on_trial_end(trial)

    def stop(self) -> None:
        """End the tuner's own trial worker process at once (a running trial with it)."""
        if self._owns_pool:
            self.pool.kill()

    def _in_worker(self, job: _TrainJob) -> list[dict[str, list[float]]]:
        histories = self.pool.run(_train, job)
        self._histories = histories
        return histories

    def _record(self, trial_id: str, values: dict[str, Any], tuned: dict[str, Any], error: str | None) -> FineTrial:
        return _trial_record(trial_id, values, tuned, self._histories, self.scoring, error, self._started)


# Fixed values to train under the fine protocol (`_fixed_trial`): (trial id, values, tuned).
_Call = tuple[str, dict[str, Any], Mapping[str, Any]]
# Trains each call (or replays its recorded trial), several at once; the trials in order.
_TrainAll = Callable[[Sequence[_Call]], list[FineTrial]]


def _fixed_trial(pool: TrialPool, job: _TrainJob, scoring: Scoring, trial_id: str, values: dict[str, Any],
                 tuned: Mapping[str, Any]) -> FineTrial:
    """Fixed hyperparameter values trained under the trials' protocol (`job`: data, callbacks, executions) in
    `pool`; `tuned`: the values the record lists as the fine stage's choice (none for the coarse winner)."""
    started, histories, error = time.time(), [], None
    try:
        histories = pool.run(_train, dataclasses.replace(job, values=values, epochs=int(values["epochs"])))
    except kt.errors.FailedTrialError as exc:
        error = str(exc)
    return _trial_record(trial_id, values, dict(tuned), histories, scoring, error, started)


def _trial_record(trial_id: str, values: dict[str, Any], tuned: dict[str, Any],
                  histories: list[dict[str, list[float]]], scoring: Scoring, error: str | None,
                  started: float) -> FineTrial:
    curves = execution_means(histories)
    first_epoch = min((int(h["epoch"][0]) for h in histories if h["epoch"]), default=0)
    score = best_score(curves, scoring) if error is None else float("nan")
    return FineTrial(trial_id, values, tuned, score, curves, error, started, time.time(), first_epoch)


class _ReleasingOracle(kt.Oracle):
    """An oracle that several tuner threads (or KerasTuner's gRPC chief) share safely.

    KerasTuner's `synchronized` methods (create_trial, update_trial, end_trial) take the oracle's lock and do not
    release it when they raise: the thread goes on (KerasTuner fails the trial) and every other tuner waits for the
    lock forever. Here the lock is released and the error raised as before.
    """

    def create_trial(self, tuner_id: str) -> kt.engine.trial.Trial:
        with _released_on_error(self):
            return super().create_trial(tuner_id)

    def update_trial(self, trial_id: str, metrics: dict[str, Any], step: int = 0) -> kt.engine.trial.Trial:
        with _released_on_error(self):
            return super().update_trial(trial_id, metrics, step)

    def end_trial(self, trial: kt.engine.trial.Trial) -> None:
        with _released_on_error(self):
            super().end_trial(trial)


@contextmanager
def _released_on_error(oracle: kt.Oracle) -> Iterator[None]:
    # `LOCKS` and `THREADS` are where `synchronized` keeps each oracle's lock and the name of the thread holding it.
    try:
        yield
    except BaseException:
        if kt_oracle.THREADS[oracle] == threading.current_thread().name:
            kt_oracle.THREADS[oracle] = None
            kt_oracle.LOCKS[oracle].release()
        raise


class _HyperbandOracle(_ReleasingOracle, kt.oracles.HyperbandOracle):
    """KerasTuner's Hyperband, shared safely by tuner threads."""


class _GridOracle(_ReleasingOracle, kt.oracles.GridSearchOracle):
    """KerasTuner's grid, in its order, handed out without waiting for running trials to end (and shared safely).

    KerasTuner derives a trial's grid point from an ended trial's, so its distributed workers
    mostly wait on one another. The fine grid has no conditional hyperparameters: the next point
    follows from the last one started, and the trial ids come out as in a one-at-a-time search.
    """

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        if not self.start_order:
            return super().populate_space(trial_id)
        # `_get_next_combination` is GridSearchOracle's own step through the grid; it has no public form.
        values = self._get_next_combination(self.trials[self.start_order[-1]].hyperparameters.values)
        if values is None:
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}


def _history(logs: dict[str, list[float]]) -> keras.callbacks.History:
    """Per-epoch logs (with an "epoch" key) as the `History` KerasTuner expects from a trial."""
    history = keras.callbacks.History()
    history.epoch = [int(e) for e in logs["epoch"]]
    history.history = {k: v for k, v in logs.items() if k != "epoch"}
    return history


def _last_line(message: str | None) -> str:
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
