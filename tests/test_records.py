"""Run records: what a coarse candidate and a fine trial leave in the store, read back exactly as written."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from searchlab import records
from searchlab.config import compose
from searchlab.errors import ConfigError
from searchlab.metrics import SCORINGS
from searchlab.records import Finished
from searchlab.tracking import Tracker
from searchlab.trials import COARSE_WINNER, CoarseTrial, FineTrial

ACCURACY = SCORINGS["accuracy"]


@pytest.fixture
def tracker(store_uri: str) -> Tracker:
    return Tracker(store_uri, "searchlab")


def test_a_coarse_candidate_reads_back_with_its_exact_values(tracker: Tracker) -> None:
    """Float values come back to the last digit (a resumed search samples and compares the same candidates)."""
    space = compose("experiment=smoke").coarse_space()
    rng = np.random.RandomState(0)
    params = {name: param.cast(param.distribution().rvs(random_state=rng)) if param.is_numeric else param.values[-1]
              for name, param in space.items()}
    search = records.start_search(tracker, "digits")
    stage = records.open_stage(tracker, search, "coarse", Finished())
    now = time.time()
    trial = CoarseTrial(0, params, (0.5, 0.7), {"loss": [0.9, 0.4], "val_loss": [1.0, 0.6]}, None, now - 1, now,
                        epochs=30)
    failed = CoarseTrial(1, params, (float("nan"), float("nan")), {}, "FloatingPointError: loss nan", now - 1, now)
    records.log_coarse_trial(tracker, stage, trial, ACCURACY, trial.params)
    records.log_coarse_trial(tracker, stage, failed, ACCURACY, failed.params)
    tracker.end_all("KILLED")

    finished = records.read_finished(tracker, search, space)
    assert finished.stage_runs == {"coarse": stage}
    back = finished.coarse[0]
    assert (back.params, back.fold_scores, back.curves, back.error) == (params, (0.5, 0.7), trial.curves, None)
    assert back.epochs == 30  # the fit's cap: a promoted candidate (the same values) is told apart by it
    assert back.start_time == pytest.approx(now - 1, abs=1e-3) and back.end_time == pytest.approx(now, abs=1e-3)
    assert finished.coarse[1].error == failed.error and not finished.coarse[1].ok
    runs = {r.data.tags[records.CANDIDATE_TAG]: r for r in tracker.client.search_runs(
        [tracker.experiment_id], f"tags.`{records.STAGE_TAG}` = 'coarse' and tags.`{records.RUN_TAG}` = 'trial'")}
    assert runs["0"].info.status == "FINISHED" and runs["0"].info.run_name.startswith("coarse-000 ")
    assert runs["1"].info.status == "FAILED" and runs["1"].data.tags[records.ERROR_TAG] == failed.error
    assert runs["0"].data.metrics["cv_accuracy"] == pytest.approx(0.6)


def test_a_fine_trial_reads_back_as_written(tracker: Tracker) -> None:
    search = records.start_search(tracker, "digits")
    stage = records.open_stage(tracker, search, "fine", Finished())
    now = time.time()
    params = {"units": 32, "layers": 2, "dropout": 0.125, "optimizer": "adam", "scaling": "standard", "epochs": 30}
    trial = FineTrial("0003", params, {"units": 32, "dropout": 0.125}, 0.875,
                      {"val_accuracy": [0.8, 0.875], "loss": [0.5, 0.3]}, None, now - 2, now, first_epoch=4)
    winner = FineTrial(COARSE_WINNER, params, {}, float("nan"), {}, "loss became nan at epoch 1", now - 1, now)
    run_id = records.log_fine_trial(tracker, stage, trial, ACCURACY, trial.tuned, worker="tuner1")
    records.log_fine_trial(tracker, stage, winner, ACCURACY, {"units": 32})
    recorded = records.read_fine_trials(tracker, stage)
    assert set(recorded) == {"0003", COARSE_WINNER}
    back, back_id = recorded["0003"]
    assert back_id == run_id
    assert (back.params, back.tuned, back.score, back.curves, back.first_epoch) == (
        params, trial.tuned, 0.875, trial.curves, 4)
    assert recorded[COARSE_WINNER][0].error == winner.error and not recorded[COARSE_WINNER][0].ok
    run = tracker.client.get_run(run_id)
    assert run.info.run_name == "fine-0003 units=32 dropout=0.125"
    assert run.data.tags[records.WORKER_TAG] == "tuner1"
    assert [m.step for m in tracker.client.get_metric_history(run_id, "val_accuracy")] == [4, 5]


def test_a_killed_writers_partial_trial_is_ignored_then_deleted(tracker: Tracker) -> None:
    """A trial run left RUNNING (its writer was killed between create and end) is not read back as finished, and
    ending the stage deletes it; whole trial runs, FINISHED or FAILED, stay."""
    stage = tracker.start_run("fine", {records.RUN_TAG: "stage", records.STAGE_TAG: "fine"})
    now = time.time()
    whole = records.log_fine_trial(tracker, stage, FineTrial("0000", {"units": 8}, {}, 0.5, {}, None, now, now),
                                   ACCURACY, {})
    failed = records.log_fine_trial(tracker, stage, FineTrial("0001", {"units": 9}, {}, float("nan"), {}, "NaN",
                                                              now, now), ACCURACY, {})
    partial = tracker.client.create_run(tracker.experiment_id, run_name="fine-0002", tags={
        records.RUN_TAG: "trial", records.TRIAL_ID_TAG: "0002", "mlflow.parentRunId": stage}).info.run_id
    held_open = tracker.start_run("in progress here", {records.RUN_TAG: "note"}, parent=stage)  # this process's
    assert set(records.read_fine_trials(tracker, stage)) == {"0000", "0001"}
    assert tracker.delete_partial_runs(stage) == 1
    assert tracker.client.get_run(partial).info.lifecycle_stage == "deleted"
    assert {tracker.client.get_run(r).info.status for r in (whole, failed)} == {"FINISHED", "FAILED"}
    assert tracker.client.get_run(held_open).info.lifecycle_stage == "active"


def test_find_search_names_what_cannot_be_resumed(tracker: Tracker) -> None:
    with pytest.raises(ConfigError, match="resume=last: experiment 'searchlab' has no search to resume"):
        records.find_search(tracker, "last")
    with pytest.raises(ConfigError, match="resume='0123abc' is not a searchlab search run"):
        records.find_search(tracker, "0123abc")
    done = records.start_search(tracker, "digits")
    tracker.end_run(done)
    with pytest.raises(ConfigError, match=f"search {done} already finished"):
        records.find_search(tracker, "last")
    stopped = records.start_search(tracker, "digits")
    tracker.end_run(stopped, "KILLED")
    assert records.find_search(tracker, "last") == stopped == records.find_search(tracker, stopped)
    stage = records.open_stage(tracker, stopped, "coarse", Finished())
    with pytest.raises(ConfigError, match="is not a searchlab search run"):
        records.find_search(tracker, stage)


def test_a_stage_run_is_reopened_on_resume(tracker: Tracker, tmp_path: Path) -> None:
    search = records.start_search(tracker, "digits")
    stage = records.open_stage(tracker, search, "coarse", Finished())
    tracker.end_all("KILLED")
    finished = records.read_finished(tracker, search, compose("experiment=smoke").coarse_space())
    assert records.open_stage(tracker, search, "coarse", finished) == stage
    assert tracker.client.get_run(stage).info.status == "RUNNING" and stage in tracker.open_runs
