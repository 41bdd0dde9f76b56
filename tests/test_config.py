"""Config validation through real Hydra composition of `conf/`."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from searchlab.config import (
    CONF_DIR,
    DATASET_SCHEMAS,
    Backend,
    Config,
    CsvConfig,
    DatasetName,
    DigitsConfig,
    FineKind,
    ImdbConfig,
    Interval,
    SyntheticConfig,
    SyntheticGenerator,
    Task,
    compose,
    config_from_yaml,
)
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
    # no coarse cap by default (one rung); a cap gives a second rung (the better half up to model.epochs); never a
    # fit beyond model.epochs
    assert default.search.coarse.epochs_per_fit(default.model.epochs) == default.model.epochs == 200
    assert default.search.coarse.n_promoted(default.model.epochs) == 0  # nothing to promote
    capped = make_config("search.coarse.epochs=30").search.coarse
    assert capped.epochs_per_fit(200) == 30 and capped.n_promoted(200) == 10
    assert capped.n_promoted(30) == 0  # a cap at model.epochs: one rung
    smoke = make_config("experiment=smoke", "search.coarse.epochs=30").search.coarse
    assert smoke.epochs_per_fit(8) == 8 and smoke.n_promoted(8) == 0
    assert make_config("search.coarse.epochs=30", "search.coarse.promote=0.34").search.coarse.n_promoted(200) == 7
    assert make_config("search.coarse.epochs=30", "search.coarse.promote=0").search.coarse.n_promoted(200) == 0


def test_half_experiment_keeps_the_candidates_and_halves_their_training(make_config: MakeConfig) -> None:
    """`experiment=half`: as many coarse candidates as the default, capped, the best 7 promoted, a smaller grid."""
    default, half = make_config(), make_config("experiment=half")
    assert half.search.coarse.n_iter == default.search.coarse.n_iter and half.model == default.model
    assert half.search.coarse.epochs_per_fit(half.model.epochs) == 30 < half.model.epochs
    assert half.search.coarse.n_promoted(half.model.epochs) == 7
    assert half.search.fine.max_params == default.search.fine.max_params - 1


@pytest.mark.parametrize(("preset", "dataset", "space"), [
    ("mnist", DatasetName.mnist, {"layers": Param("layers", "int", 1, 3), "units": Param("units", "int", 32, 512, True),
                                  "dropout": Param("dropout", "float", 0.0, 0.5),
                                  "learning_rate": Param("learning_rate", "float", 1e-4, 1e-2, True)}),
    ("imdb", DatasetName.imdb, {"units": Param("units", "int", 8, 64, True), "layers": Param("layers", "int", 1, 3),
                                "dropout": Param("dropout", "float", 0.0, 0.6), "l2": Param("l2", "float", 1e-4, 1e-2, True),
                                "learning_rate": Param("learning_rate", "float", 1e-4, 1e-2, True)}),
])
def test_tutorial_presets_search_exactly_their_space(make_config: MakeConfig, preset: str, dataset: DatasetName,
                                                     space: dict[str, Param]) -> None:
    """`experiment=mnist|imdb`: the tutorial's data set and exactly its space (nothing of random.yaml's added), the
    coarse stage's other settings as in random.yaml. Composing downloads nothing."""
    config, default = make_config(f"experiment={preset}"), make_config()
    assert config.dataset.name == dataset
    assert config.coarse_space() == space
    fields = ("cv", "scoring", "n_jobs", "random_state")
    assert [getattr(config.search.coarse, f) for f in fields] == [getattr(default.search.coarse, f) for f in fields]
    if preset == "imdb":
        assert isinstance(config.dataset, ImdbConfig) and config.dataset.num_words == 10000
        assert config.model.l2 > 0 and config.model.dropout > 0  # the book's regularized network as the defaults
    assert make_config(f"experiment={preset}", "search.coarse.n_iter=3").search.coarse.n_iter == 3


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
        ("search.fine.points=1", ["search.fine.points", "1", ">= 2"]),
        ("search.fine.n_jobs=0", ["search.fine.n_jobs", "0", "positive", "-1"]),
        ("search.coarse.n_jobs=-2", ["search.coarse.n_jobs", "-2", "positive", "-1"]),
        ("dataset.test_size=0", ["dataset.test_size", "0", "> 0", "< 1"]),
        ("dataset.test_size=1", ["dataset.test_size", "1", "> 0", "< 1"]),
        ("dataset=csv", ["dataset.path", "None", "CSV"]),
        ("++search.coarse.space={foo:{type:int,low:1,high:2}}", ["search.coarse.space.foo", "'foo'", "units", "learning_rate"]),
        ("search.coarse.paired.scaling=[standard]", ["search.coarse.paired.scaling", "['standard']", "two or more",
                                                     "piecewise", "null"]),
        ("search.coarse.paired.activation=[relu,relu]", ["search.coarse.paired.activation", "two or more different"]),
        ("search.coarse.paired.activation=[relu,swishy]", ["search.coarse.paired.activation", "'swishy'", "elu"]),
        ("+search.coarse.paired.units=[16,32]", ["search.coarse.paired.units", "'units'", "choice", "scaling"]),
        ("+search.coarse.space.activation={type:choice,values:[relu,elu]}",
         ["search.coarse.paired.activation", "both sampled", "~search.coarse.space.activation",
          "search.coarse.paired.activation=null"]),
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
    """`+search.coarse.space.scaling={...}` adds `scaling` to the coarse space (sampled, so no longer compared on
    the coarse winner)."""
    config = make_config("+search.coarse.space.scaling={type:choice,values:[standard,piecewise]}",
                         "search.coarse.paired.scaling=null")
    assert config.coarse_space()["scaling"] == Param("scaling", "choice", values=("standard", "piecewise"))
    assert list(config.paired_choices()) == ["activation"]


