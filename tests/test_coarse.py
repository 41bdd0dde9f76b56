"""The coarse stage: stratified shuffled folds, stratified choices, and `run_coarse` on tiny data.

SciKeras 0.13 defines no scikit-learn >= 1.6 tags, so `is_classifier` is False for its wrappers and `cv=int`
silently becomes an unshuffled, unstratified KFold: the tests on folds fail if `SearchlabClassifier` /
`SearchlabRegressor` lose their tags or `make_cv` stops shuffling and stratifying.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from joblib.externals.loky import reusable_executor
from scikeras.wrappers import KerasClassifier
from sklearn.base import is_classifier, is_regressor
from sklearn.model_selection import KFold, StratifiedKFold, check_cv

from searchlab import coarse
from searchlab.coarse import SearchlabClassifier, SearchlabRegressor, make_cv, make_estimator, run_coarse
from searchlab.config import Config
from searchlab.context import SearchContext
from searchlab.data import Dataset, load_dataset
from searchlab.metrics import scoring_for
from searchlab.space import Param, stratify_choices
from searchlab.trials import CoarseTrial
from tests.conftest import stage_inputs

MakeConfig = Callable[..., Config]


@pytest.fixture
def digits(make_config: MakeConfig) -> tuple[Config, Dataset]:
    config = make_config()
    return config, load_dataset(config.dataset, config.seed)


@pytest.fixture
def regression(make_config: MakeConfig) -> tuple[Config, Dataset]:
    config = make_config("dataset=synthetic", "dataset.generator=regression", "dataset.n_samples=200")
    return config, load_dataset(config.dataset, config.seed)


def test_wrappers_carry_estimator_type() -> None:
    """Our wrappers are a classifier and a regressor to scikit-learn, and not the other way round."""
    assert is_classifier(SearchlabClassifier(model=None)) and not is_regressor(SearchlabClassifier(model=None))
    assert is_regressor(SearchlabRegressor(model=None)) and not is_classifier(SearchlabRegressor(model=None))


def test_plain_scikeras_is_not_a_classifier() -> None:
    """The trap itself: SciKeras' own wrapper is not a classifier to this scikit-learn.

    If this starts failing, SciKeras (or scikit-learn) fixed its tags and the subclasses may be dropped.
    """
    assert not is_classifier(KerasClassifier(model=None))


def test_pipeline_from_make_estimator_is_a_classifier(digits: tuple[Config, Dataset]) -> None:
    """The scaling + network pipeline built for a classification set is a classifier."""
    config, data = digits
    estimator = make_estimator(SearchContext(data, scoring_for(data.task, None), config.model, config.seed))
    assert is_classifier(estimator) and not is_regressor(estimator)
    assert isinstance(estimator.named_steps["net"], SearchlabClassifier)


def test_estimator_for_regression_is_a_regressor(regression: tuple[Config, Dataset]) -> None:
    """The target-scaling wrapper around the regression pipeline is a regressor."""
    config, data = regression
    estimator = make_estimator(SearchContext(data, scoring_for(data.task, None), config.model, config.seed))
    assert is_regressor(estimator) and not is_classifier(estimator)


def test_check_cv_stratifies_for_our_estimator(digits: tuple[Config, Dataset]) -> None:
    """With the tags, scikit-learn's own `cv=int` handling picks StratifiedKFold; without, plain KFold."""
    config, data = digits
    estimator = make_estimator(SearchContext(data, scoring_for(data.task, None), config.model, config.seed))
    ours = check_cv(3, data.y_train, classifier=is_classifier(estimator))
    assert isinstance(ours, StratifiedKFold)
    plain = check_cv(3, data.y_train, classifier=is_classifier(KerasClassifier(model=None)))
    assert type(plain) is KFold and not plain.shuffle


