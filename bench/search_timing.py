"""Where a search's wall time goes, read from its callbacks (no patching): training, and the store.

`timed_search(config, data)` runs `searchlab.pipeline.run` with a `SearchTimer` and splits the wall time:

- opening: from the call to the coarse stage's start: the store only (the tracker, the search run, its
  configuration, the coarse stage run), since the data set is loaded beforehand and passed in;
- per stage: its trials' training (each trial's start to end), the writing of each trial run (a trial's end
  to its callback, which the pipeline calls once the run is written), and the stage's closing (its last
  trial's callback to the stage's end): the stage's metrics, best-so-far plot, artifacts and end of run,
  after whatever the stage does once its last trial is recorded;
- between the stages: narrowing (pure, milliseconds), its note, the fine stage run and its space;
- after the stages: the final refit, then the result's metrics, model (if `tracking.log_model`), plots and
  the end of the search run. The refit is timed again on its own (same values and epochs, after the search)
  and taken off, so what remains is the store's part.

The store's part (`tracking_s`) is opening + trial writes + the fine stage's closing + between + (after -
refit), a lower bound. The coarse stage's closing is left out: it starts with the coarse workers' teardown,
which no callback can tell from the stage's writes. The fine stage's set-up (its split, the tuner) counts
as neither.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from searchlab import pipeline
from searchlab.callbacks import SearchCallback, TrialEnd
from searchlab.config import Config
from searchlab.context import SearchContext
from searchlab.data import Dataset
from searchlab.final import RefitSchedule, refit_and_test
from searchlab.metrics import scoring_for

STAGES = ("coarse", "fine")


@dataclass
class StageMarks:
    """When one stage began and ended, and each of its trials as (trial, when its callback ran)."""

    begin: float
    end: float = float("nan")
    trials: list[tuple[TrialEnd, float]] = field(default_factory=list)

    @property
    def train_s(self) -> float:
        """Each trial's start to end, summed (trials that train at once, as coarse candidates do, overlap)."""
        return sum(trial.end_time - trial.start_time for trial, _ in self.trials)

    @property
    def write_s(self) -> float:
        return sum(reported - trial.end_time for trial, reported in self.trials)

    @property
    def closing_s(self) -> float:
        last = max((reported for _, reported in self.trials), default=self.begin)
        return self.end - last


class SearchTimer(SearchCallback):
    """Notes the wall-clock time of every stage boundary and trial callback of one search."""

    def __init__(self) -> None:
        self.stages: dict[str, StageMarks] = {}

    def on_stage_begin(self, stage: str, total: int | None) -> None:
        self.stages[stage] = StageMarks(time.time())

    def on_trial_end(self, trial: TrialEnd) -> None:
        self.stages[trial.stage].trials.append((trial, time.time()))

    def on_stage_end(self, stage: str) -> None:
        self.stages[stage].end = time.time()


def timed_search(config: Config, data: Dataset, *, refit: bool = True,
                 ) -> tuple[pipeline.SearchResult, dict[str, float]]:
    """Run the search `config` describes on `data`; return its result and where its wall time went (seconds,
    see the module docstring; `refit=False` leaves the final refit in `tracking_s`)."""
    timer = SearchTimer()
    started = time.time()
    result = pipeline.run(config, data=data, callbacks=[timer])
    ended = time.time()
    coarse, fine = (timer.stages[stage] for stage in STAGES)
    times: dict[str, float] = {
        "wall_s": ended - started,
        "opening_s": coarse.begin - started,
        "between_stages_s": fine.begin - coarse.end,
        "after_stages_s": ended - fine.end,
    }
    for stage, marks in timer.stages.items():
        times |= {f"{stage}_s": marks.end - marks.begin, f"{stage}_trials": len(marks.trials),
                  f"{stage}_train_s": marks.train_s, f"{stage}_write_s": marks.write_s,
                  f"{stage}_closing_s": marks.closing_s}
    writes = [reported - trial.end_time for marks in timer.stages.values() for trial, reported in marks.trials]
    times["trial_write_s"] = sum(writes)
    times["trial_write_median_s"] = sorted(writes)[len(writes) // 2] if writes else 0.0
    times["refit_s"] = _refit_seconds(config, result) if refit else 0.0
    times["result_logging_s"] = times["after_stages_s"] - times["refit_s"]
    times["tracking_s"] = (times["opening_s"] + times["trial_write_s"] + times["between_stages_s"] + fine.closing_s
                           + times["result_logging_s"])
    return result, times


def warm_up(config: Config, data: Dataset) -> None:
    """One short refit in this process, so the first timed search does not carry TensorFlow's start-up."""
    ctx = SearchContext(data, scoring_for(data.task, config.search.coarse.scoring), config.model, config.seed)
    refit_and_test(ctx, ctx.defaults, RefitSchedule(1))


def _refit_seconds(config: Config, result: pipeline.SearchResult) -> float:
    """The search's final refit again (same values and epoch count; its learning-rate schedule does not change
    the cost), timed."""
    ctx = SearchContext(result.data, result.scoring, config.model, config.seed)
    start = time.time()
    refit_and_test(ctx, dict(result.final.params), result.final.schedule)
    return time.time() - start

