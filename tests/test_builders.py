"""Your own model builder (`model=custom model.builder=module:function`): resolved by a real import path, checked
before any run opens, and building compiled networks the stages train like the built-in MLP's."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from searchlab import pipeline
from searchlab.builders import Builder, load_builder, searched_space
from searchlab.config import compose
from searchlab.data import Dataset
from searchlab.errors import ConfigError
from searchlab.final import RefitSchedule, refit_and_test
from searchlab.space import BUILD_PARAMS, HYPERPARAMETERS, Param, parse_value
from tests.conftest import TINY, stage_inputs

RESIDUAL = "examples.residual_mlp:build_residual_mlp"


@pytest.fixture(scope="module")
def multiclass() -> Dataset:
    return stage_inputs("dataset.n_classes=3")[1].data


def _load(path: str, data: Dataset) -> Builder:
    return load_builder(compose("model=custom", f"model.builder={path}").model, data)


def test_the_example_takes_what_its_signature_names(multiclass: Dataset) -> None:
    builder = _load(RESIDUAL, multiclass)
    assert (builder.takes, builder.takes_any) == (("units", "dropout", "activation", "blocks"), False)
    assert builder.compiles and builder.search_path == (str(Path.cwd()),)
    assert [name for name in (*HYPERPARAMETERS, "blocks", "width") if builder.can_search(name)] == [
        "units", "dropout", "learning_rate", "optimizer", "activation", "batch_size", "epochs", "scaling", "blocks"]
    anything = _load("tests.custom_builders:takes_anything", multiclass)
    assert (anything.takes, anything.takes_any, anything.can_search("width")) == (BUILD_PARAMS, True, True)
    assert load_builder(compose().model, multiclass) == Builder()  # model=mlp


@pytest.mark.parametrize(("path", "message"), [
    ("no_such_module:build", "model.builder: no module 'no_such_module' in the working directory"),
    ("tests.custom_builders:nope", "model.builder: module 'tests.custom_builders' ("),
    ("__main__:build", "model.builder: '__main__:build' is defined in a script or notebook"),
    ("tests.custom_builders:returns_none", "returned NoneType, not a Keras model (keras.Model); end it with `return model`."),
    ("tests.custom_builders:lacks_n_outputs", "must take the keywords n_features, n_outputs, task; its signature"),
    ("tests.custom_builders:requires_depth", "requires depth, which searchlab may not pass (it passes n_features, n_outputs, task and the hyperparameters the search sets; the others keep the function's defaults): give them defaults."),
    ("tests.custom_builders:raises", "units=64) failed: ValueError: units must be even, got 64"),
    ("tests.custom_builders:one_output_always", "has shape (2, 1); a multiclass task needs a softmax unit per class"),
])
def test_a_builder_that_cannot_work_is_refused_with_the_problem_named(multiclass: Dataset, path: str,
                                                                       message: str) -> None:
    before = list(sys.path)
    with pytest.raises(ConfigError, match="model.builder") as info:
        _load(path, multiclass)
    assert message in str(info.value)
    assert sys.path == before


def test_only_a_custom_builder_has_hyperparameters_of_its_own() -> None:
    with pytest.raises(ConfigError, match=r"^search.coarse.space.blocks must be named after a hyperparameter: "
                                          r"units, .*; or, with model=custom, a keyword of your builder, got 'blocks'"):
        compose("+search.coarse.space.blocks={type:int,low:1,high:3}")
    with pytest.raises(ConfigError, match=r"or a keyword of your builder other than n_features, n_outputs, task, "
                                          r"got 'task'\.$"):
        compose("experiment=residual", "+search.coarse.space.task={type:choice,values:[a]}")
    space = compose("experiment=residual", "+search.coarse.space.width={type:float,low:0.5,high:2}").coarse_space()
    assert space["width"] == Param("width", "float", 0.5, 2.0)
    # a fine trial's values read back from MLflow's text (resume): the builder's own as numbers where they are
    assert [parse_value(name, text) for name, text in [("blocks", "3"), ("width", "0.5"), ("norm", "layer")]] == [
        3, 0.5, "layer"]


def test_model_custom_needs_an_import_path_and_model_mlp_none() -> None:
    with pytest.raises(ConfigError, match=r"^model.builder must be the import path .* got None\.$"):
        compose("model=custom")
    with pytest.raises(ConfigError, match=r"^model.builder must be null with model=mlp; choose model=custom"):
        compose(f"model.builder={RESIDUAL}")


def test_ranges_the_builder_cannot_take_are_dropped_when_shipped_and_refused_when_declared(
        multiclass: Dataset) -> None:
    config = compose("model=custom", f"model.builder={RESIDUAL}")
    builder = _load(RESIDUAL, multiclass)
    space, note = searched_space(builder, config.coarse_space(), config.search.coarse.space)
    assert set(config.coarse_space()) - set(space) == {"layers", "l1", "l2", "noise"}
    assert note == f"{RESIDUAL} takes units, dropout, activation, blocks; not searched: layers, l1, l2, noise."
    assert searched_space(Builder(), config.coarse_space(), config.search.coarse.space) == (config.coarse_space(), "")

    own = compose("experiment=residual")  # declares the builder's own `blocks`
    assert searched_space(builder, own.coarse_space(), own.search.coarse.space)[0]["blocks"] == Param(
        "blocks", "int", 1, 4)
    declared = compose("model=custom", f"model.builder={RESIDUAL}", "search.coarse.space.l2.high=0.1")
    with pytest.raises(ConfigError, match=r"^search.coarse.space.l2: .* does not take l2 \(its signature has no "
                                          r"`l2` keyword\); add .* '~search.coarse.space.l2'\.$"):
        searched_space(builder, declared.coarse_space(), declared.search.coarse.space)

    compiled = _load("tests.custom_builders:comes_compiled", multiclass)
    assert not compiled.compiles and not compiled.can_search("learning_rate")
    config = compose("experiment=smoke", "model=custom", "model.builder=tests.custom_builders:comes_compiled",
                     "search.coarse.space.learning_rate.low=0.001")
    with pytest.raises(ConfigError, match="comes compiled with its own optimizer"):
        searched_space(compiled, config.coarse_space(), config.search.coarse.space)


def test_a_bad_builder_stops_the_search_before_any_run_opens(tmp_path: Path) -> None:
    store_uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"  # not created beforehand
    config = compose(*TINY, "model=custom", "model.builder=tests.custom_builders:returns_none",
                     f"tracking.uri={store_uri}")
    with pytest.raises(ConfigError, match="not a Keras model"):
        pipeline.run(config)
    assert not Path(store_uri.removeprefix("sqlite:///")).exists()  # not even the store was created


def test_a_compiled_model_keeps_its_optimizer_and_loss_and_gets_the_searched_metrics(multiclass: Dataset) -> None:
    builder = _load("tests.custom_builders:comes_compiled", multiclass)
    model = builder.build(n_features=5, task="regression", units=4, learning_rate=0.3, optimizer="adam",
                          target_scale=2.0)
    assert isinstance(model.optimizer, keras.optimizers.SGD) and model.loss == "huber"
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 5)).astype("float32"), rng.normal(size=64).astype("float32")
    keras.utils.set_random_seed(0)  # seeded, as every fit in searchlab is: with op determinism on, an unseeded one fails
    history = model.fit(X, y, epochs=1, verbose=0, validation_data=(X, y))
    assert {"rmse", "mae", "r2", "val_rmse"} <= set(history.history)


def test_the_final_stage_refits_a_custom_regression_network_in_target_units() -> None:
    """The exported model wraps the user's network like the MLP: scaling in, target units out."""
    config, ctx = stage_inputs("dataset.generator=regression", "model=custom", f"model.builder={RESIDUAL}")
    builder = load_builder(config.model, ctx.data)
    ctx = type(ctx)(ctx.data, ctx.scoring, ctx.model, ctx.seed, ctx.verbose, builder)
    final = refit_and_test(ctx, {**ctx.defaults, "layers": 1, "units": 16}, RefitSchedule(3))
    assert "residual_mlp" in [layer.name for layer in final.model.layers]
    prediction = final.model.predict(ctx.data.X_test, verbose=0).ravel()
    assert np.std(prediction) > 0.05 * np.std(ctx.data.y_test)  # in target units, not standardized ones
    assert set(final.test_metrics) >= {"rmse", "mae", "r2"}
