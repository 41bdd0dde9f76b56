"""Coarse stage: scikit-learn `RandomizedSearchCV` over a SciKeras wrapper.

Candidates are sampled as `RandomizedSearchCV` samples them, with the choices stratified (each
value as often as the others, `space.stratify_choices`), and evaluated in small batches, so each
finished candidate is reported (tracked, printed) as soon as its folds are done instead of at the
very end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from joblib.externals.loky import reusable_executor
from scikeras.utils.random_state import tensorflow_random_state
from scikeras.wrappers import KerasClassifier, KerasRegressor
from scipy.stats import rankdata
from scipy.stats import t as student_t
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import KFold, ParameterSampler, RandomizedSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import ClassifierTags, RegressorTags

from searchlab.builders import Builder
from searchlab.config import ClassWeight, CoarseConfig, DaskConfig
from searchlab.context import SearchContext
from searchlab.data import Dataset
from searchlab.infra.processes import process_count, worker_thread_env
from searchlab.metrics import Scoring, scorer
from searchlab.model import (
    clear_keras_state,
    diverged,
    execution_steps,
    fit_model,
    mean_curves,
    predict_rows,
    split_hyperparameters,
    training_callbacks,
)
from searchlab.scaling import FeatureScaler
from searchlab.space import FIT_PARAMS, SCALING_PARAMS, Param, Space, stratify_choices
from searchlab.trials import CoarseTrial

OPEN_LEVEL = 0.10  # a paired value is left open unless shown worse than the best at this level


def _shown_worse(scores: Sequence[float], best: Sequence[float]) -> bool:
    """A one-sided paired t-test over the folds: `scores` below `best` at the `OPEN_LEVEL`. Identical folds
    (no spread) are a tie; a constant shortfall is shown."""
    differences = np.subtract(best, scores)
    mean, spread = float(differences.mean()), float(differences.std(ddof=1))
    if spread <= 1e-12:
        return mean > 1e-12
    return bool(student_t.sf(mean / (spread / np.sqrt(len(differences))), len(differences) - 1) <= OPEN_LEVEL)


@dataclass(frozen=True)
class PairedChoice:
    """A choice decided by a paired comparison: the coarse winner cross-validated with each value on the same
    folds (other than the sampled candidates': the winner's score there is the best of many, so biased up)."""

    name: str
    trials: dict[str, CoarseTrial]  # value -> the winner cross-validated with it

    @property
    def chosen(self) -> Any:
        """The value with the best mean score (the first listed on a tie)."""
        ok = [(value, trial) for value, trial in self.trials.items() if trial.ok]
        return max(ok, key=lambda item: item[1].mean_score)[0] if ok else None

    @property
    def contenders(self) -> tuple[Any, ...]:
        """The values the comparison cannot tell apart: the chosen one and each not shown worse than it by a
        one-sided paired t-test over the folds at the `OPEN_LEVEL` (three folds tell only clear differences).
        In listed order."""
        chosen = self.chosen
        if chosen is None:
            return ()
        best = self.trials[chosen].fold_scores
        return tuple(value for value, trial in self.trials.items()
                     if trial.ok and (value == chosen or not _shown_worse(trial.fold_scores, best)))

    def explain(self, scoring: Scoring) -> str:
        """One line: what became of the choice (fixed, or left to the fine stage among its contenders) and each
        value's mean CV score and spread over the folds, the chosen first."""
        chosen = self.chosen
        if chosen is None:
            return f"{self.name}: not decided: every value failed on the coarse winner (see the FAILED trial runs)"
        order = sorted(self.trials, key=lambda value: value != chosen)
        shown = ", ".join(f"{value} {scoring.to_metric(trial.mean_score):.4f} ± {trial.std_score:.4f}" if trial.ok
                          else f"{value} failed" for value in order for trial in [self.trials[value]])
        folds = len(self.trials[chosen].fold_scores)
        if len(self.contenders) > 1:
            return (f"{self.name}: left to the fine stage among {{{', '.join(map(str, self.contenders))}}}, which "
                    f"trains the coarse winner with each on its split before the grid and keeps the best: a paired "
                    f"comparison could not tell them apart (none shown worse than the best mean by a paired t-test "
                    f"over the same {folds} folds at the {OPEN_LEVEL:.0%} level; mean CV {scoring.display_name}): "
                    f"{shown}")
        return (f"{self.name}: fixed at {chosen}, by a paired comparison on the coarse winner (the same "
                f"{folds} folds for each value; mean CV {scoring.display_name}): {shown}")

    def undecided(self) -> Param | None:
        """The choice among the contenders, for the fine stage to decide; None when one value stands out."""
        contenders = self.contenders
        return Param(self.name, "choice", values=contenders) if len(contenders) > 1 else None