def test_make_cv_classification_is_shuffled_stratified(digits: tuple[Config, Dataset]) -> None:
    """Classification folds are shuffled, seeded StratifiedKFold."""
    config, data = digits
    cv = make_cv(data, 3, config.seed)
    assert isinstance(cv, StratifiedKFold)
    assert cv.shuffle and cv.random_state == config.seed and cv.get_n_splits() == 3


def test_make_cv_regression_is_shuffled_kfold(regression: tuple[Config, Dataset]) -> None:
    """Regression folds are shuffled, seeded KFold."""
    config, data = regression
    cv = make_cv(data, 4, config.seed)
    assert type(cv) is KFold
    assert cv.shuffle and cv.random_state == config.seed and cv.get_n_splits() == 4


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_make_cv_folds_keep_class_proportions(digits: tuple[Config, Dataset], folds: int) -> None:
    """Every fold of the digits training split has each class within a point of its overall share."""
    config, data = digits
    overall = np.bincount(data.y_train, minlength=data.n_classes) / len(data.y_train)
    seen = np.zeros(len(data.y_train), dtype=int)
    for train, test in make_cv(data, folds, config.seed).split(data.X_train, data.y_train):
        seen[test] += 1
        assert not set(train) & set(test)
        share = np.bincount(data.y_train[test], minlength=data.n_classes) / len(test)
        assert np.abs(share - overall).max() < 0.01
        # shuffled: a fold's rows are not one contiguous block of the training split
        assert np.diff(np.sort(test)).max() > 1
    assert (seen == 1).all()


def test_make_cv_is_repeatable(digits: tuple[Config, Dataset]) -> None:
    """The same seed gives the same folds, another seed other folds."""
    config, data = digits

    def first_fold(seed: int) -> np.ndarray:
        return next(iter(make_cv(data, 3, seed).split(data.X_train, data.y_train)))[1]

    np.testing.assert_array_equal(first_fold(0), first_fold(0))
    assert not np.array_equal(first_fold(0), first_fold(1))


# -- run_coarse on 200 synthetic rows ---------------------------------------------------------------

# Three candidates, two folds, a few epochs, fits in this process: a stage in seconds.
FAST = ("search.coarse.n_iter=3", "search.coarse.n_jobs=1", "model.epochs=3")


@pytest.fixture(scope="module")
def three_candidates() -> tuple[Config, SearchContext, list[CoarseTrial], coarse.CoarseResult]:
    config, ctx = stage_inputs(*FAST)
    reported: list[CoarseTrial] = []
    result = run_coarse(ctx, config.coarse_space(), config.search.coarse, on_trial=reported.append)
    return config, ctx, reported, result


def test_every_candidate_is_reported_once_in_order(three_candidates: tuple[Config, SearchContext,
                                                                           list[CoarseTrial], coarse.CoarseResult]) -> None:
    config, _, reported, result = three_candidates
    assert [t.number for t in reported] == [0, 1, 2] == [t.number for t in result.trials]
    space = config.coarse_space()
    for trial in result.trials:
        assert trial.ok and len(trial.fold_scores) == config.search.coarse.cv
        assert 0.0 <= trial.mean_score <= 1.0  # accuracy
        assert set(trial.params) == set(space)
        assert len(trial.curves["loss"]) == config.model.epochs  # fold means per epoch, from the workers
        assert trial.start_time <= trial.end_time


def test_finished_candidates_are_reused_and_the_rest_match_a_full_run(
        three_candidates: tuple[Config, SearchContext, list[CoarseTrial], coarse.CoarseResult]) -> None:
    """What resuming relies on: the same candidates are sampled, and the missing ones score as in an
    uninterrupted stage (each fit is seeded, so the local backend repeats them exactly)."""
    config, ctx, _, full = three_candidates
    reported: list[CoarseTrial] = []
    resumed = run_coarse(ctx, config.coarse_space(), config.search.coarse, on_trial=reported.append,
                         finished={0: full.trials[0]})
    assert [t.number for t in reported] == [1, 2]
    assert resumed.trials[0] is full.trials[0]
    for a, b in zip(resumed.trials, full.trials, strict=True):
        assert a.params == b.params
        assert a.fold_scores == b.fold_scores  # bit for bit: SciKeras turns TensorFlow's op determinism on


