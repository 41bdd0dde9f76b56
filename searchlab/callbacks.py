"""Hooks into a running search: `pipeline.run(config, callbacks=[...])` calls them as stages and trials end.

The console's progress lines are one such callback (`searchlab.console.ProgressPrinter`); a bench
script measures time or memory per trial with its own, without patching searchlab.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrialEnd:
    """One finished trial of a stage, as a callback sees it."""

    stage: str  # "coarse", "fine", or "confirm" (a fine trial re-scored: its mean over the splits)
    label: str  # as in its run's name: coarse-003, fine-0004, coarse-winner
    params: Mapping[str, Any]  # the values that tell it apart (sampled, or tuned by the fine stage)
    score: float  # higher is better (scikit-learn's sign); NaN when the trial failed
    metric: float  # the searched metric as people read it (RMSE positive); NaN when the trial failed
    error: str | None
    start_time: float
    end_time: float

    @property
    def ok(self) -> bool:
        return self.error is None and math.isfinite(self.score)


class SearchCallback:
    """Base class: override the hooks you need. Called in the search process, in trial order per stage."""

    def on_stage_begin(self, stage: str, total: int | None) -> None:
        """`stage` starts with `total` trials to train (None: not known in advance)."""

    def on_trial_end(self, trial: TrialEnd) -> None:
        """A trial was trained (or failed) and recorded."""

    def on_stage_end(self, stage: str) -> None:
        """Every trial of `stage` has ended and the stage's run is closed."""


class CallbackList(SearchCallback):
    """Several callbacks called as one, in order."""

    def __init__(self, callbacks: Iterable[SearchCallback]) -> None:
        self.callbacks = list(callbacks)

    def on_stage_begin(self, stage: str, total: int | None) -> None:
        for callback in self.callbacks:
            callback.on_stage_begin(stage, total)

    def on_trial_end(self, trial: TrialEnd) -> None:
        for callback in self.callbacks:
            callback.on_trial_end(trial)

    def on_stage_end(self, stage: str) -> None:
        for callback in self.callbacks:
            callback.on_stage_end(stage)