@dataclass(frozen=True)
class CoarseResult:
    trials: tuple[CoarseTrial, ...]  # the sampled candidates, the promoted, then the paired comparisons' (numbered on)
    space: dict[str, Param]
    scoring: Scoring
    n_sampled: int  # how many of `trials` (the first) were sampled from `space`
    paired: tuple[PairedChoice, ...] = ()
    n_promoted: int = 0  # how many of `trials` (after the sampled) are the best sampled ones at the full budget

    @property
    def sampled(self) -> list[CoarseTrial]:
        """The candidates sampled from `space` (what the narrowing learns from)."""
        return list(self.trials[:self.n_sampled])

    @property
    def promoted(self) -> list[CoarseTrial]:
        """The best capped candidates at the full budget: those whose capped fits all stopped early as they were
        (no fit trained again), then those cross-validated again; each group best first."""
        return list(self.trials[self.n_sampled:self.n_sampled + self.n_promoted])

    @property
    def completed(self) -> list[CoarseTrial]:
        return [t for t in self.trials if t.ok]

    @property
    def best(self) -> CoarseTrial:
        """The coarse winner: the best sampled candidate (the best promoted one, when the sampled fits were capped),
        with the paired comparisons' choices when made."""
        decided = [choice for choice in self.paired if choice.chosen is not None]
        if decided:
            return decided[-1].trials[decided[-1].chosen]
        return _best_sampled(self.sampled, self.promoted)

    def standings(self) -> list[tuple[dict[str, Any], float]]:
        """Each sampled candidate's values and a score ordering them as successive halving does, for the narrowing:
        the promoted candidates above the rest, by their full-budget scores; the rest by their capped scores.
        The score is the rank (higher is better; NaN: failed); without promotion, the plain mean CV score."""
        if not self.n_promoted:
            return [(t.params, t.mean_score) for t in self.sampled]
        full = {_values_key(t.params): t.mean_score for t in self.promoted if t.ok}
        scores = np.array([full.get(_values_key(t.params), t.mean_score) for t in self.sampled], dtype="float64")
        top = np.array([_values_key(t.params) in full for t in self.sampled])
        rest = ~top & np.isfinite(scores)
        ranks = np.full(len(scores), np.nan)
        ranks[rest] = rankdata(scores[rest])  # ties share their mean rank, as the narrowing ranks them
        ranks[top] = rest.sum() + rankdata(scores[top])
        return [(t.params, float(rank)) for t, rank in zip(self.sampled, ranks, strict=True)]


def _values_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


def _best_sampled(sampled: Sequence[CoarseTrial], promoted: Sequence[CoarseTrial]) -> CoarseTrial:
    """The best promoted candidate (its full-budget trial); without one that succeeded, the best sampled."""
    return max([t for t in promoted if t.ok] or [t for t in sampled if t.ok], key=lambda t: t.mean_score)


