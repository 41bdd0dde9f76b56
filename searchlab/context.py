"""What every stage of one search shares: the data, the searched metric, the training settings, the seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from searchlab.config import ModelConfig
from searchlab.data import Dataset
from searchlab.metrics import Scoring


@dataclass(frozen=True)
class SearchContext:
    """The fixed inputs of a search's stages.

    `model` holds the training settings (epochs, patience, learning-rate cuts, ...) and the default value of
    every hyperparameter, used wherever a stage neither searches nor fixes it.
    """

    data: Dataset
    scoring: Scoring
    model: ModelConfig
    seed: int
    verbose: int = 0

    @property
    def defaults(self) -> dict[str, Any]:
        """Every hyperparameter's default value (`model.*` in the configuration)."""
        return self.model.hyperparameters()
