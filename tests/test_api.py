"""`searchlab.search` from Python, as a notebook calls it: real conf, real Keras, a real SQLite store in tmp_path."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.datasets import make_classification

import searchlab
from searchlab.config import compose
from searchlab.data import dataset_from_arrays, load_dataset
from searchlab.errors import ConfigError, DataError
from searchlab.records import LEFT_OUT_TAG, RUN_TAG
from tests.conftest import TINY

#: TINY without its data set (X and y are given), shorter fits, one or two residual blocks (the example builder's own
#: hyperparameter) and one hyperparameter tuned in the fine stage.
OVERRIDES = [o for o in TINY if not o.startswith("dataset")] + [
    "model.epochs=5", "search.coarse.n_iter=3", "+search.coarse.space.blocks={type:int,low:1,high:2}",
    "search.fine.max_params=1"]


def test_tensorflow_loads_when_a_search_starts_not_at_import() -> None:
    code = ("import sys; heavy = lambda: sorted(m for m in ('tensorflow', 'keras', 'mlflow', 'hydra') if m in sys.modules); "
            "import searchlab; print(heavy()); searchlab.search; print(heavy())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(searchlab.__file__).parent.parent)})
    assert out.stdout.split("\n")[:2] == ["[]", "['hydra']"]


def test_x_and_y_are_split_and_checked_as_a_loaded_data_set_is() -> None:
    config = compose("dataset=synthetic", "dataset.n_samples=100", "dataset.n_classes=3")
    loaded = load_dataset(config.dataset, seed=4)
    X, y = make_classification(100, 20, n_informative=10, n_classes=3, flip_y=0.01, random_state=4)
    arrays = compose("dataset=arrays").dataset
    given = dataset_from_arrays(X, [f"class {v}" for v in y], arrays, seed=4)  # labels as text, as a CSV has them
    assert (given.name, given.task, given.class_names) == ("arrays", "multiclass", ("class 0", "class 1", "class 2"))
    assert np.array_equal(given.X_test, loaded.X_test) and np.array_equal(given.y_test, loaded.y_test)
    frame = dataset_from_arrays(pd.DataFrame(X[:, :2], columns=["a", "b"]), pd.Series(X[:, 2]), arrays, seed=4)
    assert (frame.task, frame.feature_names) == ("regression", ("a", "b"))
    with pytest.raises(DataError, match=r"^X must be a 2-D table of rows and features, got an array of shape \(100,\)\.$"):
        dataset_from_arrays(y, y, arrays, seed=4)
    with pytest.raises(DataError, match="dataset=arrays is the data a Python caller passes"):
        load_dataset(arrays, seed=4)


@pytest.mark.parametrize(("X", "y", "overrides", "error", "message"), [
    (np.zeros((4, 2)), None, [], ConfigError, "pass both X and y, or neither"),
    (np.zeros((4, 2)), np.zeros(4), ["dataset=digits"], ConfigError, "dataset=... chooses a data set to load"),
    (None, None, "experiment=smoke", TypeError, "overrides must be a list of strings, e.g. ['experiment=smoke']"),
])
def test_mistakes_in_the_call_are_named(X: object, y: object, overrides: list[str], error: type[Exception],
                                        message: str) -> None:
    with pytest.raises(error) as info:
        searchlab.search(X, y, overrides)
    assert message in str(info.value)


@pytest.mark.slow
def test_a_notebook_searches_its_own_network_on_its_own_data_after_an_interrupted_search(store_uri: str) -> None:
    """Ctrl-C in the first search ends its runs KILLED and leaves the interpreter usable: the second search, with
    the example residual builder on a DataFrame, runs to the end in the same process.

    The second search is also the suite's binary search with a Hyperband fine stage, searched on average
    precision with balanced class weights: a metric Keras lacks, watched by early stopping in every stage,
    reported first, with the minority class and the ROC/PR curves."""
    X, y = make_classification(200, 8, n_informative=4, random_state=0)
    frame, target = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)]), pd.Series(y, name="label")
    from tensorflow.python.framework import config as tf_config  # whether op determinism is on (a fit turns it on)

    left_as_it_was = lambda: (list(sys.argv), os.getcwd(), list(sys.path), logging.getLogger("mlflow").level,  # noqa: E731
                              tf_config.is_op_determinism_enabled())
    before = left_as_it_was()
    with pytest.raises(KeyboardInterrupt, match=r"ended as KILLED\. Resume it with searchlab.search\(X, y, "):
        searchlab.search(X, y, [*OVERRIDES, f"tracking.uri={store_uri}", "model=custom",
                                "model.builder=tests.custom_builders:presses_ctrl_c"])
    assert left_as_it_was() == before
    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("searchlab").experiment_id
    interrupted = client.search_runs([experiment])
    assert interrupted and {run.info.status for run in interrupted} == {"KILLED"}

    found = searchlab.search(frame, target, [*OVERRIDES, f"tracking.uri={store_uri}", "model=custom",
                                             "model.builder=examples.residual_mlp:build_residual_mlp",
                                             "search/fine=hyperband", "search.fine.max_epochs=3", "search.fine.factor=3",
                                             "search.coarse.scoring=average_precision", "model.class_weight=balanced"])
    assert left_as_it_was() == before
    assert set(found.best_params) == {"units", "blocks", "dropout", "activation", "learning_rate", "optimizer",
                                      "batch_size", "epochs", "scaling"}  # layers, l1, l2, noise: it takes none
    assert found.best_params["blocks"] in (1, 2)
    assert list(found.test_metrics)[0] == "average_precision"
    assert set(found.test_metrics) == {"accuracy", "balanced_accuracy", "f1", "log_loss", "roc_auc",
                                       "average_precision"}
    assert found.test_metrics["roc_auc"] > 0.5
    result = found.result
    assert result.data.task == "binary"
    assert len(result.fine.trials) >= 2 and all(t.ok for t in result.fine.trials)
    assert all(set(t.tuned) == set(result.fine_space.tuned) for t in result.fine.trials)
    assert all("val_average_precision" in t.curves for t in (*result.coarse.trials, *result.fine.all_trials))
    assert "| **average_precision** (searched) |" in found.summary
    assert "class:** '" in found.summary  # the positive or minority class, with its recall and precision
    assert found.url.endswith(f"/runs/{found.run_id}") and found.run_id in repr(found)
    assert "residual_mlp" in [layer.name for layer in found.model.layers]
    probabilities = found.model.predict(X[:5], verbose=0)  # raw features in, probabilities out
    assert probabilities.shape == (5, 1) and np.all((probabilities >= 0) & (probabilities <= 1))

    run = client.get_run(found.run_id)
    assert run.info.status == "FINISHED" and run.data.params["dataset.name"] == "arrays"
    assert run.data.params["model.builder"] == "examples.residual_mlp:build_residual_mlp"
    assert run.data.tags[LEFT_OUT_TAG].endswith("not searched: layers, l1, l2, noise.")
    trials = client.search_runs([experiment], f"tags.`{RUN_TAG}` = 'trial' and tags.`mlflow.parentRunId` != ''")
    fine = [t for t in trials if t.data.tags.get("searchlab.stage") == "fine" and t.info.status == "FINISHED"]
    assert fine  # trained in the fine stage's worker process, which imported the builder by its path
    assert "plots/roc_pr_test.png" in {a.path for a in client.list_artifacts(found.run_id, "plots")}