class _TrackedFit:
    """For the SciKeras wrappers: training through searchlab's tf.data pipeline, and failed fits recorded
    instead of raised (see `fit`).

    `_build_keras_model`, `_fit_keras_model`, `_predict_raw`, `_random_state` and `_fit_callbacks` are SciKeras
    internals (SciKeras offers no public hook to replace how the network is fitted or predicts);
    tests/test_thirdparty.py checks them.
    """

    def _build_keras_model(self) -> Any:
        """The network for this fit: the previous fit's in this thread, reset to its starting state, when it was
        built from the same values and data shape (the next fold of the same candidate); else a new one.

        Reset, not rebuilt: the same seed gives a new network the very same starting weights, random-generator
        states and optimizer state, so the fit is bit for bit the same, without tracing its training, validation
        and prediction functions again (about a second each on CPU, more than a short fit's epochs).
        A fitted estimator's `model_` therefore changes when the next fit in its thread reuses it; the
        cross-validation fits keep only their scores.
        """
        key = repr((sorted((k, repr(v)) for k, v in self.get_params().items() if k.startswith("model__")),  # type: ignore[attr-defined]
                    self._get_metadata(), self._random_state))  # type: ignore[attr-defined]
        last = getattr(_last_network, "value", None)
        if last is not None and last[0] == key:
            _, model, start = last
            for variable, value in zip(_network_state(model), start, strict=True):
                variable.assign(value)
            return model
        _last_network.value = None
        clear_keras_state()  # drop earlier candidates' graphs: memory stays flat with n_jobs=1
        model = super()._build_keras_model()  # type: ignore[misc]
        model.optimizer.build(model.trainable_variables)  # its state exists now, to be reset with the weights
        _last_network.value = (key, model, [v.numpy() for v in _network_state(model)])
        return model

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
                                validation=validation, callbacks=self._fit_callbacks,  # type: ignore[attr-defined]
                                # SciKeras has turned `class_weight` into `sample_weight` too; ignored here:
                                # `fit_model` weighs the classes of the rows it trains on, as in every stage
                                class_weight=getattr(self, "class_weight", None) or "none")
        self.history_ = {key: [float(v) for v in values] for key, values in history.history.items()}

    def _predict_raw(self, X: Any, **kwargs: Any) -> np.ndarray:
        """SciKeras' raw predictions (probabilities, or regression outputs) by eager calls (`predict_rows`), not
        `Model.predict`, which traces a graph for every new network."""
        if not self.initialized_:  # type: ignore[attr-defined]
            return super()._predict_raw(X, **kwargs)  # type: ignore[misc]  # raises SciKeras' NotFittedError
        X, _ = self._validate_data(X=X, y=None)  # type: ignore[attr-defined]
        return predict_rows(self.model_, self.feature_encoder_.transform(X))  # type: ignore[attr-defined]

    def fit(self, X: Any, y: Any, **kwargs: Any) -> Any:
        """Fit; a fit that raises or diverges does not raise, it leaves `fit_error_` for the scorer to score
        NaN (a failed candidate is recorded and skipped, as scikit-learn's `error_score=nan` would, but
        without scikit-learn refusing a batch whose every fit failed)."""
        self.fit_error_: str | None = None
        try:
            super().fit(X, y, **kwargs)  # type: ignore[misc]
            problem = diverged(self.history_.get("loss", []))
            if problem:
                raise FloatingPointError(problem)
        except Exception as exc:
            self.fit_error_ = f"{type(exc).__name__}: {exc}".strip()[:2000]
        return self


_last_network = threading.local()  # (key, network, starting state) of the last fit in this thread


def _network_state(model: Any) -> list[Any]:
    """Everything a fit changes in a network: weights, random-generator states, optimizer state (and rate)."""
    return [*model.variables, *model.optimizer.variables]


class SearchlabClassifier(_TrackedFit, KerasClassifier):
    """SciKeras' classifier with scikit-learn >= 1.6 tags.

    scikeras 0.13 only defines the old `_more_tags`, so `is_classifier` is False and
    `cv=int` silently becomes an unshuffled, unstratified KFold (tests/test_coarse.py checks both).
    """

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags()
        tags.regressor_tags = None
        return tags


class SearchlabRegressor(_TrackedFit, KerasRegressor):
    """SciKeras' regressor with scikit-learn >= 1.6 tags (see `SearchlabClassifier`)."""

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor"
        tags.regressor_tags = RegressorTags()
        tags.classifier_tags = None
        return tags


