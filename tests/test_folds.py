"""The COMPAT trap: SciKeras 0.13 has no scikit-learn >= 1.6 tags, so folds silently stop being stratified.

See ../shared/COMPAT.md. These tests fail if `SearchlabClassifier`/`SearchlabRegressor` lose their tags
or `make_cv` stops shuffling and stratifying.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scikeras.wrappers import KerasClassifier
from sklearn.base import is_classifier, is_regressor
from sklearn.model_selection import KFold, StratifiedKFold, check_cv

from searchlab.coarse import SearchlabClassifier, SearchlabRegressor, make_cv, make_estimator
from searchlab.config import Config
from searchlab.data import Dataset, load_dataset
from searchlab.metrics import scoring_for

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
    estimator = make_estimator(data, config.model.hyperparameters(), config.model, scoring_for(data.task, None), config.seed)
    assert is_classifier(estimator) and not is_regressor(estimator)
    assert isinstance(estimator.named_steps["net"], SearchlabClassifier)


def test_estimator_for_regression_is_a_regressor(regression: tuple[Config, Dataset]) -> None:
    """The target-scaling wrapper around the regression pipeline is a regressor."""
    config, data = regression
    estimator = make_estimator(data, config.model.hyperparameters(), config.model, scoring_for(data.task, None), config.seed)
    assert is_regressor(estimator) and not is_classifier(estimator)


def test_check_cv_stratifies_for_our_estimator(digits: tuple[Config, Dataset]) -> None:
    """With the tags, scikit-learn's own `cv=int` handling picks StratifiedKFold; without, plain KFold."""
    config, data = digits
    estimator = make_estimator(data, config.model.hyperparameters(), config.model, scoring_for(data.task, None), config.seed)
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