def test_epochs_is_not_searched(make_config: MakeConfig) -> None:
    """Every stage lets early stopping choose a fit's epochs: a searched `epochs` would bind the coarse winner
    only, so the space refuses it and says what to set instead."""
    with pytest.raises(ConfigError, match=r"^search\.coarse\.space\.epochs: .*model\.epochs .*model\.patience"):
        make_config("+search.coarse.space.epochs={type:int,low:5,high:50}")


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


# --- choices as enums, rejected at composition ------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["search/fine=grid", "search.fine.kind=foo"], ["search.fine.kind", "'foo'", "grid, hyperband"]),
        (["dataset.task=foo"], ["dataset.task", "'foo'", "auto, binary, multiclass, regression"]),
        (["dataset.name=nope"], ["dataset.name", "'nope'", "digits, csv, synthetic, mnist, imdb"]),
        (["dataset=synthetic", "dataset.generator=spirals"], ["dataset.generator", "'spirals'", "moons, circles"]),
        (["search.backend=ray"], ["search.backend", "'ray'", "local, dask"]),
    ],
)
def test_bad_choice_fails_at_composition_naming_key_and_choices(overrides: list[str], expected: list[str]) -> None:
    """A value outside an enum is refused by Hydra (as the CLI prints it), naming the key and the allowed values."""
    with pytest.raises(Exception) as info:
        compose(*overrides)
    assert not isinstance(info.value, ConfigError)
    text = str(info.value) + " " + str(info.value.__cause__ or "")
    for part in expected:
        assert part in text, f"{part!r} not in {text!r}"


def test_choices_are_str_enums() -> None:
    """Composed choices are enum members that still behave as their string value."""
    config = compose("search/fine=hyperband", "dataset=synthetic", "dataset.generator=moons", "search.backend=dask")
    assert config.search.fine.kind is FineKind.hyperband and config.search.fine.kind == "hyperband"
    assert config.search.backend is Backend.dask
    assert config.dataset.task is Task.auto
    assert isinstance(config.dataset, SyntheticConfig) and config.dataset.generator is SyntheticGenerator.moons
    for member in (config.search.fine.kind, config.dataset.name, config.dataset.generator):
        assert isinstance(member, str) and f"{member}" == str(member) == member.value


# --- one schema per data set ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["dataset=digits", "dataset.num_words=5"], "dataset.num_words"),
        (["dataset=csv", "dataset.generator=moons"], "dataset.generator"),
        (["dataset=mnist", "dataset.num_words=5"], "dataset.num_words"),
        (["dataset=imdb", "dataset.path=x.csv"], "dataset.path"),
    ],
)
def test_other_data_sets_key_fails_at_composition(overrides: list[str], key: str) -> None:
    """A key of another data set's schema is unknown here, and Hydra says which."""
    with pytest.raises(Exception) as info:
        compose(*overrides)
    assert not isinstance(info.value, ConfigError)
    text = str(info.value) + " " + str(info.value.__cause__ or "")
    assert key in text, text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+dataset.max_rows=100", "dataset.max_rows must be removed: dataset has no such key (its keys: name, task, test_size), got 100."),
        ("+model.foo=1", "model.foo must be removed: model has no such key"),
        ("+extra=1", "extra must be removed: the config has no such key"),
    ],
)
def test_key_added_with_plus_outside_any_schema_raises_config_error(override: str, message: str) -> None:
    """`+key=value` gets past Hydra's struct check; a key no schema holds is refused rather than ignored."""
    with pytest.raises(ConfigError) as info:
        compose(override)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("name", list(DatasetName))
