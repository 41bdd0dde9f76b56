"""Coarse stage: scikit-learn `RandomizedSearchCV` over a SciKeras wrapper.

Candidates are sampled exactly as `RandomizedSearchCV` samples them and evaluated
in small batches, so each finished candidate is reported (tracked, printed) as
soon as its folds are done instead of at the very end.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from joblib.externals.loky import get_reusable_executor
from scikeras.utils.random_state import tensorflow_random_state
from scikeras.wrappers import KerasClassifier, KerasRegressor
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import FitFailedWarning
from sklearn.metrics import get_scorer
from sklearn.model_selection import KFold, ParameterSampler, RandomizedSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import ClassifierTags, RegressorTags

from searchlab.cluster import dask_backend, tf_thread_env
from searchlab.config import CoarseConfig, DaskConfig, ModelConfig
from searchlab.data import Dataset
from searchlab.metrics import Scoring
from searchlab.model import build_model, fit_model, training_callbacks
from searchlab.scaling import FeatureScaler
from searchlab.space import BUILD_PARAMS, SCALING_PARAMS, Param, Space


@dataclass(frozen=True)
class CoarseTrial:
    """One coarse candidate: its sampled hyperparameters and cross-validated score."""

    number: int
    params: dict[str, Any]
    fold_scores: tuple[float, ...]
    curves: dict[str, list[float]] = field(default_factory=dict)  # per-epoch means over folds
    error: str | None = None
    start_time: float = 0.0
    end_time: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def mean_score(self) -> float:
        return float(np.mean(self.fold_scores)) if self.ok else float("nan")

    @property
    def std_score(self) -> float:
        return float(np.std(self.fold_scores)) if self.ok else float("nan")


@dataclass(frozen=True)
class CoarseResult:
    trials: tuple[CoarseTrial, ...]
    space: dict[str, Param]
    scoring: Scoring

    @property
    def completed(self) -> list[CoarseTrial]:
        return [t for t in self.trials if t.ok]

    @property
    def best(self) -> CoarseTrial:
        return max(self.completed, key=lambda t: t.mean_score)


class _FailureNotes:
    """For the SciKeras wrappers: a fit whose training loss turns NaN/inf fails, and any failed fit
    leaves its reason in `model__record_dir` for the parent process (joblib workers cannot tell it)."""

    model__candidate: int

    def _build_keras_model(self) -> Any:
        keras.backend.clear_session()  # drop earlier folds' graphs: memory stays flat with n_jobs=1
        return super()._build_keras_model()  # type: ignore[misc]

    def _fit_keras_model(self, X: Any, y: Any, sample_weight: Any, warm_start: bool, epochs: int,
                         initial_epoch: int, **kwargs: Any) -> None:
        """SciKeras' fit through searchlab's tf.data pipeline (see `fit_model`) instead of NumPy arrays.

        Same semantics as `Model.fit(validation_split=...)`: the last rows are held out, unshuffled.
        """
        n_val = int(len(X) * self.validation_split)  # type: ignore[attr-defined]
        validation = (X[-n_val:], y[-n_val:]) if n_val else None
        with tensorflow_random_state(self._random_state):  # type: ignore[attr-defined]
            history = fit_model(self.model_, X[:len(X) - n_val], y[:len(y) - n_val],  # type: ignore[attr-defined]
                                batch_size=self.batch_size, epochs=initial_epoch + epochs,  # type: ignore[attr-defined]
                                initial_epoch=initial_epoch, seed=self._random_state,  # type: ignore[attr-defined]
                                validation=validation, callbacks=self._fit_callbacks)  # type: ignore[attr-defined]
        self.history_ = {key: [float(v) for v in values] for key, values in history.history.items()}

    def fit(self, X: Any, y: Any, **kwargs: Any) -> Any:
        try:
            super().fit(X, y, **kwargs)  # type: ignore[misc]
            losses = self.history_.get("loss", [])
            bad = [i for i, v in enumerate(losses) if not np.isfinite(v)]
            if bad:
                raise FloatingPointError(f"training loss became {losses[bad[0]]} at epoch {bad[0] + 1}")
        except Exception as exc:
            record_dir = getattr(self, "model__record_dir", None)
            if record_dir:
                note = Path(record_dir) / f"{self.model__candidate}.error"
                note.write_text(f"{type(exc).__name__}: {exc}".strip()[:2000])
            raise
        return self


class SearchlabClassifier(_FailureNotes, KerasClassifier):
    """SciKeras' classifier with scikit-learn >= 1.6 tags.

    scikeras 0.13 only defines the old `_more_tags`, so `is_classifier` is False and
    `cv=int` silently becomes an unshuffled, unstratified KFold (see COMPAT.md).
    """

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags()
        tags.regressor_tags = None
        return tags


class SearchlabRegressor(_FailureNotes, KerasRegressor):
    """SciKeras' regressor with scikit-learn >= 1.6 tags (see `SearchlabClassifier`)."""

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor"
        tags.regressor_tags = RegressorTags()
        tags.classifier_tags = None
        return tags


