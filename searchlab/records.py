"""The run records of a search: what each MLflow run holds, written and read back in one place.

Run tree of one search (tags in brackets):

    search            [searchlab.run=search]   config, chosen params, test metrics, best_model
      coarse          [searchlab.run=stage, searchlab.stage=coarse]
        coarse-000 .. [searchlab.run=trial, searchlab.stage=coarse, searchlab.candidate=0]
      fine            [searchlab.run=stage, searchlab.stage=fine]
        fine-0000 ..  [searchlab.run=trial, searchlab.stage=fine, searchlab.trial_id=0000]
        coarse-winner [searchlab.run=trial, searchlab.stage=fine, searchlab.trial_id=coarse-winner]

A trial run is written whole when its trial ends (`Tracker.log_finished_run`), so whatever the store holds
as FINISHED or FAILED is a finished trial. Resuming reads them back (`read_finished`), and a resumed search
runs the same code as a new one, with those trials replayed instead of trained.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from searchlab.callbacks import TrialEnd
from searchlab.config import Config, config_from_yaml
from searchlab.console import format_params
from searchlab.errors import ConfigError
from searchlab.metrics import Scoring
from searchlab.space import Space, parse_value
from searchlab.tracking import StoredRun, Tracker
from searchlab.trials import COARSE_WINNER, CoarseTrial, FineTrial

RUN_TAG = "searchlab.run"  # search, stage or trial
STAGE_TAG = "searchlab.stage"  # coarse or fine
DATASET_TAG = "searchlab.dataset"
TASK_TAG = "searchlab.task"
TEST_ROWS_TAG = "searchlab.test_rows"  # which rows a search's test scores were measured on (data.fingerprint_rows)
CANDIDATE_TAG = "searchlab.candidate"  # a coarse trial's number in sampling order
TRIAL_ID_TAG = "searchlab.trial_id"  # a fine trial's KerasTuner id, or coarse-winner
TUNED_TAG = "searchlab.tuned"  # the hyperparameters a fine trial's stage tuned, comma-separated
WORKER_TAG = "searchlab.worker"  # the KerasTuner tuner id of the worker that trained a fine trial
ERROR_TAG = "searchlab.error"  # why a trial failed
WINNER_TAG = "searchlab.winner"  # on the fine trial whose values the final model was refit with
LEFT_OUT_TAG = "searchlab.not_searched"  # the coarse-space ranges a custom model builder cannot take, and why
ENDED = ("FINISHED", "FAILED")  # trial runs written whole; a RUNNING one is a killed writer's partial run
_FOLD = "cv_score_fold_"


@dataclass
class Finished:
    """What a search has finished so far: its stage runs and their recorded trials (empty for a new search)."""

    stage_runs: dict[str, str] = field(default_factory=dict)  # stage -> run id
    coarse: dict[int, CoarseTrial] = field(default_factory=dict)  # candidate number -> trial
    fine: dict[str, FineTrial] = field(default_factory=dict)  # trial id -> trial
    fine_runs: dict[str, str] = field(default_factory=dict)  # trial id -> run id


def start_search(tracker: Tracker, dataset: str) -> str:
    """Open the search run of a new search on `dataset`."""
    return tracker.start_run(f"search {dataset}", {RUN_TAG: "search", DATASET_TAG: dataset})


def find_search(tracker: Tracker, which: str) -> str:
    """The run id of the search to resume: `last` (the newest search) or a run id.

    Raises:
        ConfigError: no such search in the tracker's experiment, or it already finished.
    """
    if which == "last":
        run = tracker.newest({RUN_TAG: "search"})
        if run is None:
            raise ConfigError(f"resume=last: experiment {tracker.experiment!r} has no search to resume.")
    else:
        run = tracker.get(which)
        if run is None or run.tags.get(RUN_TAG) != "search":
            raise ConfigError(f"resume={which!r} is not a searchlab search run of experiment "
                              f"{tracker.experiment!r}.")
    if run.status == "FINISHED":
        raise ConfigError(f"resume: search {run.run_id} already finished; nothing to resume.")
    return run.run_id


def resumed_config(config: Config) -> Config:
    """The configuration the search named by `config.resume` started with (its `config.yaml`), with this
    invocation's verbosity and tracking settings."""
    assert config.resume
    tracker = Tracker(config.tracking.uri, config.tracking.experiment)
    run_id = find_search(tracker, config.resume)
    stored = config_from_yaml(tracker.read_text(run_id, "config.yaml"))
    return dataclasses.replace(stored, resume=run_id, verbose=config.verbose, tracking=config.tracking)