def test_each_data_set_composes_into_its_schema(name: DatasetName) -> None:
    """`dataset=<name>` gives that data set's dataclass (kept by `to_object`), with only its own fields."""
    extra = ["dataset.path=t.csv", "dataset.target=y"] if name is DatasetName.csv else []
    config = compose(f"dataset={name}", *extra)
    assert type(config.dataset) is DATASET_SCHEMAS[name]
    assert config.dataset.name is name
    logged = dataclasses.asdict(config)["dataset"]
    assert set(logged) == {f.name for f in dataclasses.fields(DATASET_SCHEMAS[name])}
    if name is not DatasetName.synthetic:
        assert "generator" not in logged
    if name is not DatasetName.imdb:
        assert "num_words" not in logged


@pytest.mark.parametrize(
    "overrides",
    [(), ("dataset=imdb", "dataset.num_words=50", "search/fine=hyperband"),
     ("dataset=csv", "dataset.path=t.csv", "dataset.target_path=y.csv", "dataset.task=regression")],
)
def test_logged_config_yaml_round_trips(overrides: tuple[str, ...]) -> None:
    """`config_from_yaml` rebuilds the same `Config`, data set subclass included, from the logged YAML."""
    config = compose(*overrides)
    text = OmegaConf.to_yaml(OmegaConf.create(dataclasses.asdict(config)))
    again = config_from_yaml(text)
    assert again == config and type(again.dataset) is type(config.dataset)


def test_config_yaml_from_before_per_data_set_schemas_still_loads() -> None:
    """Logs written when one schema held every loader's fields resume: the other data sets' keys are dropped."""
    text = OmegaConf.to_yaml(OmegaConf.create(dataclasses.asdict(compose())))
    old = OmegaConf.create(text)
    old.dataset.update({"path": None, "generator": "classification", "num_words": 1000, "max_rows": None})
    config = config_from_yaml(OmegaConf.to_yaml(old))
    assert config.dataset == DigitsConfig()


def test_config_yaml_with_unknown_data_set_raises_config_error() -> None:
    """A logged config naming no known data set is reported like any other bad value."""
    with pytest.raises(ConfigError, match=r"dataset\.name must be one of digits, .*got 'nope'"):
        config_from_yaml("dataset:\n  name: nope\n")


def test_dataset_name_must_match_its_schema() -> None:
    """`dataset.name` cannot switch data sets behind the schema's back; `dataset=<name>` does that."""
    with pytest.raises(ConfigError, match=r"dataset\.name must be digits with dataset=digits.*got 'csv'"):
        compose("dataset.name=csv")


# --- declared limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["search.coarse.n_iter=0"], "search.coarse.n_iter must be >= 1, got 0."),
        (["verbose=3"], "verbose must be >= 0 and <= 2, got 3."),
        (["dataset.test_size=1.0"], "dataset.test_size must be > 0 and < 1, got 1.0."),
        (["search.fine.top_fraction=0"], "search.fine.top_fraction must be > 0 and <= 1, got 0.0."),
        (["dataset=imdb", "dataset.num_words=5"], "dataset.num_words must be >= 10, got 5."),
        (["dataset=mnist", "dataset.max_rows=3"], "dataset.max_rows must be >= 20, got 3."),
        (["dataset=synthetic", "dataset.noise=-1"], "dataset.noise must be >= 0, got -1.0."),
        (["search.dask.n_workers=0"], "search.dask.n_workers must be >= 1, got 0."),
    ],
)
def test_range_message(overrides: list[str], message: str) -> None:
    """A declared limit fails with exactly: dotted key, what is allowed, the value."""
    with pytest.raises(ConfigError) as info:
        compose(*overrides)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("interval", "inside", "outside", "text"),
    [
        (Interval(1), [1, 10**9], [0, -1], ">= 1"),
        (Interval(0.0, 1.0, "neither"), [1e-9, 0.5], [0.0, 1.0], "> 0 and < 1"),
        (Interval(0.0, 0.5, "right"), [0.5, 0.1], [0.0, 0.6], "> 0 and <= 0.5"),
        (Interval(0, 2, "both"), [0, 2], [-1, 3], ">= 0 and <= 2"),
        (Interval(high=5), [-100, 4.9], [5], "< 5"),
    ],
)
def test_interval(interval: Interval, inside: list[float], outside: list[float], text: str) -> None:
    """`Interval` includes the ends `closed` names and describes itself as the messages need."""
    assert all(v in interval for v in inside)
    assert not any(v in interval for v in outside)
    assert str(interval) == text


