"""Feature scaling: the NumPy transform the search trains on and the Keras layers the exported model
computes are the same function, the exported model survives a store round trip, and a search can choose
the scaling like any other hyperparameter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from searchlab import registry
from searchlab.coarse import make_estimator, param_key, run_coarse
from searchlab.config import Config
from searchlab.context import SearchContext
from searchlab.data import load_dataset
from searchlab.final import RefitSchedule, refit_and_test
from searchlab.fine import run_fine
from searchlab.metrics import scoring_for
from searchlab.model import Scalers, build_model, fit_model
from searchlab.narrow import FineSpace
from searchlab.scaling import PiecewiseLinear, QuantileNormal, Scaler, Standardize
from searchlab.space import SCALINGS, Param
from searchlab.tracking import Tracker
from tests.conftest import stage_inputs


def _awkward_features(rows: int, seed: int) -> np.ndarray:
    """Heavy tails, a huge offset, a binary column, a constant column, ties."""
    rng = np.random.default_rng(seed)
    return np.column_stack([
        rng.lognormal(0.0, 2.0, rows),
        1e4 + rng.normal(0.0, 1.0, rows),  # float32 inputs: an offset, not beyond their precision
        rng.integers(0, 2, rows),
        np.full(rows, 7.0),
        rng.integers(0, 5, rows) * 3.5,
        rng.standard_t(1.5, rows),
    ])


def _through_layers(scaler: Scaler, X: np.ndarray) -> np.ndarray:
    inputs = keras.Input((X.shape[1],))
    x = inputs
    for layer in scaler.keras_layers():
        x = layer(x)
    return np.asarray(keras.Model(inputs, x).predict(X.astype("float32"), verbose=0))


@pytest.mark.parametrize("scaler", [Standardize(), QuantileNormal(), PiecewiseLinear()],
                         ids=["standard", "quantile", "piecewise"])
def test_keras_layers_compute_the_transform(scaler: Scaler) -> None:
    train, new = _awkward_features(2000, 0), _awkward_features(500, 1)
    new[:5] *= 100.0  # far outside the training range
    scaler.fit(train)
    expected = scaler.transform(new.astype("float32"))  # what the exported model is given
    np.testing.assert_allclose(_through_layers(scaler, new), expected, atol=2e-3, rtol=1e-3)


def test_quantile_normal_shape_of_the_map() -> None:
    train = _awkward_features(2000, 0)
    scaled = QuantileNormal().fit(train).transform(train)
    assert np.all(np.isfinite(scaled))
    heavy = scaled[:, 0]
    assert abs(np.median(heavy)) < 0.05 and 0.9 < heavy.std() < 1.1  # lognormal(0, 2) made ~standard normal
    assert heavy.min() == pytest.approx(-3.09, abs=0.01) and heavy.max() == pytest.approx(3.09, abs=0.01)
    order = np.argsort(train[:, 0])
    assert np.all(np.diff(heavy[order]) >= 0)  # monotone
    assert np.all(scaled[:, 3] == 0.0)  # constant column
    assert len(np.unique(scaled[:, 2])) == 2  # a binary column stays two values
    outside = QuantileNormal().fit(train).transform(np.array([[1e9, 2e4, 5, 7, 1e3, 1e9]]))
    assert outside[0, 0] == pytest.approx(3.09, abs=0.01)  # constant beyond the training range


def test_piecewise_linear_encoding() -> None:
    train = _awkward_features(2000, 0)
    encoder = PiecewiseLinear(n_bins=8).fit(train)
    encoded = encoder.transform(train)
    widths = [len(e) - 1 for e in encoder.edges_]
    assert widths[0] == widths[1] == widths[5] == 8  # continuous features: every bin
    assert widths[2] == 1 and widths[3] == 1  # binary: one step; constant: one bin
    assert encoded.shape == (2000, 6 * 8)  # every feature padded to the widest's bins
    binary, constant = encoded[:, 16:24], encoded[:, 24:32]
    assert set(np.unique(binary[:, 0])) == {0.0, 1.0} and np.all(binary[:, 1:] == 0.0)
    assert np.all(constant == 0.0)
    first = encoded[:, :8]
    assert np.all((first >= 0.0) & (first <= 1.0))
    order = np.argsort(train[:, 0])
    assert np.all(np.diff(first[order].sum(axis=1)) >= 0)  # the bins add up to a monotone code of the value
    assert np.allclose(np.bincount(np.argmax(first < 1.0, axis=1), minlength=8)[1:], 250, atol=2)  # ~equal bins
    outside = encoder.transform(np.array([[1e9, 2e4, 5, 7, 1e3, 1e9], [-1e9, 0, -5, 7, -1e3, -1e9]]))
    assert np.all(outside[0, :8] == 1.0) and np.all(outside[1, :8] == 0.0)  # clipped beyond the training range


def test_wrapped_model_takes_raw_features() -> None:
    """`Scalers.wrap` puts the quantile layers in front of the network: raw rows in, the same outputs as the
    network on the scaled rows."""
    X = _awkward_features(400, 0)
    y = (X[:, 0] > 1.0).astype(int)
    scalers = Scalers.fit(X, y, "binary", "quantile")
    Xs, _ = scalers.transform(X, y)
    inputs = keras.Input((X.shape[1],))
    net = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    np.testing.assert_allclose(scalers.wrap(net).predict(X.astype("float32"), verbose=0),
                               net.predict(Xs, verbose=0), atol=1e-3)


@pytest.mark.parametrize("scaling", ["quantile", "piecewise"])
def test_exported_model_scales_raw_features_after_a_store_round_trip(store_uri: str, scaling: str) -> None:
    """A net trained on scaled features, wrapped and logged to a real store, loads back (custom scaling layers
    included) and predicts from raw rows what the trained net predicts from the scaled ones."""
    X = _awkward_features(400, 0).astype("float32")
    y = (X[:, 0] > 1.0).astype(int)
    scalers = Scalers.fit(X, y, "binary", scaling)
    Xs, ys = scalers.transform(X, y)
    net = build_model(n_features=Xs.shape[1], task="binary", units=8, layers=1)
    fit_model(net, Xs, ys, batch_size=64, epochs=2, seed=0)
    tracker = Tracker(store_uri, "searchlab")
    run_id = tracker.start_run("export", {})
    model_uri = registry.log_model(tracker, run_id, scalers.wrap(net), X[:5])
    mlflow.set_tracking_uri(store_uri)
    loaded = mlflow.keras.load_model(model_uri)
    assert any(layer.name.startswith(scaling) for layer in loaded.layers)
    np.testing.assert_allclose(np.asarray(loaded.predict(X, verbose=0)), np.asarray(net.predict(Xs, verbose=0)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_coarse_estimator_scales_as_its_scaling_parameter_says(make_config: Callable[..., Config], task: str) -> None:
    """`param_key(data, "scaling")` reaches the pipeline's scaling step, inside the target scaling too."""
    config = make_config("dataset=synthetic", f"dataset.generator={task}", "dataset.n_samples=120", "model.epochs=1")
    data = load_dataset(config.dataset, config.seed)
    estimator = make_estimator(SearchContext(data, scoring_for(data.task, None), config.model, config.seed))
    estimator.set_params(**{param_key(data, "scaling"): "quantile"}).fit(data.X_train, data.y_train)
    pipeline_ = estimator.regressor_ if task == "regression" else estimator
    assert isinstance(pipeline_.named_steps["scale"].scaler_, QuantileNormal)


def test_searched_scaling_trains_every_kind(tmp_path: Path) -> None:
    """With `scaling` searched, coarse candidates and fine trials train with every kind (piecewise widens the
    network's input), and the final model scales its raw inputs as its `scaling` says."""
    config, ctx = stage_inputs("dataset.generator=moons", "search.coarse.n_iter=3", "search.coarse.n_jobs=1",
                               "model.epochs=2")
    space = {"scaling": Param("scaling", "choice", values=SCALINGS), "units": Param("units", "int", 8.0, 16.0)}
    coarse = run_coarse(ctx, space, config.search.coarse)
    assert {t.params["scaling"] for t in coarse.trials if t.ok} == set(SCALINGS)
    fine = run_fine(ctx, FineSpace({"scaling": space["scaling"]}, {}, (), 6, 3, 0), coarse.best.params,
                    config.search.fine, workdir=tmp_path)
    assert {t.params["scaling"] for t in fine.trials if t.ok} == set(SCALINGS)
    final = refit_and_test(ctx, {**ctx.defaults, "scaling": "piecewise", "units": 8}, RefitSchedule(2))
    assert any(layer.name.startswith("piecewise") for layer in final.model.layers)
    assert not any(layer.name.startswith("quantile") for layer in final.model.layers)
