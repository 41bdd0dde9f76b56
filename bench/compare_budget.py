"""Planned training epochs: searchlab's grid settings define the budget B, the other methods are sized to it.

B = coarse ((n_iter * the coarse cap + (the promoted + the paired comparisons' candidates) * epochs) * cv) + fine grid
(points ** max_params * epochs) + the coarse winner retrained in the fine stage (epochs) + the final refit
(epochs). Hyperband and successive-halving schedules are planned as KerasTuner and scikit-learn run them. The
fine stage's conditional rounds (choices left open, the edge round, the revisit) are not in the plan: the bench
reports the epochs every method trained beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras_tuner as kt

from searchlab.coarse import n_compared
from searchlab.config import Config


@dataclass(frozen=True)
class Plan:
    """Planned training epochs per method, each method's settings sized so they come close to `budget`."""

    epochs: int  # E, the per-fit upper bound (model.epochs)
    budget: int  # B: searchlab-grid's plan
    hyperband_iterations: int  # searchlab-hyperband's fine stage
    hyperband: int
    random_n_iter: int
    random: int
    kt_iterations: int
    kerastuner: int
    halving_candidates: int
    halving: int
    optuna_trials: int

    @property
    def optuna(self) -> int:
        """Optuna plans `epochs` per trial (its pruner, like early stopping, ends many sooner), + the refit."""
        return self.optuna_trials * self.epochs + self.epochs

    def planned(self, method: str) -> int:
        return {"searchlab-grid": self.budget, "searchlab-hyperband": self.hyperband, "random-search": self.random,
                "kerastuner-hyperband": self.kerastuner, "halving-random-search": self.halving,
                "optuna-tpe": self.optuna, "gbdt-reference": 0}[method]


def hyperband_epochs(max_epochs: int, factor: int) -> int:
    """Epochs one KerasTuner Hyperband iteration trains (continued trials only train their extra epochs).

    Reads the schedule from KerasTuner's own oracle, so it cannot drift from what the tuner runs.
    """
    oracle = kt.oracles.HyperbandOracle(kt.Objective("val_loss", "min"), max_epochs=max_epochs, factor=factor)
    total = 0
    for bracket in range(oracle._get_num_brackets()):
        for rung in range(bracket + 1):
            before = oracle._get_epochs(bracket, rung - 1) if rung else 0
            total += oracle._get_size(bracket, rung) * (oracle._get_epochs(bracket, rung) - before)
    return total


def halving_epochs(n_candidates: int, max_resources: int, factor: int, cv: int) -> int:
    """Epochs `HalvingRandomSearchCV(min_resources="exhaust", resource=epochs)` plans (its schedule, per fold)."""
    required = 1 + math.floor(math.log(n_candidates, factor) + 1e-9)
    min_resources = max(1, max_resources // factor ** (required - 1))
    possible = 1 + math.floor(math.log(max_resources // min_resources, factor) + 1e-9)
    total, candidates = 0, n_candidates
    for iteration in range(min(required, possible)):
        total += candidates * min(min_resources * factor**iteration, max_resources)
        candidates = math.ceil(candidates / factor)
    return cv * total


def make_plan(config: Config) -> Plan:
    """The plan for `config` (see the module docstring for B)."""
    coarse, fine, epochs = config.search.coarse, config.search.fine, config.model.epochs
    sampled = coarse.n_iter * coarse.epochs_per_fit(epochs)
    compared = (coarse.n_promoted(epochs) + n_compared(config.paired_choices())) * epochs
    coarse_part = (sampled + compared) * coarse.cv
    grid_fine = fine.points**fine.max_params * epochs  # an estimate: choices and fixed ranges change the grid
    budget = coarse_part + grid_fine + 2 * epochs  # + the coarse winner + the refit
    per_hb = hyperband_epochs(fine.max_epochs, fine.factor)
    hb_iterations = max(1, round(grid_fine / per_hb))
    hyperband = coarse_part + hb_iterations * per_hb + 2 * fine.max_epochs  # + the coarse winner + the refit
    n_iter = max(1, round((budget - epochs) / (coarse.cv * epochs)))
    per_kt = hyperband_epochs(epochs, fine.factor)
    kt_iterations = max(1, round((budget - epochs) / per_kt))
    candidates = min(range(1, budget // coarse.cv + 2),
                     key=lambda n: abs(halving_epochs(n, epochs, fine.factor, coarse.cv) + epochs - budget))
    return Plan(epochs, budget, hb_iterations, hyperband, n_iter, n_iter * coarse.cv * epochs + epochs,
                kt_iterations, kt_iterations * per_kt + epochs, candidates,
                halving_epochs(candidates, epochs, fine.factor, coarse.cv) + epochs,
                max(1, (budget - epochs) // epochs))
