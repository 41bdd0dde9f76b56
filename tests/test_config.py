"""Config validation through real Hydra composition of `conf/`."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from searchlab.config import Config
from searchlab.errors import ConfigError
from searchlab.space import Param

MakeConfig = Callable[..., Config]


def test_default_config_composes(make_config: MakeConfig) -> None:
    """The plain `conf/` composes into a validated `Config` with the documented defaults."""
    config = make_config()
    assert isinstance(config, Config)
    assert config.dataset.name == "digits"
    assert config.search.fine.kind == "grid"
    assert config.model.hyperparameters()["optimizer"] == config.model.optimizer
    space = config.coarse_space()
    assert set(space) >= {"units", "learning_rate", "optimizer"}
    assert all(isinstance(p, Param) for p in space.values())


def test_smoke_experiment_shrinks_budgets(make_config: MakeConfig) -> None:
    """`experiment=smoke` lowers every budget below the defaults and still validates."""
    default, smoke = make_config(), make_config("experiment=smoke")
    assert smoke.search.coarse.n_iter < default.search.coarse.n_iter
    assert smoke.search.coarse.cv < default.search.coarse.cv
    assert smoke.model.epochs < default.model.epochs
    assert smoke.search.fine.max_params <= default.search.fine.max_params
    assert smoke.search.fine.points <= default.search.fine.points
    assert smoke.coarse_space()["units"].high < default.coarse_space()["units"].high


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("search.coarse.n_iter=0", ["search.coarse.n_iter", "0", ">= 1"]),
        ("search.coarse.cv=1", ["search.coarse.cv", "1", ">= 2"]),
        ("search.coarse.space.dropout.high=1.0", ["search.coarse.space.dropout.high", "1.0", "< 1"]),
        ("search.coarse.space.dropout.low=-0.1", ["search.coarse.space.dropout.low", "-0.1", ">= 0"]),
        ("search.coarse.space.l2.low=0", ["search.coarse.space.l2.low", "0", "> 0", "log"]),
        ("search.coarse.space.units.low=600", ["search.coarse.space.units.low", "600", "<= search.coarse.space.units.high"]),
        ("search.coarse.space.optimizer.values=[]", ["search.coarse.space.optimizer.values", "[]", "non-empty"]),
        ("search.coarse.space.optimizer.values=[adam,foo]", ["search.coarse.space.optimizer", "'foo'", "adam", "sgd"]),
        ("search.coarse.space.units.type=floaty", ["search.coarse.space.units.type", "'floaty'", "int, float, choice"]),
        ("search.coarse.space.layers.high=2.5", ["search.coarse.space.layers", "2.5", "int"]),
        ("model.activation=foo", ["model.activation", "'foo'", "relu", "tanh"]),
        ("model.dropout=1.5", ["model.dropout", "1.5", "< 1"]),
        ("model.reduce_lr=0", ["model.reduce_lr", "0", "> 0", "<= 1"]),
        ("model.reduce_lr=1.5", ["model.reduce_lr", "1.5", "<= 1"]),
        ("model.reduce_lr_patience=0", ["model.reduce_lr_patience", "0", ">= 1"]),
        ("model.scaling=minmax", ["model.scaling", "'minmax'", "standard", "quantile"]),
        ("model.learning_rate=0", ["model.learning_rate", "0", "> 0"]),
        ("search.fine.max_params=0", ["search.fine.max_params", "0", ">= 1"]),
        ("search.fine.points=0", ["search.fine.points", "0", ">= 1"]),
        ("search.fine.kind=bogus", ["search.fine.kind", "'bogus'", "grid", "hyperband"]),
        ("dataset.test_size=0", ["dataset.test_size", "0", "> 0", "< 1"]),
        ("dataset.test_size=1", ["dataset.test_size", "1", "> 0", "< 1"]),
        ("dataset.name=nope", ["dataset.name", "'nope'", "digits", "csv"]),
        ("dataset=csv", ["dataset.path", "None", "CSV"]),
        ("++search.coarse.space={foo:{type:int,low:1,high:2}}", ["search.coarse.space.foo", "'foo'", "units", "learning_rate"]),
    ],
)
def test_bad_value_raises_config_error(make_config: MakeConfig, override: str, expected: list[str]) -> None:
    """Each bad value fails with a `ConfigError` naming the key, the value and what is allowed."""
    with pytest.raises(ConfigError) as info:
        make_config(override)
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_csv_without_target_raises_config_error(make_config: MakeConfig) -> None:
    """A csv data set needs a target column or a target file."""
    with pytest.raises(ConfigError, match=r"dataset\.target"):
        make_config("dataset=csv", "dataset.path=table.csv")


def test_unknown_hyperparameter_added_with_plus_raises_config_error(make_config: MakeConfig) -> None:
    """Adding an unknown name to the space the usual Hydra way is reported as a `ConfigError`."""
    with pytest.raises(ConfigError, match=r"search\.coarse\.space\.foo"):
        make_config("+search.coarse.space.foo={type:int,low:1,high:2}")


def test_valid_hyperparameter_can_be_added_with_plus(make_config: MakeConfig) -> None:
    """`+search.coarse.space.epochs={...}` adds `epochs` to the coarse space."""
    config = make_config("+search.coarse.space.epochs={type:int,low:5,high:50}")
    assert config.coarse_space()["epochs"] == Param("epochs", "int", 5.0, 50.0, False)


@pytest.mark.parametrize("override", ["search.coarse.space.units.high=inf", "search.coarse.space.layers.low=nan"])
def test_non_finite_int_bound_raises_config_error(make_config: MakeConfig, override: str) -> None:
    """A non-finite bound on an int range is a user mistake, reported as a `ConfigError`."""
    with pytest.raises(ConfigError, match=r"search\.coarse\.space\.(units|layers)"):
        make_config(override)


@pytest.mark.parametrize("override", ["search.coarse.space.dropout.high=inf", "search.coarse.space.l2.low=nan"])
def test_non_finite_float_bound_raises_config_error(make_config: MakeConfig, override: str) -> None:
    """A non-finite bound on a float range is rejected with a `ConfigError`."""
    with pytest.raises(ConfigError, match=r"search\.coarse\.space\.(dropout|l2)"):
        make_config(override)


def test_message_grammar(make_config: MakeConfig) -> None:
    """The allowed-values phrase reads as a sentence: 'a float', not 'an float'."""
    with pytest.raises(ConfigError) as info:
        make_config("model.dropout=1.5")
    assert "must be a float" in str(info.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("dataset=nope_group", ["dataset/nope_group", "digits"]),
        ("search.coarse.n_itr=3", ["search.coarse.n_itr"]),
        ("search.coarse.n_iter=abc", ["search.coarse.n_iter"]),
        ("model.units=1.5", ["model.units"]),
    ],
)
def test_hydra_level_failure_names_key(make_config: MakeConfig, override: str, expected: list[str]) -> None:
    """Unknown group options, unknown keys and wrong types fail at composition, naming the culprit."""
    with pytest.raises(Exception) as info:
        make_config(override)
    assert not isinstance(info.value, ConfigError)
    text = str(info.value) + " " + str(info.value.__cause__ or "")
    for part in expected:
        assert part in text, f"{part!r} not in {text!r}"


# --- property: numeric ranges set through overrides ------------------------------------------

_KEYS = {"units": "int", "dropout": "float", "learning_rate": "float"}
_bound = st.one_of(
    st.integers(min_value=-5, max_value=2000).map(float),
    st.floats(min_value=-2.0, max_value=2.0, allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-8, max_value=1e-1),
)


@settings(
    max_examples=25,
    deadline=None,  # Hydra composition takes ~0.1 s
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(name=st.sampled_from(sorted(_KEYS)), low=_bound, high=_bound, log=st.booleans())
def test_numeric_range_override_round_trips_or_fails_cleanly(
    make_config: MakeConfig, name: str, low: float, high: float, log: bool
) -> None:
    """A range either composes into a `Param` with the same bounds or fails with a `ConfigError` naming it."""
    key = f"search.coarse.space.{name}"
    overrides = [f"{key}.low={low!r}", f"{key}.high={high!r}", f"{key}.log={str(log).lower()}"]
    try:
        config = make_config(*overrides)
    except ConfigError as exc:
        assert key in str(exc)
        event("rejected with ConfigError")
        return
    event("composed")
    param = config.coarse_space()[name]
    assert param.kind == _KEYS[name]
    assert (param.low, param.high, param.log) == (low, high, log)
    assert param.low <= param.high
    assert not log or param.low > 0
    if param.kind == "int":
        assert param.low == math.floor(param.low) and param.high == math.floor(param.high)
