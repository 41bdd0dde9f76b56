"""Canaries for the private parts of third-party packages searchlab relies on, where no public API exists.

Each entry names the private thing, where searchlab uses it and why. An upgrade that moves or renames one
fails here, loudly and by name, instead of deep inside a search.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest


def _resolve(dotted: str) -> Any:
    """`package.module:attr.attr` -> the object."""
    module, _, attrs = dotted.partition(":")
    found: Any = importlib.import_module(module)
    for attr in attrs.split(".") if attrs else ():
        found = getattr(found, attr)
    return found


# (private name, used in, why no public API)
PRIVATE = [
    ("keras_tuner.src.config:DEBUG", "searchlab.fine", "the only switch for KerasTuner's traceback per failed trial"),
    ("keras_tuner.src.distribute.oracle_chief:OracleServicer", "searchlab.infra.tuner_workers",
     "KerasTuner serves an oracle only from its own blocking chief loop"),
    ("keras_tuner.src.distribute.oracle_chief:exit_chief", "searchlab.infra.tuner_workers", "same"),
    ("keras_tuner.src.protos:get_service_grpc", "searchlab.infra.tuner_workers", "KerasTuner's gRPC service"),
    ("keras_tuner.oracles:GridSearchOracle._get_next_combination", "searchlab.fine",
     "the grid's own next point, handed out before running trials end"),
    ("keras_tuner.src.engine.oracle:LOCKS", "searchlab.fine",
     "each oracle's lock, released when a synchronized method raised (KerasTuner keeps it)"),
    ("keras_tuner.src.engine.oracle:THREADS", "searchlab.fine", "the thread holding it"),
    ("joblib._dask:DaskDistributedBackend.start_call", "searchlab.infra.dask_cluster",
     "joblib's Dask backend class, subclassed to send each fit its own arguments"),
    ("joblib._dask:DaskDistributedBackend.stop_call", "searchlab.infra.dask_cluster", "same"),
    ("scikeras.wrappers:BaseWrapper._build_keras_model", "searchlab.coarse", "a fresh Keras session per fit"),
    ("scikeras.wrappers:BaseWrapper._fit_keras_model", "searchlab.coarse", "fit through a tf.data pipeline"),
    ("scikeras.wrappers:BaseWrapper._predict_raw", "searchlab.coarse", "predictions without tracing a graph"),
]


@pytest.mark.parametrize(("name", "user", "why"), PRIVATE, ids=[p[0] for p in PRIVATE])
def test_private_name_still_there(name: str, user: str, why: str) -> None:
    try:
        _resolve(name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{name} is gone ({exc}); {user} relies on it: {why}")


def test_signatures_searchlab_overrides_or_calls() -> None:
    from joblib._dask import DaskDistributedBackend
    from keras_tuner.oracles import GridSearchOracle
    from scikeras.wrappers import BaseWrapper

    fit = inspect.signature(BaseWrapper._fit_keras_model).parameters
    assert list(fit)[:7] == ["self", "X", "y", "sample_weight", "warm_start", "epochs", "initial_epoch"]
    assert list(inspect.signature(GridSearchOracle._get_next_combination).parameters) == ["self", "values"]
    # attributes searchlab reads or sets on them
    wrapper_source = inspect.getsource(BaseWrapper)
    assert "self._random_state" in wrapper_source and "self._fit_callbacks" in wrapper_source
    raw = inspect.getsource(BaseWrapper._predict_raw)  # what searchlab's override does before predicting
    assert "self._validate_data(X=X, y=None)" in raw and "self.feature_encoder_.transform(X)" in raw
    assert "call_data_futures" in inspect.getsource(DaskDistributedBackend)
    from keras_tuner.src.distribute import oracle_chief

    assert "stop_triggered" in inspect.getsource(oracle_chief.OracleServicer)


def test_hooks_searchlab_overrides_are_still_called() -> None:
    """Overridden methods that scikit-learn and KerasTuner document as subclass hooks."""
    from keras_tuner.engine.base_tuner import BaseTuner
    from sklearn.model_selection._search import BaseSearchCV

    assert "_run_search" in inspect.getsource(BaseSearchCV.fit)
    assert "pre_create_trial" in inspect.getsource(BaseTuner.search)
    for hook in ("on_trial_begin", "on_trial_end", "run_trial"):
        assert hasattr(BaseTuner, hook)


def test_loky_keeps_its_reusable_executor_where_searchlab_reads_it() -> None:
    """`searchlab.coarse.end_fit_workers` reads joblib's executor from `loky.reusable_executor._executor`."""
    from joblib import Parallel, delayed
    from joblib.externals.loky import reusable_executor

    Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(4))
    executor = reusable_executor._executor
    assert executor is not None and not executor._flags.shutdown
    executor.shutdown(wait=True)
    assert executor._flags.shutdown
