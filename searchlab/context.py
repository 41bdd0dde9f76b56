"""What every stage of one search shares: the data, the searched metric, the training settings, the seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from searchlab.builders import Builder
from searchlab.config import ModelConfig
from searchlab.data import Dataset
from searchlab.metrics import Scoring


@dataclass(frozen=True)
class SearchContext:
    """The fixed inputs of a search's stages.

    `model` holds the training settings (epochs, patience, learning-rate cuts, ...) and the default value of
    every hyperparameter, used wherever a stage neither searches nor fixes it; `builder` builds the networks
    (`searchlab.builders.load_builder`).
    """

    data: Dataset
    scoring: Scoring
    model: ModelConfig
    seed: int
    verbose: int = 0
    builder: Builder = Builder()

    @property
    def defaults(self) -> dict[str, Any]:
        """The default value (`model.*` in the configuration) of every hyperparameter the builder can use."""
        return {name: value for name, value in self.model.hyperparameters().items() if self.builder.can_search(name)}