def test_every_limit_is_declared_on_a_field() -> None:
    """Limits live in field metadata, read by one loop: each is an `Interval` its default satisfies."""
    schemas = [Config, *DATASET_SCHEMAS.values(), *(type(getattr(compose().search, n)) for n in ("coarse", "fine", "dask"))]
    limited = 0
    for schema in schemas:
        for spec in dataclasses.fields(schema):
            if "range" in spec.metadata:
                limited += 1
                assert isinstance(spec.metadata["range"], Interval)
                assert spec.default is None or spec.default in spec.metadata["range"], (schema, spec.name)
    assert limited >= 20


def test_csv_config_needs_a_target_even_built_in_python() -> None:
    """The cross-field rules run on a `Config` built directly, not only after composition."""
    base = compose()
    with pytest.raises(ConfigError, match=r"dataset\.target"):
        dataclasses.replace(base, dataset=CsvConfig(path="t.csv"))
    assert dataclasses.replace(base, dataset=ImdbConfig(num_words=20)).dataset.num_words == 20


# --- compose() --------------------------------------------------------------------------------


def test_compose_twice_leaves_hydra_uninitialized() -> None:
    """`compose` can be called again and again; Hydra's global state is left clear for a later @hydra.main."""
    first = compose("experiment=smoke")
    second = compose("search.coarse.n_iter=7")
    assert first.search.coarse.n_iter == 4 and second.search.coarse.n_iter == 7
    assert not GlobalHydra.instance().is_initialized()


def test_compose_inside_an_initialized_hydra_restores_it() -> None:
    """Called while Hydra is initialized (as inside a @hydra.main job), `compose` works and puts that state back."""
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        outer = GlobalHydra.instance().hydra
        assert compose("seed=3").seed == 3
        assert GlobalHydra.instance().hydra is outer
    assert not GlobalHydra.instance().is_initialized()


def test_compose_from_another_directory_and_no_heavy_imports(tmp_path: Path) -> None:
    """The shipped conf/ is found from any working directory; config and data load neither TensorFlow nor MLflow."""
    code = ("import sys, searchlab.config as c, searchlab.data\n"
            "heavy = sorted(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules)\n"
            "assert not heavy, heavy\n"
            "print(c.compose('experiment=smoke').search.coarse.n_iter)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4"


def test_conf_is_inside_the_package() -> None:
    """`CONF_DIR` sits in the package (a symlink to the top-level conf/ in a checkout)."""
    assert CONF_DIR.parent == Path(__file__).resolve().parents[1] / "searchlab"
    assert (CONF_DIR / "config.yaml").is_file()
    assert {p.stem for p in (CONF_DIR / "dataset").glob("*.yaml")} == {n.value for n in DatasetName}


def test_built_wheel_ships_every_conf_file(tmp_path: Path) -> None:
    """A non-editable wheel holds every YAML file of conf/ under searchlab/conf (the symlink is followed)."""
    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    shutil.copytree(root / "conf", source / "conf")
    shutil.copytree(root / "searchlab", source / "searchlab", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert (source / "searchlab" / "conf").is_symlink()
    # offline and in a copy: the venv's setuptools, nothing written to the checkout
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("searchlab-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".yaml")}
    expected = {"searchlab/conf/" + p.relative_to(root / "conf").as_posix() for p in (root / "conf").rglob("*.yaml")}
    assert shipped == expected
    packages = {p.relative_to(root).as_posix() for p in (root / "searchlab").rglob("__init__.py")}
    assert packages <= set(zipfile.ZipFile(wheel).namelist())  # subpackages are found, not listed