def open_stage(tracker: Tracker, parent: str, stage: str, finished: Finished) -> str:
    """The run of `stage` under search `parent`: reopened if an interrupted search had started it."""
    if stage in finished.stage_runs:
        tracker.reopen(finished.stage_runs[stage])
        return finished.stage_runs[stage]
    return tracker.start_run(stage, {RUN_TAG: "stage", STAGE_TAG: stage}, parent=parent)


def coarse_label(number: int) -> str:
    return f"coarse-{number:03d}"


def fine_label(trial_id: str) -> str:
    return trial_id if trial_id == COARSE_WINNER else f"fine-{trial_id}"


def coarse_end(trial: CoarseTrial, scoring: Scoring, shown: Mapping[str, Any]) -> TrialEnd:
    """A coarse trial as callbacks see it; `shown`: the values that tell it apart."""
    return TrialEnd("coarse", coarse_label(trial.number), shown, trial.mean_score,
                    scoring.to_metric(trial.mean_score), trial.error, trial.start_time, trial.end_time)


def fine_end(trial: FineTrial, scoring: Scoring, shown: Mapping[str, Any]) -> TrialEnd:
    """A fine trial as callbacks see it; `shown`: the values that tell it apart."""
    return TrialEnd("fine", fine_label(trial.trial_id), shown, trial.score, scoring.to_metric(trial.score),
                    trial.error, trial.start_time, trial.end_time)


def confirm_end(trial: FineTrial, scoring: Scoring, shown: Mapping[str, Any]) -> TrialEnd:
    """A re-scored fine trial as callbacks see it: its mean score over every split it was scored on."""
    return TrialEnd("confirm", fine_label(trial.trial_id), shown, trial.confirmed_score,
                    scoring.to_metric(trial.confirmed_score), None, trial.start_time, trial.end_time)


def log_coarse_trial(tracker: Tracker, stage_run: str, trial: CoarseTrial, scoring: Scoring,
                     shown: Mapping[str, Any]) -> str:
    """Write a finished coarse candidate under the coarse stage run; returns its run id. `shown`: the values its
    run's name lists."""
    metrics = {"cv_score_mean": trial.mean_score, "cv_score_std": trial.std_score,
               f"cv_{scoring.display_name}": scoring.to_metric(trial.mean_score),
               **{f"{_FOLD}{k}": s for k, s in enumerate(trial.fold_scores)}}
    tags = {RUN_TAG: "trial", STAGE_TAG: "coarse", CANDIDATE_TAG: str(trial.number), **_error(trial.error)}
    return tracker.log_finished_run(
        stage_run, f"{coarse_label(trial.number)} {format_params(shown)}", tags=tags,
        params={**trial.params, **({"epochs": trial.epochs} if trial.epochs else {})}, metrics=metrics,
        curves=trial.curves, start_time=trial.start_time, end_time=trial.end_time, failed=trial.error is not None)


