"""Tracking details: registry champion, sweeps, the MLflow input-example trap, redaction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from searchlab import pipeline
from searchlab.config import Config
from searchlab.resume import TRIAL_ID_TAG, read_fine_trials
from searchlab.tracking import RUN_TAG, STAGE_TAG, Tracker, flatten, interrupts_held, redact

ROOT = Path(__file__).resolve().parents[1]
# These tests are about registry and sweep mechanics: two coarse candidates and a 2-trial grid will do.
FEW_TRIALS = ("search.coarse.n_iter=2", "search.fine.max_params=1")


def test_redact_hides_credentials() -> None:
    assert redact("postgresql://bob:secret@db:5432/mlflow") == "postgresql://***@db:5432/mlflow"
    assert redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}


def test_keras_input_example_trap_still_there(tmp_path: Path) -> None:
    """COMPAT.md: mlflow 3.17's Keras flavor fails with `input_example`; searchlab logs the example as an
    artifact instead. When this test fails, MLflow fixed it: pass `input_example=` in `Tracker.log_model`."""
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    x = np.zeros((2, 3), dtype="float32")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run(), pytest.raises(FileNotFoundError):
        mlflow.keras.log_model(model, name="m", input_example=x)


def test_logged_model_pins_what_trained_it(tmp_path: Path) -> None:
    """`Tracker.log_model` gives MLflow the requirements instead of letting it infer them (seconds in a
    subprocess): the model must still list the installed keras, numpy and TensorFlow and load as pyfunc."""
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "models")
    run_id = tracker.start_run("search", {RUN_TAG: "search"})
    uri = tracker.log_model(run_id, model, np.ones((4, 3)))
    requirements = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/best_model/requirements.txt",
                                                            tracking_uri=tracker.uri)).read_text().split()
    installed = {name: version(name) for name in ("keras", "numpy", "mlflow")}
    assert {f"{name}=={v}" for name, v in installed.items()} <= set(requirements)
    assert any(r.startswith(("tensorflow==", "tensorflow-cpu==")) for r in requirements), requirements
    mlflow.set_tracking_uri(tracker.uri)
    loaded = mlflow.pyfunc.load_model(uri)
    np.testing.assert_allclose(np.asarray(loaded.predict(np.ones((4, 3), dtype="float32"))).ravel(),
                               np.asarray(model.predict(np.ones((4, 3)), verbose=0)).ravel(), rtol=1e-5)


@pytest.mark.slow
def test_registry_champion_moves_only_on_a_better_score(make_config: Callable[..., Config], store_uri: str) -> None:
    common = ["experiment=smoke", "dataset=synthetic", "dataset.generator=moons", "dataset.n_samples=300",
              f"tracking.uri={store_uri}", "verbose=0", "tracking.register_as=moons", *FEW_TRIALS]
    first = pipeline.run(make_config(*common))
    assert first.registry and "now the champion" in first.registry
    # A deliberately weak second search (one tiny candidate, 1 epoch) must not take the alias.
    weak = pipeline.run(make_config(*common, "search.coarse.n_iter=1", "model.epochs=1", "search.fine.max_params=1",
                                    "search.fine.points=1", "seed=5"))
    client = MlflowClient(store_uri)
    champion = client.get_model_version_by_alias("moons", "champion")
    versions = client.search_model_versions("name = 'moons'")
    assert len(versions) == 2
    if weak.final.test_metrics["accuracy"] > first.final.test_metrics["accuracy"]:
        assert champion.run_id == weak.run_id
    else:
        assert champion.run_id == first.run_id
        assert weak.registry and "stays" in weak.registry
    assert weak.registry in weak.summary()


@pytest.mark.slow
def test_multirun_sweep_one_parent_per_job(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    Tracker(uri, "searchlab")  # the store and experiment exist before the jobs (COMPAT.md)
    out = subprocess.run(
        [sys.executable, "-m", "searchlab", "-m", "seed=1,2", "experiment=smoke", "dataset=synthetic",
         "dataset.n_samples=300", f"tracking.uri={uri}", "tracking.log_model=false", "verbose=0", *FEW_TRIALS],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "searchlab sweep: 2 jobs" in out.stdout
    assert "seed=1" in out.stdout and "seed=2" in out.stdout
    assert "database is locked" not in out.stdout + out.stderr
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("searchlab")
    searches = client.search_runs([experiment.experiment_id], f"tags.`{RUN_TAG}` = 'search'")
    assert sorted(r.data.params["seed"] for r in searches) == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in searches)


def _open_store(uri: str, barrier: Any, results: Any) -> None:
    from searchlab.tracking import Tracker as ChildTracker

    barrier.wait()  # every process imported MLflow: now they open the new store together
    try:
        results.put(ChildTracker(uri, "together").experiment_id)
    except Exception as exc:  # reported to the test, not lost in a child's stderr
        results.put(f"{type(exc).__name__}: {exc}")


def test_searches_started_together_share_a_new_store(tmp_path: Path) -> None:
    """Processes that open the same new SQLite store at once all get it and the same experiment (MLflow alone
    raced on creating the tables: "table latest_metrics already exists")."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    uri, n = f"sqlite:///{tmp_path / 'mlflow.db'}", 4
    barrier, results = context.Barrier(n), context.Queue()
    processes = [context.Process(target=_open_store, args=(uri, barrier, results)) for _ in range(n)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert len(set(outcomes)) == 1 and outcomes[0].isdigit(), outcomes


def test_ctrl_c_waits_for_the_store_write_in_progress() -> None:
    """A signal that lands inside `interrupts_held` reaches the process's handler when the block ends, not halfway
    through it, and the handler is back in place."""
    written: list[str] = []
    delivered: list[int] = []  # how much was written when the signal arrived

    def handler(signum: int, frame: Any) -> None:
        delivered.append(len(written))

    previous = signal.signal(signal.SIGINT, handler)  # this test's own: earlier tests may have set another
    try:
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # a handler left in place would have run by now
            written.append("whole")
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert delivered == [1]


def test_a_killed_writers_partial_trial_is_ignored_then_deleted(store_uri: str) -> None:
    """A trial run left RUNNING (its writer was killed between create and end) is not read back as done, and
    ending the stage deletes it; whole trial runs, FINISHED or FAILED, stay."""
    tracker = Tracker(store_uri, "searchlab")
    stage = tracker.start_run("fine", {RUN_TAG: "stage", STAGE_TAG: "fine"})
    tags = {RUN_TAG: "trial", STAGE_TAG: "fine"}
    whole = tracker.log_trial(stage, "fine-0000", {**tags, TRIAL_ID_TAG: "0000"}, {"units": 8}, {"val_score": 0.5},
                              {"val_score": [0.4, 0.5]}, time.time() - 1, time.time())
    failed = tracker.log_trial(stage, "fine-0001", {**tags, TRIAL_ID_TAG: "0001"}, {"units": 9}, {}, {},
                               time.time() - 1, time.time(), error="loss became NaN")
    partial = tracker.client.create_run(tracker.experiment_id, run_name="fine-0002",
                                        tags={**tags, TRIAL_ID_TAG: "0002", "mlflow.parentRunId": stage}).info.run_id
    held_open = tracker.start_run("in progress here", {RUN_TAG: "note"}, parent=stage)  # this process's own run
    assert set(read_fine_trials(tracker, stage)) == {"0000", "0001"}
    assert tracker.delete_partial_trials(stage) == 1
    assert tracker.client.get_run(partial).info.lifecycle_stage == "deleted"
    assert {tracker.client.get_run(r).info.status for r in (whole, failed)} == {"FINISHED", "FAILED"}
    assert tracker.client.get_run(held_open).info.lifecycle_stage == "active"