def make_estimator(ctx: SearchContext, values: Mapping[str, Any] | None = None) -> Any:
    """A scikit-learn estimator (scaling inside, then the network) with `values` as hyperparameters, the
    defaults (`ctx.defaults`) for the rest.

    Regression targets are standardized inside too (`TransformedTargetRegressor`), so every fold fits its own
    target scaling.
    """
    hyperparameters = {**ctx.defaults, **(values or {})}
    wrapper = SearchlabRegressor if ctx.data.task == "regression" else SearchlabClassifier
    balanced = ctx.model.class_weight == ClassWeight.balanced
    weights = {} if ctx.data.task == "regression" else {"class_weight": "balanced" if balanced else None}
    net = wrapper(
        model=_scikeras_model,
        model__task=ctx.data.task,
        model__candidate=-1,
        model__builder=ctx.builder,
        model__steps_per_execution=ctx.model.steps_per_execution,
        **{f"model__{name}": value for name, value in split_hyperparameters(hyperparameters)[0].items()},
        batch_size=hyperparameters["batch_size"],
        epochs=hyperparameters["epochs"],
        callbacks=training_callbacks(ctx.model, ctx.scoring),
        validation_split=ctx.model.validation_fraction,
        random_state=ctx.seed,
        verbose=0,
        **weights,
    )
    pipeline = Pipeline([("scale", FeatureScaler(hyperparameters["scaling"])), ("net", net)])
    if ctx.data.task == "regression":
        return TransformedTargetRegressor(regressor=pipeline, transformer=StandardScaler())
    return pipeline


def param_key(data: Dataset, name: str) -> str:
    """The scikit-learn parameter name of hyperparameter `name` in `make_estimator`'s estimator."""
    if name in SCALING_PARAMS:
        return _pipeline_prefix(data) + "scale__" + name
    return _net_prefix(data) + (name if name in FIT_PARAMS else f"model__{name}")


def find_net(estimator: Any) -> Any:
    """The fitted SciKeras network inside a (fitted) `make_estimator` estimator."""
    if isinstance(estimator, TransformedTargetRegressor):
        estimator = estimator.regressor_
    return estimator.named_steps["net"]


def make_cv(data: Dataset, folds: int, seed: int) -> StratifiedKFold | KFold:
    """Shuffled folds, stratified for classification."""
    splitter = StratifiedKFold if data.is_classification else KFold
    return splitter(n_splits=folds, shuffle=True, random_state=seed)


def sampler_seed(settings: CoarseConfig, seed: int) -> int:
    """The seed the candidates are sampled with: `search.coarse.random_state`, else the search's seed."""
    return seed if settings.random_state is None else settings.random_state