def test_capped_candidates_promote_the_best_and_paired_choices_compare_the_winner_value_by_value() -> None:
    """`search.coarse.epochs` caps the sampled candidates' fits (low fidelity); the better `promote` share of them is
    cross-validated again up to `model.epochs` on the same folds, and the best of those is the winner. Each paired
    choice then cross-validates the winner so far with each of its values (the first choice every value, the next
    every value but the winner's, which it reuses) up to `model.epochs`, as a choice can change how fast a network
    learns; the best mean is kept and is the stage's winner. A resumed stage reuses finished candidates and repeats
    the rest exactly."""
    config, ctx = stage_inputs(*FAST, "search.coarse.epochs=2", "search.coarse.promote=0.5")  # 2 of 3
    paired = {"scaling": Param("scaling", "choice", values=("standard", "quantile")),
              "activation": Param("activation", "choice", values=("relu", "tanh"))}
    reported: list[CoarseTrial] = []
    result = run_coarse(ctx, config.coarse_space(), config.search.coarse, paired=paired, on_trial=reported.append)
    assert [t.number for t in reported] == list(range(8)) == [t.number for t in result.trials]
    assert result.sampled == list(result.trials[:3]) and result.promoted == list(result.trials[3:5])
    assert [len(t.curves["loss"]) for t in result.trials] == [2, 2, 2, 3, 3, 3, 3, 3]
    assert [t.epochs for t in result.trials] == [2, 2, 2, 3, 3, 3, 3, 3]
    best_capped = sorted(result.sampled, key=lambda t: -t.mean_score)[:2]
    assert [t.params for t in result.promoted] == [t.params for t in best_capped]
    promoted_winner = max(result.promoted, key=lambda t: t.mean_score)
    # the narrowing's order: the promoted above the rest, by their full-budget scores
    ranks = {repr(params): rank for params, rank in result.standings()}
    assert ranks[repr(promoted_winner.params)] == 3.0
    assert sorted(ranks.values()) == [1.0, 2.0, 3.0]
    assert ranks[repr(sorted(result.sampled, key=lambda t: t.mean_score)[0].params)] == 1.0

    scaling, activation = result.paired
    assert [(value, t.number) for value, t in scaling.trials.items()] == [("standard", 5), ("quantile", 6)]
    for value, trial in scaling.trials.items():
        assert trial.ok and trial.params == {**promoted_winner.params, "scaling": value}
    assert scaling.trials[scaling.chosen].mean_score == max(t.mean_score for t in scaling.trials.values())
    winner = scaling.trials[scaling.chosen]
    assert activation.trials["relu"] is winner  # the default activation: the winner as it is
    assert activation.trials["tanh"].params == {**winner.params, "activation": "tanh"}
    assert activation.trials["tanh"].number == 7
    assert result.best is activation.trials[activation.chosen]
    verdict = (f"fixed at {activation.chosen}, by a paired" if activation.undecided() is None
               else "left to the fine stage among {")
    assert activation.explain(ctx.scoring).startswith(f"activation: {verdict}")

    again: list[CoarseTrial] = []
    resumed = run_coarse(ctx, config.coarse_space(), config.search.coarse, paired=paired, on_trial=again.append,
                         finished={t.number: t for t in result.trials[:4]})
    assert [t.number for t in again] == [4, 5, 6, 7]
    assert [(t.params, t.fold_scores) for t in resumed.trials] == [(t.params, t.fold_scores) for t in result.trials]


