"""Resuming an interrupted search: what the store already holds, as stage records.

A search is resumed with the configuration it started with (its `config.yaml`), so the
coarse candidates, the narrowed space and the fine grid come out the same; finished
coarse candidates and fine trials are read back instead of trained again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from searchlab.coarse import CoarseTrial
from searchlab.fine import FineTrial
from searchlab.space import Space, parse_value
from searchlab.tracking import RUN_TAG, STAGE_TAG, StoredRun, Tracker

CANDIDATE_TAG = "searchlab.candidate"
TRIAL_ID_TAG = "searchlab.trial_id"
ERROR_TAG = "searchlab.error"


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
        for run in tracker.children(stage.run_id):
            if name == "coarse" and CANDIDATE_TAG in run.tags:
                trial = _coarse_trial(run, space)
                progress.coarse[trial.number] = trial
            elif name == "fine" and TRIAL_ID_TAG in run.tags:
                progress.fine[run.tags[TRIAL_ID_TAG]] = (_fine_trial(run), run.run_id)
    return progress


def _coarse_trial(run: StoredRun, space: Space) -> CoarseTrial:
    params = {name: space[name].cast(run.params[name]) for name in space}
    folds = sorted((int(k.rsplit("_", 1)[1]), v) for k, v in run.metrics.items() if k.startswith("cv_score_fold_"))
    error = run.tags.get(ERROR_TAG)
    scores = tuple(v for _, v in folds) if not error else (float("nan"),)
    return CoarseTrial(int(run.tags[CANDIDATE_TAG]), params, scores, run.curves, error, run.start_time, run.end_time)


def _fine_trial(run: StoredRun) -> FineTrial:
    params: dict[str, Any] = {name: parse_value(name, text) for name, text in run.params.items()}
    tuned_names = run.tags.get("searchlab.tuned", "").split(",")
    tuned = {name: params[name] for name in tuned_names if name in params}
    score = run.metrics.get("val_score", float("nan"))
    return FineTrial(run.tags[TRIAL_ID_TAG], params, tuned, score, run.curves, run.tags.get(ERROR_TAG),
                     run.start_time, run.end_time, run.first_step)