def run_coarse(
    ctx: SearchContext,
    space: Space,
    settings: CoarseConfig,
    *,
    paired: Mapping[str, Param] | None = None,
    on_trial: Callable[[CoarseTrial], None] | None = None,
    finished: Mapping[int, CoarseTrial] | None = None,
    dask: DaskConfig | None = None,
) -> CoarseResult:
    """Cross-validate `settings.n_iter` random candidates from `space`; then, for each choice in `paired` in turn,
    the winner so far with each of the choice's values, on other folds than the sampled candidates'.

    Hyperparameters outside `space` keep their defaults (`ctx.defaults`). A sampled candidate's fit trains at most
    `settings.epochs` epochs (low fidelity: enough to rank candidates), never more than `ctx.model.epochs`. When
    that cap trains less, the better `settings.promote` share of the candidates is cross-validated again up to
    `ctx.model.epochs` on the same folds (a second rung, as in successive halving), and the winner is the best of
    those: a capped fit favours the candidates that learn fastest, not best. The paired comparisons train up to
    `ctx.model.epochs` too: a choice such as the scaling changes how fast a network learns (piecewise scaling feeds
    it many more inputs).
    The fits run in `settings.n_jobs` local worker processes, or on the Dask cluster `dask` describes.

    Args:
        paired: choices (not in `space`) decided on the winner by a paired comparison, in order.
        on_trial: called with each newly finished candidate, in candidate order.
        finished: candidates already evaluated, by number (read back from the store when resuming): reused,
            not trained again.

    Raises:
        ConfigError: the Dask cluster cannot be used (see `searchlab.infra.dask_cluster.dask_backend`).
    """
    paired = dict(paired or {})
    capped = make_estimator(ctx, {"epochs": settings.epochs_per_fit(ctx.model.epochs)})
    with tempfile.TemporaryDirectory(prefix="searchlab-histories-") as history_dir, \
            _fit_backend(settings.n_jobs, dask, history_dir) as (workers, recycle), warnings.catch_warnings():
        silence_fit_warnings()
        evaluate = _Evaluator(ctx, {**space, **paired}, settings, history_dir=history_dir, workers=workers,
                              recycle=recycle, on_trial=on_trial, finished=dict(finished or {}))
        cv = make_cv(ctx.data, settings.cv, ctx.seed)
        sampled = evaluate(capped, dict(enumerate(sample_candidates(space, settings.n_iter,
                                                                    sampler_seed(settings, ctx.seed), ctx.data))), cv)
        best_capped = sorted((t for t in sampled if t.ok), key=lambda t: -t.mean_score)
        # a candidate whose every capped fit stopped early already has its full-budget folds: not trained again
        # (numbered first, so candidates are still reported in number order)
        to_promote = dict(enumerate(sorted(best_capped[:settings.n_promoted(ctx.model.epochs)],
                                           key=lambda t: not t.stopped_early), start=len(sampled)))
        now = time.time()
        evaluate.reuse({number: dataclasses.replace(t, number=number, epochs=ctx.model.epochs, start_time=now,
                                                    end_time=now)
                        for number, t in to_promote.items() if t.stopped_early})
        promoted = evaluate(make_estimator(ctx), {number: t.params for number, t in to_promote.items()}, cv)
        trials = sampled + promoted
        decided: list[PairedChoice] = []
        paired_cv = make_cv(ctx.data, settings.cv, ctx.seed + 1)
        winner = _best_sampled(sampled, promoted) if best_capped else None
        for name, param in paired.items():
            if winner is None:
                break
            values = [winner.params.get(name, ctx.defaults[name])] if decided else []
            values += [v for v in param.values if v not in values]
            reused = {values[0]: winner} if decided else {}
            candidates = {len(trials) + i: {**winner.params, name: v}
                          for i, v in enumerate(v for v in values if v not in reused)}
            found = evaluate(make_estimator(ctx), candidates, paired_cv)
            trials += found
            decided.append(PairedChoice(name, reused | {t.params[name]: t for t in found}))
            winner = decided[-1].trials.get(decided[-1].chosen)
    return CoarseResult(tuple(trials), dict(space), ctx.scoring, settings.n_iter, tuple(decided), len(promoted))


def n_compared(paired: Mapping[str, Param]) -> int:
    """How many candidates `run_coarse`'s paired comparisons cross-validate: the first choice's every value, each
    later one's every value but the winner's."""
    return sum(len(param.values) for param in paired.values()) - max(0, len(paired) - 1)


def sample_candidates(space: Space, n_iter: int, seed: int, data: Dataset) -> list[dict[str, Any]]:
    """`n_iter` candidates (values by name) as `RandomizedSearchCV` draws them from `space`, with the choices
    stratified: each value of a choice on as many candidates as the others (`space.stratify_choices`)."""
    distributions = {param_key(data, name): p.distribution() for name, p in space.items()}
    drawn = stratify_choices(list(ParameterSampler(distributions, n_iter, random_state=seed)), distributions, seed)
    return [{key.rsplit("__", 1)[-1]: value for key, value in candidate.items()} for candidate in drawn]


