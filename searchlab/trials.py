"""What one trial of a stage found: the records the stages return, the store holds and a resumed search replays.

Plain data, without TensorFlow: reading a search back (to resume it, or to refuse to) loads none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

COARSE_WINNER = "coarse-winner"  # the fine-stage trial id of the coarse winner, trained under the fine protocol
EDGE_PREFIX = "edge-"  # trial ids of the second round beyond a narrowed range's edge
SETTLE_PREFIX = "settle-"  # trial ids of the coarse winner with another value of a choice left open
REVISIT_PREFIX = "revisit-"  # trial ids of the round over the narrowing's fixed values (no trial beat the winner)


@dataclass(frozen=True)
class CoarseTrial:
    """One coarse candidate: its sampled hyperparameters and cross-validated score."""

    number: int
    params: dict[str, Any]
    fold_scores: tuple[float, ...]
    curves: dict[str, list[float]] = field(default_factory=dict)  # per-epoch means over folds
    error: str | None = None
    start_time: float = 0.0
    end_time: float = 0.0
    epochs: int = 0  # the most epochs each fold's fit could train (the coarse cap, or model.epochs)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def mean_score(self) -> float:
        return float(np.mean(self.fold_scores)) if self.ok else float("nan")

    @property
    def std_score(self) -> float:
        return float(np.std(self.fold_scores)) if self.ok else float("nan")

    @property
    def stopped_early(self) -> bool:
        """Every fold's fit stopped before its cap (`epochs`): a higher cap would have trained it the same."""
        return self.ok and 0 < len(self.curves.get("loss", ())) < self.epochs


@dataclass(frozen=True)
class FineTrial:
    """One fine trial: its tuned values, score on the validation split and per-epoch curves."""

    trial_id: str  # KerasTuner's id, or COARSE_WINNER
    params: dict[str, Any]  # every hyperparameter the trial trained with
    tuned: dict[str, Any]  # the values the fine stage chose (empty for the coarse winner)
    score: float
    curves: dict[str, list[float]] = field(default_factory=dict)  # per epoch, from `first_epoch`
    error: str | None = None
    start_time: float = 0.0
    end_time: float = 0.0
    first_epoch: int = 0  # Hyperband continues some trials from an earlier one's weights
    confirm_scores: tuple[float, ...] = ()  # scores on further validation splits (`confirm`)
    confirm_curves: tuple[dict[str, list[float]], ...] = ()  # and the per-epoch curves behind them

    @property
    def ok(self) -> bool:
        return self.error is None and math.isfinite(self.score)

    @property
    def confirmed_score(self) -> float:
        """The mean score over every split the trial was scored on (NaN if one failed)."""
        return float(np.mean([self.score, *self.confirm_scores]))