def log_fine_trial(tracker: Tracker, stage_run: str, trial: FineTrial, scoring: Scoring,
                   shown: Mapping[str, Any], worker: str | None = None) -> str:
    """Write a finished fine trial under the fine stage run; returns its run id.

    Args:
        shown: the values the run's name lists (the tuned ones; the coarse winner's sampled ones).
        worker: the tuner id of the distributed worker that trained it.
    """
    metrics = {"val_score": trial.score, f"val_best_{scoring.display_name}": scoring.to_metric(trial.score)}
    tags = {RUN_TAG: "trial", STAGE_TAG: "fine", TRIAL_ID_TAG: trial.trial_id, TUNED_TAG: ",".join(trial.tuned),
            **({WORKER_TAG: worker} if worker else {}), **_error(trial.error)}
    return tracker.log_finished_run(
        stage_run, f"{fine_label(trial.trial_id)} {format_params(shown)}", tags=tags, params=trial.params,
        metrics=metrics, curves=trial.curves, start_time=trial.start_time, end_time=trial.end_time,
        failed=trial.error is not None, first_step=trial.first_epoch)


def log_confirmation(tracker: Tracker, run_id: str, trial: FineTrial, scoring: Scoring) -> None:
    """Add a re-scored fine trial's scores on further validation splits (`fine.confirm`) to its run."""
    scores = {f"confirm_score_{k}": score for k, score in enumerate(trial.confirm_scores, 1)}
    scores |= {"confirmed_score": trial.confirmed_score,
               f"confirmed_{scoring.display_name}": scoring.to_metric(trial.confirmed_score)}
    tracker.log(run_id, metrics={key: value for key, value in scores.items() if math.isfinite(value)})


def mark_winner(tracker: Tracker, run_id: str) -> None:
    """Tag the fine trial whose values the final model was refit with."""
    tracker.log(run_id, tags={WINNER_TAG: "true"})


def read_finished(tracker: Tracker, parent: str, space: Space) -> Finished:
    """The stage runs and finished trials under search run `parent`."""
    finished = Finished()
    for stage in tracker.children(parent):
        if stage.tags.get(RUN_TAG) != "stage":
            continue
        name = stage.tags[STAGE_TAG]
        finished.stage_runs[name] = stage.run_id
        if name == "coarse":
            trials = [_coarse_trial(run, space) for run in tracker.children(stage.run_id)
                      if CANDIDATE_TAG in run.tags and run.status in ENDED]
            finished.coarse = {trial.number: trial for trial in trials}
        elif name == "fine":
            recorded = read_fine_trials(tracker, stage.run_id)
            finished.fine = {trial_id: trial for trial_id, (trial, _) in recorded.items()}
            finished.fine_runs = {trial_id: run_id for trial_id, (_, run_id) in recorded.items()}
    return finished


def read_fine_trials(tracker: Tracker, stage_run: str) -> dict[str, tuple[FineTrial, str]]:
    """The fine trials recorded under the fine stage run: trial id -> (trial, run id)."""
    return {run.tags[TRIAL_ID_TAG]: (_fine_trial(run), run.run_id)
            for run in tracker.children(stage_run) if TRIAL_ID_TAG in run.tags and run.status in ENDED}


def _error(error: str | None) -> dict[str, str]:
    return {ERROR_TAG: error[:5000]} if error else {}


def _coarse_trial(run: StoredRun, space: Space) -> CoarseTrial:
    params = {name: space[name].cast(run.params[name]) for name in space if name in run.params}
    folds = sorted((int(k.removeprefix(_FOLD)), v) for k, v in run.metrics.items() if k.startswith(_FOLD))
    error = run.tags.get(ERROR_TAG)
    scores = tuple(v for _, v in folds) if not error else (float("nan"),)
    return CoarseTrial(int(run.tags[CANDIDATE_TAG]), params, scores, run.curves, error, run.start_time, run.end_time,
                       int(run.params.get("epochs", 0)))


def _fine_trial(run: StoredRun) -> FineTrial:
    params: dict[str, Any] = {name: parse_value(name, text) for name, text in run.params.items()}
    tuned_names = run.tags.get(TUNED_TAG, "").split(",")
    tuned = {name: params[name] for name in tuned_names if name in params}
    score = run.metrics.get("val_score", float("nan"))
    return FineTrial(run.tags[TRIAL_ID_TAG], params, tuned, score, run.curves, run.tags.get(ERROR_TAG),
                     run.start_time, run.end_time, run.first_step)