class _Evaluator:
    """Cross-validates numbered candidates through `_StreamingSearch` on `workers` fit processes (replaced every
    so often if `recycle`), reporting each as it finishes and reusing those already `finished`."""

    def __init__(self, ctx: SearchContext, space: Space, settings: CoarseConfig, *, history_dir: str, workers: int,
                 recycle: bool, on_trial: Callable[[CoarseTrial], None] | None,
                 finished: dict[int, CoarseTrial]) -> None:
        self.ctx, self.space, self.settings = ctx, space, settings
        self.history_dir, self.workers, self.recycle = history_dir, workers, recycle
        self.on_trial, self.finished = on_trial, finished

    def reuse(self, trials: Mapping[int, CoarseTrial]) -> None:
        """Take `trials` as finished (reported now, unless already finished before)."""
        for number, trial in trials.items():
            if number not in self.finished:
                self.finished[number] = trial
                if self.on_trial is not None:
                    self.on_trial(trial)

    def __call__(self, estimator: Any, candidates: dict[int, dict[str, Any]], cv: Any) -> list[CoarseTrial]:
        """The candidates' trials (`estimator` with their values), in number order: values by hyperparameter name,
        by candidate number."""
        ctx, settings = self.ctx, self.settings
        candidate_key = _net_prefix(ctx.data) + "model__candidate"
        epochs = estimator.get_params()[_net_prefix(ctx.data) + "epochs"]
        X, y = ctx.data.X_train, ctx.data.y_train
        fold_keys = [_fold_key(X[test]) for _, test in cv.split(X, y)]
        done = {n: self.finished[n] for n in candidates if n in self.finished}

        def report(batch: list[dict[str, Any]], results: dict[str, Any], started: float) -> None:
            for offset, candidate in enumerate(batch):
                row = len(results["params"]) - len(batch) + offset
                number = candidate[candidate_key]
                params = {name: self.space[name].cast(value) for key, value in candidate.items()
                          if key != candidate_key for name in [key.rsplit("__", 1)[-1]]}
                scores = tuple(float(results[f"split{k}_test_score"][row]) for k in range(len(fold_keys)))
                trial = _make_trial(number, params, scores, Path(self.history_dir), fold_keys, started, epochs)
                done[number] = trial
                if self.on_trial is not None:
                    self.on_trial(trial)

        pending = [{**{param_key(ctx.data, name): value for name, value in values.items()}, candidate_key: number}
                   for number, values in candidates.items() if number not in done]
        # Several `fit` calls, each over a slice of the candidates, so local worker processes can be replaced in
        # between: TensorFlow keeps a few MiB per trained model that no clear_session frees.
        workers = self.workers
        per_slice = max(workers, _FITS_PER_WORKER * workers // settings.cv) if self.recycle else max(1, len(pending))
        for start in range(0, len(pending), per_slice):
            if start:
                end_fit_workers(kill=False)
            _StreamingSearch(
                estimator, {param_key(ctx.data, name): p.distribution() for name, p in self.space.items()},
                candidates=pending[start:start + per_slice], batch_size=workers, report=report,
                n_iter=len(pending[start:start + per_slice]), scoring=_HistoryScorer(ctx.scoring, self.history_dir),
                cv=cv, n_jobs=settings.n_jobs, refit=False, error_score=np.nan).fit(X, y)
        return [done[n] for n in sorted(done)]


@contextmanager
def _fit_backend(n_jobs: int, dask: DaskConfig | None, history_dir: str) -> Iterator[tuple[int, bool]]:
    """Where the fits run: yields how many run at once, and whether to replace the worker processes
    between slices (local joblib workers only; a Dask worker can be given `--lifetime` instead)."""
    if dask is not None:
        from searchlab.infra.dask_cluster import dask_backend  # loads dask.distributed: only when asked for

        with dask_backend(dask, history_dir) as threads:
            yield threads, False
        return
    workers = process_count(n_jobs)
    with worker_thread_env(workers):
        try:
            yield workers, workers > 1
        finally:
            if workers > 1:  # idle workers hold ~1 GB each; on Ctrl-C they must not go on training
                end_fit_workers(kill=True)


def end_fit_workers(kill: bool) -> None:
    """End joblib's worker processes, which run the cross-validation fits: after their running fits
    (`kill=False`), or at once. joblib starts new ones for its next fits.

    The executor is read where loky keeps it (`reusable_executor._executor`; loky has no public getter):
    asking `get_reusable_executor()` for it with arguments other than joblib's own makes loky first wait for
    the running fits and start a new executor, seconds per call and no stop at all on Ctrl-C.
    """
    executor = reusable_executor._executor
    if executor is not None:
        executor.shutdown(wait=not kill, kill_workers=kill)


def silence_fit_warnings() -> None:
    """Inside `warnings.catch_warnings()`: silence the cross-validation fits' warnings that need no action."""
    warnings.simplefilter("ignore", FitFailedWarning)  # each failure is reported as a FAILED trial
    # A failed fit scores NaN (see `_TrackedFit.fit`); it is reported as a FAILED trial.
    warnings.filterwarnings("ignore", "One or more of the test scores are non-finite", UserWarning)
    # loky replaces a worker whose memory grew by 300 MB since its first fit (TensorFlow keeps some per trained
    # model) and warns if fits were queued for it; they go to the new worker, none is lost.
    warnings.filterwarnings("ignore", "A worker stopped while some jobs were given to the executor", UserWarning)


_FITS_PER_WORKER = 30  # fits a joblib worker runs before it is replaced (~5 MiB kept per fit, ~5 s to restart)


class _StreamingSearch(RandomizedSearchCV):
    """`RandomizedSearchCV` that evaluates given candidates (drawn as it draws them, by `run_coarse`), a batch at a
    time, and reports each batch.

    Args (beyond `RandomizedSearchCV`'s):
        candidates: the estimator parameters of each candidate this `fit` evaluates.
        batch_size: candidates evaluated at once (as many as fits run in parallel).
        report: called with each batch's candidates, the search's results so far, and the batch's start time.
    """

    def __init__(self, estimator: Any, param_distributions: dict[str, Any], *, candidates: list[dict[str, Any]],
                 batch_size: int, report: Callable[[list[dict[str, Any]], dict[str, Any], float], None],
                 **kwargs: Any) -> None:
        super().__init__(estimator, param_distributions, **kwargs)
        self.candidates = candidates
        self.batch_size = batch_size
        self.report = report

    def __getstate__(self) -> dict[str, Any]:
        # scikit-learn sends the search itself to the workers (as `caller`); the report callback
        # holds the terminal and the tracker, which neither can nor need travel.
        state = dict(super().__getstate__())
        state.pop("report", None)
        return state

    def _run_search(self, evaluate_candidates: Callable[[Iterable[dict[str, Any]]], dict[str, Any]]) -> None:
        # `_run_search` is how scikit-learn's BaseSearchCV subclasses choose their candidates.
        for start in range(0, len(self.candidates), self.batch_size):
            batch = self.candidates[start:start + self.batch_size]
            started = time.time()
            self.report(batch, evaluate_candidates(batch), started)


class _HistoryScorer:
    """Scores a fitted fold, and leaves its training curves (or why its fit failed) in `history_dir` for the
    parent process: joblib's worker processes cannot hand them back otherwise."""

    def __init__(self, scoring: Scoring, history_dir: str) -> None:
        self.scorer = scorer(scoring)
        self.history_dir = history_dir

    def __call__(self, estimator: Any, X: np.ndarray, y: np.ndarray) -> float:
        net = find_net(estimator)
        candidate = net.get_params()["model__candidate"]
        if net.fit_error_ is not None:
            (Path(self.history_dir) / f"{candidate}.error").write_text(net.fit_error_)
            return float("nan")
        history = {k: [float(v) for v in values] for k, values in net.history_.items()}
        (Path(self.history_dir) / f"{candidate}-{_fold_key(X)}.json").write_text(json.dumps(history))
        return float(self.scorer(estimator, X, y))


def _scikeras_model(meta: dict[str, Any], compile_kwargs: dict[str, Any], params: dict[str, Any],
                    candidate: int, builder: Builder, steps_per_execution: int, **hyperparameters: Any) -> Any:
    n_classes = meta.get("n_classes_") or 0
    steps = execution_steps(steps_per_execution, meta["X_shape_"][0], params["batch_size"], params["epochs"])
    return builder.build(n_features=meta["n_features_in_"], n_classes=n_classes, steps_per_execution=steps,
                         **hyperparameters)


def _pipeline_prefix(data: Dataset) -> str:
    return "regressor__" if data.task == "regression" else ""


def _net_prefix(data: Dataset) -> str:
    return _pipeline_prefix(data) + "net__"


def _fold_key(X: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(X).tobytes()).hexdigest()[:16]


def _make_trial(number: int, params: dict[str, Any], scores: tuple[float, ...], history_dir: Path,
                fold_keys: list[str], started: float, epochs: int) -> CoarseTrial:
    """A candidate's record: its fold scores, the mean of its folds' curves and, if a fold failed, why."""
    histories = [json.loads(path.read_text()) for fold in fold_keys
                 for path in [history_dir / f"{number}-{fold}.json"] if path.exists()]
    error = None
    if not all(np.isfinite(scores)):
        note = history_dir / f"{number}.error"
        error = note.read_text() if note.exists() else "a fold's fit or scoring failed"
    return CoarseTrial(number, params, scores, mean_curves(histories), error, started, time.time(), epochs)
