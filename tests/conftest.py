"""Shared fixtures: the real `conf/` composed with small overrides, MLflow stores in tmp_path, tiny stage inputs.

The heavy imports (MLflow, Keras through `searchlab.context`) are made where they are used: with `-n 2` the pytest
controller process loads this file too but runs no test, and importing TensorFlow there costs the two test
processes seconds of CPU while they start.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from searchlab.config import Config
    from searchlab.context import SearchContext

#: A whole search in seconds: 200 synthetic rows, the smoke budgets, coarse fits and fine trials in the search process
#: (no worker processes to start), no model artifact, and no trainings beyond the grid (edge rounds, revisits,
#: re-scoring): the smoke search in test_pipeline and tests/test_fine.py test those.
TINY = ("experiment=smoke", "dataset=synthetic", "dataset.n_samples=200", "search.coarse.n_jobs=1",
        "search.fine.trial_worker=false", "search.coarse.paired.scaling=null", "search.fine.beyond_edges=false",
        "search.fine.revisit=false", "search.fine.confirm_top=0", "tracking.log_model=false", "verbose=0")


@pytest.fixture
def make_config() -> Callable[..., Config]:
    """`searchlab.config.compose`: the project's real `conf/` composed with Hydra overrides, validated."""
    from searchlab.config import compose

    return compose


@functools.cache
def _empty_store() -> Path:
    """An MLflow SQLite store with its tables and nothing else, made once per test process.

    MLflow builds a new store's schema by running all its database migrations, seconds each time; a copy of this
    file is the same store in milliseconds. The smoke search (test_pipeline) and the concurrent-start test
    (test_tracking) still create theirs from nothing."""
    from mlflow import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="searchlab-empty-store-"))
    atexit.register(shutil.rmtree, folder, True)
    MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()  # creates the tables
    return folder / "mlflow.db"


def empty_store_uri(folder: Path) -> str:
    """The URI of a new, empty SQLite store `folder/mlflow.db` (a copy of `_empty_store`)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_empty_store(), folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    """A new SQLite MLflow store in tmp_path."""
    return empty_store_uri(tmp_path / "mlruns")


def require_system_package(available: bool, reason: str) -> None:
    """Skip a test whose Debian package is missing, except under CI (CI=true): `.ci/run` installs it there,
    so a broken install must fail rather than hide the test."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (.ci/run should have installed it)")
    pytest.skip(reason)


@dataclass(frozen=True)
class Store:
    """A SQLite MLflow store a test reads (or polls while a search writes to it)."""

    uri: str
    client: MlflowClient
    experiment_id: str

    def runs(self, query: str = "") -> list[Run]:
        return self.client.search_runs([self.experiment_id], query, max_results=1000)


def new_store(folder: Path) -> Store:
    """A SQLite store in `folder` with the experiment already created, so polling never races the schema set-up."""
    from searchlab.tracking import Tracker

    uri = empty_store_uri(folder)
    tracker = Tracker(uri, "searchlab")
    return Store(uri, tracker.client, tracker.experiment_id)


def grid_size(space: dict[str, Any], points: int) -> int:
    """Trials a grid fine stage runs over a fine stage's logged `space.json` (its tuned part)."""
    from searchlab.space import Param
    from searchlab.space import grid_size as space_grid_size

    params = {name: Param(name, spec["type"], spec.get("low", 0.0), spec.get("high", 0.0), spec.get("log", False),
                          tuple(spec.get("values", ()))) for name, spec in space["tuned"].items()}
    return space_grid_size(params, points)


def stage_inputs(*overrides: str) -> tuple[Config, SearchContext]:
    """A composed configuration (`TINY` plus `overrides`) and the stage context over its data set."""
    from searchlab.config import compose
    from searchlab.context import SearchContext
    from searchlab.data import load_dataset
    from searchlab.metrics import scoring_for

    config = compose(*TINY, *overrides)
    data = load_dataset(config.dataset, config.seed)
    scoring = scoring_for(data.task, config.search.coarse.scoring)
    return config, SearchContext(data, scoring, config.model, config.seed, config.verbose)