def test_promoting_every_capped_candidate_gives_the_full_budget_scores_without_training_stopped_fits_again() -> None:
    """With every candidate promoted, the second rung scores each exactly as a stage without a cap does; a candidate
    whose capped fits all stopped early (before the cap) is taken as it is, numbered first, not trained again."""
    settings = ("dataset.generator=regression", "search.coarse.n_iter=4", "model.epochs=10", "model.patience=2")
    config, ctx = stage_inputs(*settings, "search.coarse.epochs=5", "search.coarse.promote=1")
    reported: list[CoarseTrial] = []
    two_rungs = run_coarse(ctx, config.coarse_space(), config.search.coarse, on_trial=reported.append)
    config, ctx = stage_inputs(*settings)
    one_rung = {repr(t.params): t for t in run_coarse(ctx, config.coarse_space(), config.search.coarse).trials}

    stopped = [t for t in two_rungs.sampled if t.stopped_early]
    assert 0 < len(stopped) < 4  # both kinds, or the test tells nothing
    assert all(len(t.curves["loss"]) < 5 for t in stopped)
    assert [t.number for t in reported] == list(range(8))
    best_first = sorted(two_rungs.sampled, key=lambda t: (not t.stopped_early, -t.mean_score))
    assert [t.params for t in two_rungs.promoted] == [t.params for t in best_first]
    for capped, promoted in zip(best_first, two_rungs.promoted, strict=True):
        assert promoted.epochs == 10
        assert promoted.fold_scores == one_rung[repr(capped.params)].fold_scores  # bit for bit
        if capped.stopped_early:
            assert promoted.fold_scores == capped.fold_scores and promoted.curves == capped.curves
            assert promoted.end_time - promoted.start_time < 0.01  # not trained again
        else:
            assert len(promoted.curves["loss"]) > 5


def test_standings_rank_the_promoted_above_the_rest_and_fall_back_without_them() -> None:
    """A promoted candidate ranks by its full-budget score above every capped one, whatever its capped score; one
    whose full-budget fits failed ranks by its capped score; a failed capped candidate stays NaN. The winner is the
    best promoted one, or the best capped one when every promoted one failed."""
    capped = [CoarseTrial(i, {"units": units}, scores) for i, (units, scores) in
              enumerate([(8, (0.70, 0.72)), (16, (0.90, 0.88)), (32, (0.85, 0.87)), (64, (0.60, 0.62))])]
    capped.append(CoarseTrial(4, {"units": 128}, (float("nan"),), error="nan loss"))
    promoted = [CoarseTrial(5, {"units": 16}, (0.91, 0.91)), CoarseTrial(6, {"units": 32}, (0.95, 0.93))]
    space = {"units": Param("units", "int", 8, 128, log=True)}
    scoring = scoring_for("binary", None)
    result = coarse.CoarseResult((*capped, *promoted), space, scoring, n_sampled=5, n_promoted=2)
    ranks = [rank for _, rank in result.standings()]
    assert ranks[:4] == [2.0, 3.0, 4.0, 1.0] and np.isnan(ranks[4])
    assert result.best is promoted[1]
    failed = CoarseTrial(6, {"units": 32}, (float("nan"),), error="nan loss")
    result = coarse.CoarseResult((*capped, promoted[0], failed), space, scoring, n_sampled=5, n_promoted=2)
    assert [rank for _, rank in result.standings()][:4] == [2.0, 4.0, 3.0, 1.0]
    assert result.best is promoted[0]
    tied = [CoarseTrial(0, {"units": 8}, (0.70, 0.72)), CoarseTrial(1, {"units": 16}, (0.70, 0.72)),
            CoarseTrial(2, {"units": 32}, (0.80, 0.80)), CoarseTrial(3, {"units": 32}, (0.81, 0.81))]
    ranked = coarse.CoarseResult(tuple(tied), space, scoring, n_sampled=3, n_promoted=1).standings()
    assert [rank for _, rank in ranked] == [1.5, 1.5, 3.0]  # tied capped scores share their rank
    unpromoted = coarse.CoarseResult(tuple(capped), space, scoring, n_sampled=5)
    assert [score for _, score in unpromoted.standings()][:4] == [t.mean_score for t in capped[:4]]
    assert unpromoted.best is capped[1]