def make_estimator(data: Dataset, defaults: dict[str, Any], settings: ModelConfig, scoring: Scoring, seed: int) -> Any:
    """A scikit-learn estimator (scaling inside, then the network) with `defaults` as hyperparameters.

    Regression targets are standardized inside too (`TransformedTargetRegressor`), so
    every fold fits its own target scaling.
    """
    wrapper = SearchlabRegressor if data.task == "regression" else SearchlabClassifier
    net = wrapper(
        model=_scikeras_model,
        model__task=data.task,
        model__candidate=-1,
        model__record_dir=None,
        model__steps_per_execution=settings.steps_per_execution,
        **{f"model__{name}": defaults[name] for name in BUILD_PARAMS},
        batch_size=defaults["batch_size"],
        epochs=defaults["epochs"],
        callbacks=training_callbacks(settings, scoring.val_key, scoring.direction),
        validation_split=settings.validation_fraction,
        random_state=seed,
        verbose=0,
    )
    pipeline = Pipeline([("scale", FeatureScaler(defaults["scaling"])), ("net", net)])
    if data.task == "regression":
        return TransformedTargetRegressor(regressor=pipeline, transformer=StandardScaler())
    return pipeline


def param_key(data: Dataset, name: str) -> str:
    """The scikit-learn parameter name of hyperparameter `name` in `make_estimator`'s estimator."""
    if name in SCALING_PARAMS:
        return _pipeline_prefix(data) + "scale__" + name
    return _net_prefix(data) + (f"model__{name}" if name in BUILD_PARAMS else name)


def _pipeline_prefix(data: Dataset) -> str:
    return "regressor__" if data.task == "regression" else ""


def _net_prefix(data: Dataset) -> str:
    return _pipeline_prefix(data) + "net__"


def make_cv(data: Dataset, folds: int, seed: int) -> StratifiedKFold | KFold:
    """Shuffled folds, stratified for classification."""
    splitter = StratifiedKFold if data.is_classification else KFold
    return splitter(n_splits=folds, shuffle=True, random_state=seed)


