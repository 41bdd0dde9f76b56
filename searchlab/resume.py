"""Resuming an interrupted search: what the store already holds, as stage records.

A search is resumed with the configuration it started with (its `config.yaml`), so the
coarse candidates, the narrowed space and the fine grid come out the same; finished
coarse candidates and fine trials are read back instead of trained again.

Fine trials are written here too (`log_fine_trial`), by the search process or by a distributed
fine stage's workers, whose trials the search process then reads back (`read_fine_trials`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from searchlab.coarse import CoarseTrial
from searchlab.fine import COARSE_WINNER, FineTrial
from searchlab.metrics import Scoring
from searchlab.progress import format_params
from searchlab.space import Space, parse_value
from searchlab.tracking import RUN_TAG, STAGE_TAG, StoredRun, Tracker

CANDIDATE_TAG = "searchlab.candidate"
TRIAL_ID_TAG = "searchlab.trial_id"
TUNED_TAG = "searchlab.tuned"
WORKER_TAG = "searchlab.worker"  # the KerasTuner tuner id of the worker that trained a fine trial
ERROR_TAG = "searchlab.error"
ENDED = ("FINISHED", "FAILED")  # trial runs written whole; a RUNNING one is a killed writer's partial run


@dataclass
class Progress:
    """What an interrupted search had finished: stage run ids and their recorded trials."""

    stage_runs: dict[str, str] = field(default_factory=dict)  # stage -> run id
    coarse: dict[int, CoarseTrial] = field(default_factory=dict)  # candidate number -> trial
    fine: dict[str, tuple[FineTrial, str]] = field(default_factory=dict)  # trial id -> (trial, run id)


def read_progress(tracker: Tracker, parent: str, space: Space) -> Progress:
    """Read the stage runs and finished trials under search run `parent`."""
    progress = Progress()
    for stage in tracker.children(parent):
        if stage.tags.get(RUN_TAG) != "stage":
            continue
        name = stage.tags[STAGE_TAG]
        progress.stage_runs[name] = stage.run_id
        if name == "coarse":
            trials = [_coarse_trial(run, space) for run in tracker.children(stage.run_id)
                      if CANDIDATE_TAG in run.tags and run.status in ENDED]
            progress.coarse = {trial.number: trial for trial in trials}
        elif name == "fine":
            progress.fine = read_fine_trials(tracker, stage.run_id)
    return progress


def log_fine_trial(tracker: Tracker, stage_run: str, trial: FineTrial, scoring: Scoring,
                   shown: Mapping[str, Any], worker: str | None = None) -> str:
    """Write a finished fine trial as a run under the fine stage run; returns its run id.

    Args:
        shown: the values the run's name lists (the tuned ones; the coarse winner's sampled ones).
        worker: the tuner id of the distributed worker that trained it.
    """
    label = COARSE_WINNER if trial.trial_id == COARSE_WINNER else f"fine-{trial.trial_id}"
    metrics = {"val_score": trial.score, f"val_best_{scoring.display_name}": scoring.to_metric(trial.score)}
    tags = {RUN_TAG: "trial", STAGE_TAG: "fine", TRIAL_ID_TAG: trial.trial_id, TUNED_TAG: ",".join(trial.tuned),
            **({WORKER_TAG: worker} if worker else {})}
    return tracker.log_trial(stage_run, f"{label} {format_params(shown)}", tags, trial.params, metrics,
                             trial.curves, trial.start_time, trial.end_time, trial.error, first_step=trial.first_epoch)


def read_fine_trials(tracker: Tracker, stage_run: str) -> dict[str, tuple[FineTrial, str]]:
    """The fine trials recorded under the fine stage run: trial id -> (trial, run id)."""
    return {run.tags[TRIAL_ID_TAG]: (_fine_trial(run), run.run_id)
            for run in tracker.children(stage_run) if TRIAL_ID_TAG in run.tags and run.status in ENDED}


def _coarse_trial(run: StoredRun, space: Space) -> CoarseTrial:
    params = {name: space[name].cast(run.params[name]) for name in space}
    folds = sorted((int(k.rsplit("_", 1)[1]), v) for k, v in run.metrics.items() if k.startswith("cv_score_fold_"))
    error = run.tags.get(ERROR_TAG)
    scores = tuple(v for _, v in folds) if not error else (float("nan"),)
    return CoarseTrial(int(run.tags[CANDIDATE_TAG]), params, scores, run.curves, error, run.start_time, run.end_time)


def _fine_trial(run: StoredRun) -> FineTrial:
    params: dict[str, Any] = {name: parse_value(name, text) for name, text in run.params.items()}
    tuned_names = run.tags.get(TUNED_TAG, "").split(",")
    tuned = {name: params[name] for name in tuned_names if name in params}
    score = run.metrics.get("val_score", float("nan"))
    return FineTrial(run.tags[TRIAL_ID_TAG], params, tuned, score, run.curves, run.tags.get(ERROR_TAG),
                     run.start_time, run.end_time, run.first_step)