def test_a_paired_choice_whose_every_value_failed_decides_nothing() -> None:
    failed = {value: CoarseTrial(i, {"scaling": value}, (float("nan"),), error="FloatingPointError: nan loss")
              for i, value in enumerate(("standard", "piecewise"))}
    choice = coarse.PairedChoice("scaling", failed)
    assert choice.chosen is None
    assert choice.explain(scoring_for("binary", None)).startswith("scaling: not decided: every value failed")
    ok = {**failed, "standard": CoarseTrial(0, {"scaling": "standard"}, (0.8, 0.9))}
    assert coarse.PairedChoice("scaling", ok).chosen == "standard"


def test_a_paired_choice_leaves_open_the_values_it_cannot_tell_from_the_best() -> None:
    """A value not shown worse than the chosen one (a one-sided paired t-test over the folds, at 10%) is a
    contender, left for the fine stage to decide; one clearly behind, or failed, is not; with a single contender
    the choice is decided."""
    scores = {"standard": (0.80, 0.82, 0.81), "quantile": (0.90, 0.86, 0.91), "piecewise": (0.88, 0.87, 0.89),
              "failed": (float("nan"),) * 3}
    trials = {value: CoarseTrial(i, {"scaling": value}, s, error="nan loss" if value == "failed" else None)
              for i, (value, s) in enumerate(scores.items())}
    choice = coarse.PairedChoice("scaling", trials)
    assert choice.chosen == "quantile"
    assert choice.contenders == ("quantile", "piecewise")
    assert choice.undecided() == Param("scaling", "choice", values=("quantile", "piecewise"))
    scoring = scoring_for("binary", None)
    assert choice.explain(scoring).startswith("scaling: left to the fine stage among {quantile, piecewise}, which "
                                              "trains the coarse winner with each")
    clear = coarse.PairedChoice("scaling", {v: t for v, t in trials.items() if v != "piecewise"})
    assert clear.contenders == ("quantile",) and clear.undecided() is None
    assert clear.explain(scoring).startswith("scaling: fixed at quantile, by a paired comparison")


@pytest.mark.parametrize(("scores", "best", "worse"), [
    ((0.9395, 0.9666, 0.9374), (0.9687, 0.9666, 0.9749), True),  # level on one fold, far behind on the others
    ((0.9749, 0.9457, 0.9708), (0.9687, 0.9666, 0.9749), False),  # ahead on one fold: a near tie
    ((0.80, 0.80, 0.80), (0.81, 0.81, 0.81), True),  # behind by the same on every fold
    ((0.81, 0.81, 0.81), (0.81, 0.81, 0.81), False),  # the same on every fold
])
def test_a_value_is_shown_worse_by_a_paired_test_over_the_folds(scores: tuple[float, ...], best: tuple[float, ...],
                                                                worse: bool) -> None:
    assert coarse._shown_worse(scores, best) is worse


def test_diverging_candidates_fail_with_the_reason_and_the_rest_score() -> None:
    """SGD at learning rate 1e6 overflows: those candidates fail (NaN score, the reason kept) while the others
    are scored, without scikit-learn refusing a batch whose every fit failed."""
    config, ctx = stage_inputs(*FAST, "search.coarse.n_iter=4", "~search.coarse.space.learning_rate",
                               "+search.coarse.space.learning_rate={type:choice,values:[0.001,1000000.0]}",
                               "search.coarse.space.optimizer.values=[sgd]")
    result = run_coarse(ctx, config.coarse_space(), config.search.coarse)
    assert len(result.trials) == 4
    for trial in result.trials:
        if trial.params["learning_rate"] > 1:
            assert not trial.ok and trial.error is not None
            assert "nan" in trial.error.lower() or "inf" in trial.error.lower(), trial.error
        else:
            assert trial.ok, trial.error
    assert 0 < len(result.completed) < 4