def run_coarse(
    data: Dataset,
    space: Space,
    defaults: dict[str, Any],
    settings: CoarseConfig,
    model_settings: ModelConfig,
    scoring: Scoring,
    seed: int,
    on_trial: Callable[[CoarseTrial], None] = lambda trial: None,
    done: Mapping[int, CoarseTrial] | None = None,
    dask: DaskConfig | None = None,
) -> CoarseResult:
    """Cross-validate `settings.n_iter` random candidates from `space`.

    Hyperparameters outside `space` keep their `defaults`. `on_trial` is called with each
    newly finished candidate, in candidate order. Candidates in `done` (by number, e.g. read
    back from the store when resuming) are reused, not trained again. The fits run in
    `settings.n_jobs` local worker processes, or on the Dask cluster `dask` describes.

    Raises:
        ConfigError: the Dask cluster cannot be used (see `cluster.dask_backend`).
    """
    done = dict(done or {})
    random_state = seed if settings.random_state is None else settings.random_state
    cv = make_cv(data, settings.cv, seed)
    with tempfile.TemporaryDirectory(prefix="searchlab-histories-") as history_dir:
        search = _StreamingSearch(
            make_estimator(data, defaults, model_settings, scoring, seed),
            {param_key(data, name): param.distribution() for name, param in space.items()},
            n_iter=settings.n_iter,
            scoring=_HistoryScorer(scoring.name, history_dir),
            cv=cv,
            n_jobs=settings.n_jobs,
            random_state=random_state,
            refit=False,
            error_score=np.nan,
        )
        trials: list[CoarseTrial] = list(done.values())

        candidate_key = _net_prefix(data) + "model__candidate"
        fold_keys = [_fold_key(data.X_train[test]) for _, test in cv.split(data.X_train, data.y_train)]

        def report(candidates: list[dict[str, Any]], results: dict[str, Any] | None, started: float) -> None:
            for offset, candidate in enumerate(candidates):
                row = len(results["params"]) - len(candidates) + offset if results is not None else -1
                number = candidate[candidate_key]
                sampled = {key: value for key, value in candidate.items() if key != candidate_key}
                trial = _make_trial(number, sampled, space, results, row, Path(history_dir), fold_keys, started)
                trials.append(trial)
                on_trial(trial)

        search.report = report
        search.candidate_key = candidate_key
        search.estimator.set_params(**{_net_prefix(data) + "model__record_dir": history_dir})
        pending = [number for number in range(settings.n_iter) if number not in done]
        with _fit_backend(settings.n_jobs, dask, history_dir) as (workers, recycle), warnings.catch_warnings():
            silence_fit_warnings()
            search.batch_size = workers
            # Several `fit` calls, each over a slice of the candidates, so local worker processes can be
            # replaced in between: TensorFlow keeps a few MiB per trained model that no clear_session frees.
            per_slice = max(workers, _FITS_PER_WORKER * workers // settings.cv) if recycle else max(1, len(pending))
            for start in range(0, len(pending), per_slice):
                if start:
                    get_reusable_executor().shutdown(wait=True)
                search.numbers = set(pending[start:start + per_slice])
                try:
                    search.fit(data.X_train, data.y_train)
                except IndexError:
                    if any(t.ok for t in trials):
                        raise  # scikit-learn trips on a slice where no fit succeeded; anything else is a bug
    return CoarseResult(tuple(sorted(trials, key=lambda t: t.number)), dict(space), scoring)


@contextmanager
def _fit_backend(n_jobs: int, dask: DaskConfig | None, history_dir: str) -> Iterator[tuple[int, bool]]:
    """Where the fits run: yields how many run at once, and whether to replace the worker processes
    between slices (local joblib workers only; a Dask worker can be given `--lifetime` instead)."""
    if dask is not None:
        with dask_backend(dask, history_dir) as threads:
            yield threads, False
        return
    workers = _workers(n_jobs)
    with _threads_per_worker(workers):
        try:
            yield workers, workers > 1
        finally:
            if workers > 1:  # idle workers hold ~1 GB each; on Ctrl-C they must not go on training
                get_reusable_executor().shutdown(wait=False, kill_workers=True)


def _workers(n_jobs: int) -> int:
    return (os.cpu_count() or 1) if n_jobs == -1 else n_jobs


@contextmanager
def _threads_per_worker(workers: int) -> Iterator[None]:
    """Size TensorFlow's thread pools in joblib's worker processes so they share the cores.

    Workers inherit the environment when they start; TensorFlow reads these variables then.
    """
    if workers == 1:
        yield
        return
    env = tf_thread_env(max(1, (os.cpu_count() or 1) // workers))
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def silence_fit_warnings() -> None:
    """Inside `warnings.catch_warnings()`: silence the cross-validation fits' warnings that need no action."""
    warnings.simplefilter("ignore", FitFailedWarning)  # each failure is reported as a FAILED trial
    # loky replaces a worker whose memory grew by 300 MB since its first fit (TensorFlow keeps some per trained
    # model) and warns if fits were queued for it; they go to the new worker, none is lost.
    warnings.filterwarnings("ignore", "A worker stopped while some jobs were given to the executor", UserWarning)


_FITS_PER_WORKER = 30  # fits a joblib worker runs before it is replaced (~5 MiB kept per fit, ~5 s to restart)


class _StreamingSearch(RandomizedSearchCV):
    """`RandomizedSearchCV` that evaluates its candidates a batch at a time and reports each batch."""

    report: Callable[[list[dict[str, Any]], dict[str, Any] | None, float], None]
    batch_size: int = 1
    candidate_key: str = "net__model__candidate"
    numbers: set[int] = set()  # the candidates (by number in sampling order) this `fit` evaluates

    def __getstate__(self) -> dict[str, Any]:
        # scikit-learn sends the search itself to the workers (as `caller`); the report callback
        # holds the terminal and the tracker, which neither can nor need travel.
        state = dict(super().__getstate__())
        state.pop("report", None)
        return state

    def _run_search(self, evaluate_candidates: Callable[[Iterable[dict[str, Any]]], dict[str, Any]]) -> None:
        sampled = ParameterSampler(self.param_distributions, self.n_iter, random_state=self.random_state)
        # The candidate number travels with the parameters so each fold's curves can be matched to it.
        candidates = [{**params, self.candidate_key: number} for number, params in enumerate(sampled)
                      if number in self.numbers]
        for start in range(0, len(candidates), self.batch_size):
            batch = candidates[start:start + self.batch_size]
            started = time.time()
            try:
                results: dict[str, Any] | None = evaluate_candidates(batch)
            except ValueError as exc:
                if "fits failed" not in str(exc):
                    raise
                results = None  # scikit-learn refuses a batch whose every fit failed; the search goes on
            self.report(batch, results, started)


class _HistoryScorer:
    """Scores a fitted fold, and leaves its training curves in `history_dir` for the parent process."""

    def __init__(self, scoring: str, history_dir: str) -> None:
        self.scorer = get_scorer(scoring)
        self.history_dir = history_dir

    def __call__(self, estimator: Any, X: np.ndarray, y: np.ndarray) -> float:
        net = _find_net(estimator)
        history = {k: [float(v) for v in values] for k, values in net.history_.items()}
        path = Path(self.history_dir) / f"{net.get_params()['model__candidate']}-{_fold_key(X)}.json"
        path.write_text(json.dumps(history))
        return float(self.scorer(estimator, X, y))


def _scikeras_model(meta: dict[str, Any], compile_kwargs: dict[str, Any], params: dict[str, Any],
                    candidate: int, record_dir: str | None, **hyperparameters: Any) -> Any:
    n_classes = meta.get("n_classes_") or 0
    return build_model(n_features=meta["n_features_in_"], n_classes=n_classes, **hyperparameters)


def _find_net(estimator: Any) -> Any:
    if isinstance(estimator, TransformedTargetRegressor):
        estimator = estimator.regressor_
    return estimator.named_steps["net"]


def _fold_key(X: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(X).tobytes()).hexdigest()[:16]


def _make_trial(number: int, candidate: dict[str, Any], space: Space, results: dict[str, Any] | None, row: int,
                history_dir: Path, fold_keys: list[str], started: float) -> CoarseTrial:
    params = {name: space[name].cast(value) for key, value in candidate.items()
              for name in [key.rsplit("__", 1)[-1]]}
    if results is None:  # every fit of its batch failed
        scores = tuple(float("nan") for _ in fold_keys)
    else:
        scores = tuple(float(results[f"split{k}_test_score"][row]) for k in range(len(fold_keys)))
    paths = [history_dir / f"{number}-{fold}.json" for fold in fold_keys]
    histories = [json.loads(path.read_text()) for path in paths if path.exists()]
    error = None
    if not all(np.isfinite(scores)):
        note = history_dir / f"{number}.error"
        error = note.read_text() if note.exists() else "a fold's fit or scoring failed"
    return CoarseTrial(number, params, scores, _mean_curves(histories), error, started, time.time())


def _mean_curves(histories: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    curves: dict[str, list[float]] = {}
    for key in histories[0] if histories else []:
        series = [h[key] for h in histories if key in h]
        length = max(len(s) for s in series)
        curves[key] = [float(np.mean([s[e] for s in series if e < len(s)])) for e in range(length)]
    return curves