def test_a_stage_where_every_fit_fails_returns_failed_candidates() -> None:
    config, ctx = stage_inputs(*FAST, "search.coarse.n_iter=2", "search.coarse.space.learning_rate.low=1e30",
                               "search.coarse.space.learning_rate.high=1e35", "search.coarse.space.optimizer.values=[sgd]")
    result = run_coarse(ctx, config.coarse_space(), config.search.coarse)
    assert [t.ok for t in result.trials] == [False, False]
    assert not result.completed


def test_worker_processes_are_replaced_between_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorFlow keeps a few MiB per trained model in a worker: the stage replaces its joblib workers every
    `_FITS_PER_WORKER` fits, and ends them with the stage."""
    ended: list[bool] = []
    real = coarse.end_fit_workers

    def spy(kill: bool) -> None:
        ended.append(kill)
        real(kill)

    monkeypatch.setattr(coarse, "_FITS_PER_WORKER", 2)  # slices of 2 candidates x 2 folds on 2 workers
    monkeypatch.setattr(coarse, "end_fit_workers", spy)
    config, ctx = stage_inputs("search.coarse.n_iter=4", "search.coarse.n_jobs=2", "model.epochs=2")
    result = run_coarse(ctx, config.coarse_space(), config.search.coarse)
    assert [t.number for t in result.trials] == [0, 1, 2, 3]
    assert all(t.ok for t in result.trials)  # the curves and scores came back from the workers
    # one replacement between the two slices, then the workers end with the stage
    assert ended == [False, True]
    assert reusable_executor._executor is None or reusable_executor._executor._flags.shutdown


def test_the_next_fold_of_a_candidate_reuses_its_network_and_fits_as_a_new_one_would() -> None:
    """The second fold of a candidate trains the first fold's network, reset (no new tracing), and scores bit
    for bit what a newly built network scores; another candidate gets a new network."""
    config, ctx = stage_inputs("model.epochs=4")
    X, y = ctx.data.X_train, ctx.data.y_train
    (train_a, _), (train_b, test_b) = make_cv(ctx.data, 2, config.seed).split(X, y)
    values = {"units": 16, "layers": 2, "dropout": 0.3, "noise": 0.2, "l2": 1e-3, "optimizer": "adam"}

    def fit(rows: np.ndarray, candidate: dict[str, object]) -> tuple[object, dict[str, list[float]], np.ndarray]:
        estimator = make_estimator(ctx, candidate).fit(X[rows], y[rows])
        net = coarse.find_net(estimator)
        return net.model_, net.history_, estimator.predict_proba(X[test_b])

    first, _, _ = fit(train_a, values)
    reused, history, proba = fit(train_b, values)
    assert reused is first and first.train_function is not None
    other, _, _ = fit(train_a, {**values, "units": 17})
    assert other is not first
    new, new_history, new_proba = fit(train_b, values)
    assert new is not first
    assert history == new_history and len(history["loss"]) >= 2
    np.testing.assert_array_equal(proba, new_proba)


@given(n=st.integers(1, 40), k=st.integers(2, 5), seed=st.integers(0, 2**32 - 1))
def test_every_choice_comes_up_equally_often_and_numbers_are_kept(n: int, k: int, seed: int) -> None:
    values = [f"v{i}" for i in range(k)]
    distributions = {"choice": values, "fixed": ["only"], "number": object()}
    rng = np.random.default_rng(seed)
    candidates = [{"choice": values[0], "fixed": "only", "number": float(x)} for x in rng.random(n)]
    stratified = stratify_choices(candidates, distributions, seed)
    counts = Counter(c["choice"] for c in stratified)
    assert set(counts) <= set(values) and max(counts.values()) - min(counts.get(v, 0) for v in values) <= 1
    assert [c["number"] for c in stratified] == [c["number"] for c in candidates]  # numbers as sampled
    assert all(c["fixed"] == "only" for c in stratified)
    assert stratified == stratify_choices(candidates, distributions, seed)  # the same seed, the same candidates
    assert candidates[0]["choice"] == values[0]  # the input is left as it was
