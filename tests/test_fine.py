"""The fine stage: KerasTuner grid and Hyperband over a fine space on tiny data, replayed trials, failed
trials, and the one worker process that trains them."""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras_tuner as kt
import numpy as np
import psutil
import pytest

from searchlab import fine
from searchlab.config import Config
from searchlab.context import SearchContext
from searchlab.fine import (
    FineResult,
    StageStopped,
    TrialPool,
    best_score,
    confirm,
    edge_values,
    revisit_options,
    run_fine,
)
from searchlab.infra.processes import threads_per_worker
from searchlab.narrow import Decision, FineSpace, Influence
from searchlab.space import Param, grid_size
from searchlab.trials import COARSE_WINNER, FineTrial
from tests.conftest import stage_inputs

LAYERS = Param("layers", "int", 1.0, 2.0)
UNITS = Param("units", "choice", values=(4, 8))
WINNER = {"units": 16, "layers": 1, "learning_rate": 0.01}  # the coarse winner's sampled values


def fine_space(*params: Param, **fixed: Any) -> FineSpace:
    return FineSpace({p.name: p for p in params}, dict(fixed), (), 4, 3, 0)


@pytest.fixture(scope="module")
def pool() -> Iterator[TrialPool]:
    """Two trial worker processes for this module's stages, as a search's fine stage and re-scoring share them
    (each stage would otherwise start its own and import TensorFlow there)."""
    shared = TrialPool(size=2)
    yield shared
    shared.kill()


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory, pool: TrialPool) -> tuple[Config, SearchContext, FineSpace,
                                                                             list[FineTrial], FineResult]:
    config, ctx = stage_inputs("model.epochs=3", "search.fine.points=2")
    space = fine_space(LAYERS, UNITS, learning_rate=0.01)
    reported: list[FineTrial] = []
    result = run_fine(ctx, space, WINNER, config.search.fine, workdir=tmp_path_factory.mktemp("tuner"),
                      on_trial=reported.append, pool=pool)
    return config, ctx, space, reported, result


def test_a_grid_trains_every_point_once_then_the_coarse_winner(grid: tuple[Any, ...]) -> None:
    config, _, space, reported, result = grid
    assert len(result.trials) == grid_size(space.tuned, config.search.fine.points) == 4
    assert {(t.tuned["layers"], t.tuned["units"]) for t in result.trials} == {(1, 4), (1, 8), (2, 4), (2, 8)}
    assert sorted(t.trial_id for t in reported[:-1]) == [t.trial_id for t in result.trials]  # as each ends
    assert reported[-1].trial_id == COARSE_WINNER
    for trial in result.trials:
        assert trial.ok and 0.0 <= trial.score <= 1.0
        assert trial.params["learning_rate"] == 0.01  # fixed by the narrowing
        assert len(trial.curves["val_accuracy"]) == config.model.epochs and trial.first_epoch == 0
    winner = result.coarse_winner
    assert winner.ok and winner.tuned == {} and winner.params["units"] == 16
    assert result.best in (*result.trials, winner)


def test_recorded_trials_are_replayed_not_trained(grid: tuple[Any, ...], tmp_path: Path, pool: TrialPool) -> None:
    """What resuming relies on: the tuner proposes the same trials, the recorded ones come back as they were
    and only the others train."""
    config, ctx, space, _, first = grid
    recorded = {t.trial_id: t for t in first.trials[:2]}
    reported: list[FineTrial] = []
    resumed = run_fine(ctx, space, WINNER, config.search.fine, workdir=tmp_path, on_trial=reported.append,
                       finished=recorded, pool=pool)
    assert sorted(t.trial_id for t in reported[:2]) == [first.trials[2].trial_id, first.trials[3].trial_id]
    assert reported[2].trial_id == COARSE_WINNER
    assert [t.trial_id for t in resumed.trials] == [t.trial_id for t in first.trials]
    assert [t.tuned for t in resumed.trials] == [t.tuned for t in first.trials]
    assert resumed.trials[0].score == recorded[resumed.trials[0].trial_id].score


def test_trials_train_in_the_search_process_as_in_the_worker(grid: tuple[Any, ...], tmp_path: Path) -> None:
    """`search.fine.trial_worker=false`: no worker process, the same training: the grid's last point and the coarse
    winner (the rest replayed) score as they did in the worker."""
    config, ctx, space, _, first = grid
    settings = dataclasses.replace(config.search.fine, trial_worker=False)
    recorded = {t.trial_id: t for t in first.trials[:-1]}
    children = {p.pid for p in psutil.Process().children()}  # the module's trial worker among them
    reported: list[FineTrial] = []
    during: list[set[int]] = []

    def on_trial(trial: FineTrial) -> None:
        reported.append(trial)
        during.append({p.pid for p in psutil.Process().children()})

    again = run_fine(ctx, space, WINNER, settings, workdir=tmp_path, on_trial=on_trial, finished=recorded)
    assert [t.trial_id for t in reported] == [first.trials[-1].trial_id, COARSE_WINNER]
    assert during == [children, children]  # no worker process of its own
    for here, there in ((again.trials[-1], first.trials[-1]), (again.coarse_winner, first.coarse_winner)):
        assert here.curves.keys() == there.curves.keys()
        assert all(here.curves[key] == pytest.approx(there.curves[key], rel=1e-5) for key in here.curves)


def test_hyperband_continues_trials_within_max_epochs(tmp_path: Path, pool: TrialPool) -> None:
    config, ctx = stage_inputs("search/fine=hyperband", "search.fine.max_epochs=3", "search.fine.factor=3")
    result = run_fine(ctx, fine_space(Param("units", "int", 4.0, 16.0), learning_rate=0.01), WINNER,
                      config.search.fine, workdir=tmp_path, pool=pool)
    assert len(result.trials) >= 3
    assert any(t.first_epoch > 0 for t in result.trials)  # continued from an earlier trial's weights
    for trial in result.trials:
        assert trial.ok and set(trial.tuned) == {"units"}
        assert len(trial.curves["loss"]) + trial.first_epoch <= 3
    assert result.coarse_winner.params["epochs"] == 3  # trained for Hyperband's budget, like the trials


def test_choices_left_open_are_settled_one_after_the_other_before_the_grid(tmp_path: Path, pool: TrialPool) -> None:
    """Near ties of the coarse stage: the coarse winner is trained with each other value of the first choice (on
    the split scaled its way), then the best of those with each other value of the next; the grid trains with
    the values that scored best."""
    config, ctx = stage_inputs("model.epochs=2", "search.fine.points=2")
    space = dataclasses.replace(fine_space(LAYERS, learning_rate=0.01), left_open={
        "scaling": Param("scaling", "choice", values=("standard", "quantile")),
        "activation": Param("activation", "choice", values=("relu", "tanh"))})
    winner = {**WINNER, "scaling": "standard", "activation": "relu"}
    reported: list[FineTrial] = []
    result = run_fine(ctx, space, winner, config.search.fine, workdir=tmp_path, on_trial=reported.append, pool=pool)
    coarse_winner, by_scaling = sorted(reported[:2], key=lambda t: t.trial_id != COARSE_WINNER)  # trained together
    by_activation, *grid = reported[2:]
    assert coarse_winner.trial_id == COARSE_WINNER and result.coarse_winner == coarse_winner
    assert by_scaling.trial_id == "settle-scaling-quantile" and by_scaling.tuned == {"scaling": "quantile"}
    assert by_scaling.params == {**coarse_winner.params, "scaling": "quantile"}
    assert by_scaling.curves["val_loss"] != coarse_winner.curves["val_loss"]  # its own scaled split
    first = max((coarse_winner, by_scaling), key=lambda t: t.score)
    assert by_activation.params == {**first.params, "activation": "tanh"}
    second = max((first, by_activation), key=lambda t: t.score)
    assert sorted(t.tuned["layers"] for t in grid) == [1, 2]  # trained together: they end in either order
    assert all(t.params["scaling"] == second.params["scaling"] and t.params["activation"] == second.params["activation"]
               for t in grid)
    assert {t.trial_id for t in result.trials} == {by_scaling.trial_id, by_activation.trial_id,
                                                   *(t.trial_id for t in grid)}


@pytest.mark.parametrize("oracle_class", [fine._GridOracle, fine._HyperbandOracle])
def test_an_oracle_that_raised_still_serves_the_other_tuners(oracle_class: type[kt.Oracle], tmp_path: Path) -> None:
    """KerasTuner's oracle keeps its lock when a method raises, so the tuners in other threads would wait forever;
    searchlab's oracles release it."""
    class Flaky(oracle_class):
        raised = False

        def populate_space(self, trial_id: str) -> dict[str, Any]:
            if not self.raised:
                self.raised = True
                raise OSError("disk full")
            return super().populate_space(trial_id)

    hp = kt.HyperParameters()
    hp.Int("units", 4, 16)
    extra = {"max_epochs": 3} if oracle_class is fine._HyperbandOracle else {"max_trials": 3}
    oracle = Flaky(objective=kt.Objective("score", "max"), hyperparameters=hp, seed=0, **extra)
    oracle._set_project_dir(str(tmp_path), "fine")
    failed: list[BaseException] = []

    def first() -> None:
        try:
            oracle.create_trial("tuner0")
        except OSError as exc:
            failed.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    thread.join()
    assert failed and "disk full" in str(failed[0])
    created: list[kt.engine.trial.Trial] = []
    other = threading.Thread(target=lambda: created.append(oracle.create_trial("tuner0-1")), daemon=True)
    other.start()
    other.join(60)
    assert created and created[0].status == kt.engine.trial.TrialStatus.RUNNING


def test_a_diverging_trial_fails_with_the_reason(tmp_path: Path, pool: TrialPool) -> None:
    config, ctx = stage_inputs("model.epochs=2")
    space = fine_space(Param("learning_rate", "choice", values=(0.01, 1e30)), optimizer="sgd", layers=1)
    result = run_fine(ctx, space, WINNER, config.search.fine, workdir=tmp_path, pool=pool)
    by_rate = {t.tuned["learning_rate"]: t for t in result.trials}
    assert by_rate[0.01].ok
    assert not by_rate[1e30].ok and by_rate[1e30].error is not None
    assert "nan" in by_rate[1e30].error.lower() or "inf" in by_rate[1e30].error.lower()


def test_the_pool_replaces_its_worker_every_few_trials() -> None:
    """TensorFlow keeps memory per trained model: a fresh worker process every `recycle_every` trials."""
    pool = TrialPool(recycle_every=2)
    try:
        pids = [pool.run(os.getpid) for _ in range(5)]
    finally:
        pool.kill()
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert os.getpid() not in pids


def test_kill_ends_a_running_trial_without_waiting_for_it() -> None:
    """A stop (Ctrl-C, SIGTERM, the stage's end) ends the trial's process at once: the trial raises instead of
    running to its end."""
    pool = TrialPool()
    pool.run(os.getpid)  # the worker is up
    outcome: list[BaseException | None] = []

    def long_trial() -> None:
        try:
            pool.run(time.sleep, 120)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=long_trial)
    thread.start()
    time.sleep(1)
    started = time.monotonic()
    pool.kill()
    thread.join(60)
    assert time.monotonic() - started < 30
    assert outcome and isinstance(outcome[0], StageStopped)
    with pytest.raises(StageStopped):  # and nothing trains after
        pool.run(os.getpid)


def _meet(marker: Path, others: Path) -> tuple[int, str | None]:
    """Leave `marker`, wait for the other call's (each in a worker process): only calls running at once meet."""
    marker.touch()
    deadline = time.monotonic() + 120
    while not others.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return os.getpid(), os.environ.get("TF_NUM_INTRAOP_THREADS") if others.exists() else "did not meet"


def test_a_pool_of_two_trains_two_at_once_sharing_the_cores(tmp_path: Path, pool: TrialPool) -> None:
    """`search.fine.n_jobs=2`: two worker processes, each with half the cores for TensorFlow, both at work at
    once; the results come back in the calls' order."""
    a, b = tmp_path / "a", tmp_path / "b"
    results = pool.run_all([functools.partial(pool.run, _meet, a, b), functools.partial(pool.run, _meet, b, a)])
    (pid_a, threads_a), (pid_b, threads_b) = results
    assert pid_a != pid_b and os.getpid() not in (pid_a, pid_b)
    assert threads_a == threads_b == str(threads_per_worker(2))


def test_confirm_rescores_the_best_on_other_splits_and_chooses_by_the_mean(grid: tuple[Any, ...],
                                                                          pool: TrialPool) -> None:
    """The best `confirm_top` trials (the coarse winner is one of the candidates) train again on
    `confirm_splits` other validation splits; the choice is the best mean, which a lucky single split cannot
    decide; the rest are untouched. The same inputs repeat the same scores."""
    config, ctx, _, _, result = grid
    settings = dataclasses.replace(config.search.fine, confirm_top=2, confirm_splits=2)
    reported: list[FineTrial] = []
    confirmed = confirm(ctx, result, settings, on_trial=reported.append, pool=pool)
    by_score = sorted((t for t in result.all_trials if t.ok), key=lambda t: -t.score)
    assert [t.trial_id for t in reported] == [t.trial_id for t in by_score[:2]]
    rescored = [t for t in confirmed.all_trials if t.confirm_scores]
    assert {t.trial_id for t in rescored} == {t.trial_id for t in reported}
    for trial in rescored:
        assert len(trial.confirm_scores) == 2 and all(0.0 <= s <= 1.0 for s in trial.confirm_scores)
        # each split's curves are kept (the final refit's length is chosen from them)
        assert [best_score(c, ctx.scoring) for c in trial.confirm_curves] == list(trial.confirm_scores)
        assert all(len(c["learning_rate"]) == len(c[ctx.scoring.val_key]) for c in trial.confirm_curves)
        assert trial.confirmed_score == pytest.approx(np.mean([trial.score, *trial.confirm_scores]))
    assert confirmed.best in rescored
    assert confirmed.best.confirmed_score == max(t.confirmed_score for t in rescored)
    untouched = [t for t in confirmed.all_trials if not t.confirm_scores]
    assert len(untouched) == len(result.all_trials) - 2
    again = confirm(ctx, result, dataclasses.replace(settings, confirm_splits=1), pool=pool)  # the first split again
    assert [t.confirm_scores for t in again.all_trials] == [t.confirm_scores[:1] for t in confirmed.all_trials]


def test_a_tie_on_one_split_is_decided_by_the_mean() -> None:
    """`FineResult.best` prefers the re-scored trial with the best mean even when another scored higher once."""
    lucky = FineTrial("0001", {}, {}, 0.95, confirm_scores=(0.80, 0.82))
    steady = FineTrial("0002", {}, {}, 0.90, confirm_scores=(0.89, 0.91))
    other = FineTrial("0003", {}, {}, 0.85)
    winner = FineTrial(COARSE_WINNER, {}, {}, 0.70)
    assert FineResult((lucky, steady, other), winner).best is steady
    assert FineResult((dataclasses.replace(lucky, confirm_scores=()), other), winner).best.trial_id == "0001"


def _decision(original: Param, narrowed: Param) -> Decision:
    return Decision(original.name, Influence(0.5, 0.2, 0.8, 0.01), original, narrowed)


def test_edge_values_step_outward_within_the_original_bounds() -> None:
    lr = _decision(Param("learning_rate", "float", 1e-4, 1e-1, log=True),
                   Param("learning_rate", "float", 1e-3, 1e-2, log=True))
    units = _decision(Param("units", "int", 16, 256), Param("units", "int", 16, 64))
    space = FineSpace({d.name: d.narrowed for d in (lr, units) if d.narrowed}, {}, (lr, units), 20, 5, 0)
    grid = lr.narrowed.grid(3) if lr.narrowed else []
    # learning rate on its upper edge: two more geometric steps up; units on the original lower bound: none
    assert edge_values(space, {"learning_rate": grid[-1], "units": 16}, 3) == {
        "learning_rate": pytest.approx([10 ** -1.5, 1e-1])}
    # units on the upper edge: the grid's steps of 24, further up
    assert edge_values(space, {"learning_rate": grid[1], "units": 64}, 3) == {"units": [88, 112]}
    assert edge_values(space, {"learning_rate": grid[1], "units": 40}, 3) == {}  # inside: no second round
    capped = _decision(Param("units", "int", 16, 70), Param("units", "int", 16, 64))
    assert edge_values(FineSpace({"units": capped.narrowed}, {}, (capped,), 20, 5, 0), {"units": 64},  # type: ignore[dict-item]
                       3) == {"units": [70]}


def test_a_best_trial_on_an_edge_gets_a_second_round_beyond_it(tmp_path: Path, pool: TrialPool) -> None:
    """A two-point grid over units narrowed to [4, 8] from [2, 16]: both points are edges, so whichever wins,
    one more trial trains one grid step beyond it (2 or 16), recorded as `edge-units-1`."""
    config, ctx = stage_inputs("model.epochs=3", "search.fine.points=2", "search.fine.beyond_edges=true")
    units = _decision(Param("units", "int", 2, 16, log=True), Param("units", "int", 4, 8, log=True))
    space = FineSpace({"units": units.narrowed}, {}, (units,), 4, 3, 0)  # type: ignore[dict-item]
    reported: list[FineTrial] = []
    result = run_fine(ctx, space, WINNER, config.search.fine, workdir=tmp_path, on_trial=reported.append, pool=pool)
    grid = {t.tuned["units"]: t for t in result.trials if not t.trial_id.startswith("edge-")}
    assert sorted(grid) == [4, 8]
    [edge] = [t for t in result.trials if t.trial_id.startswith("edge-")]
    best = max(grid.values(), key=lambda t: t.score)
    assert edge.trial_id == "edge-units-1" and edge.ok
    assert edge.tuned == {"units": 16 if best.tuned["units"] == 8 else 2}
    assert edge.params == {**best.params, "units": edge.tuned["units"]}
    assert sorted(t.trial_id for t in reported[-2:]) == [COARSE_WINNER, "edge-units-1"]  # trained together


def test_revisit_options_spread_each_fixed_hyperparameter_over_its_original_range() -> None:
    dropout = Decision("dropout", Influence(0.3, 0.1, 0.5, 0.2), Param("dropout", "float", 0.0, 0.6), None, 0.54)
    optimizer = Decision("optimizer", Influence(0.1, 0.0, 0.3, 0.6), Param("optimizer", "choice",
                                                                          values=("adam", "sgd")), None, "sgd")
    lr = _decision(Param("learning_rate", "float", 1e-4, 1e-1, log=True),
                   Param("learning_rate", "float", 1e-3, 1e-2, log=True))
    space = FineSpace({"learning_rate": lr.narrowed}, {"dropout": 0.54, "optimizer": "sgd"},  # type: ignore[dict-item]
                      (lr, dropout, optimizer), 20, 5, 0)
    assert revisit_options(space, 3) == {"dropout": pytest.approx([0.0, 0.3, 0.6]), "optimizer": ["adam", "sgd"]}
    assert list(revisit_options(space, 3)) == ["dropout", "optimizer"]  # the narrowing's order: by influence


def test_no_trial_reaching_the_coarse_winner_revisits_the_fixed_values_one_at_a_time(tmp_path: Path,
                                                                                     pool: TrialPool) -> None:
    """A grid narrowed to learning rates too small to learn in 3 epochs cannot reach the coarse winner (0.01): the
    winner is trained with each other value of the first fixed hyperparameter (dropout, over its original range),
    the better of those with each other batch size; a grid that reaches the winner revisits nothing."""
    config, ctx = stage_inputs("model.epochs=3", "search.fine.points=2", "search.fine.revisit=true")
    lr = _decision(Param("learning_rate", "float", 1e-7, 1e-2, log=True),
                   Param("learning_rate", "float", 1e-7, 2e-7, log=True))
    dropout = Decision("dropout", Influence(0.2, 0.0, 0.4, 0.3), Param("dropout", "float", 0.0, 0.6), None, 0.3)
    batch = Decision("batch_size", Influence(0.1, 0.0, 0.3, 0.6), Param("batch_size", "choice", values=(32, 64)),
                     None, 64)
    space = FineSpace({"learning_rate": lr.narrowed}, {"dropout": 0.3, "batch_size": 64},  # type: ignore[dict-item]
                      (lr, dropout, batch), 20, 5, 0)
    winner_values = {**WINNER, "dropout": 0.3, "batch_size": 64}
    reported: list[FineTrial] = []
    result = run_fine(ctx, space, winner_values, config.search.fine, workdir=tmp_path, on_trial=reported.append,
                      pool=pool)
    grid = [t for t in result.trials if not t.trial_id.startswith("revisit-")]
    assert len(grid) == 2 and all(t.score < result.coarse_winner.score for t in grid)
    by_id = {t.trial_id: t for t in result.trials if t.trial_id.startswith("revisit-")}
    assert set(by_id) == {"revisit-dropout-0", "revisit-dropout-0.6", "revisit-batch_size-32"}
    for value in (0.0, 0.6):
        trial = by_id[f"revisit-dropout-{value:.3g}"]
        assert trial.ok and trial.tuned == {"dropout": value}
        assert trial.params == {**result.coarse_winner.params, "dropout": value}
    first = max([result.coarse_winner, by_id["revisit-dropout-0"], by_id["revisit-dropout-0.6"]],
                key=lambda t: t.score)
    assert by_id["revisit-batch_size-32"].params == {**first.params, "batch_size": 32}
    assert [t.trial_id for t in reported[-1:]] == ["revisit-batch_size-32"]  # each recorded as it ends

    # resumed with the last trial not recorded: the same revisit, only that trial trained again
    recorded = {t.trial_id: t for t in [*result.trials, result.coarse_winner] if t.trial_id != "revisit-batch_size-32"}
    retrained: list[FineTrial] = []
    resumed = run_fine(ctx, space, winner_values, config.search.fine, workdir=tmp_path / "resumed",
                       on_trial=retrained.append, finished=recorded, pool=pool)
    assert [t.trial_id for t in retrained] == ["revisit-batch_size-32"]
    assert [t.trial_id for t in resumed.trials] == [t.trial_id for t in result.trials]

    reachable = dataclasses.replace(space, tuned={"learning_rate": Param("learning_rate", "float", 0.01, 0.02)})
    again = run_fine(ctx, reachable, winner_values, config.search.fine, workdir=tmp_path / "again", pool=pool)
    assert max(t.score for t in again.trials) >= again.coarse_winner.score
    assert not any(t.trial_id.startswith("revisit-") for t in again.trials)


def test_a_revisited_scaling_trains_on_the_split_scaled_its_way(tmp_path: Path, pool: TrialPool) -> None:
    """Scaling sampled by the coarse stage (not compared) and fixed by the narrowing: the revisit's trial with the
    other scaling has its split scaled that way, prepared before the stage."""
    config, ctx = stage_inputs("model.epochs=2", "search.fine.points=2", "search.fine.revisit=true")
    lr = _decision(Param("learning_rate", "float", 1e-7, 1e-2, log=True),
                   Param("learning_rate", "float", 1e-7, 2e-7, log=True))
    scaling = Decision("scaling", Influence(0.1, 0.0, 0.3, 0.6),
                       Param("scaling", "choice", values=("standard", "quantile")), None, "standard")
    space = FineSpace({"learning_rate": lr.narrowed}, {"scaling": "standard"},  # type: ignore[dict-item]
                      (lr, scaling), 20, 5, 0)
    result = run_fine(ctx, space, {**WINNER, "scaling": "standard"}, config.search.fine, workdir=tmp_path, pool=pool)
    [revisited] = [t for t in result.trials if t.trial_id.startswith("revisit-")]
    assert revisited.trial_id == "revisit-scaling-quantile" and revisited.ok
    assert revisited.params == {**result.coarse_winner.params, "scaling": "quantile"}
    assert revisited.curves["val_loss"] != result.coarse_winner.curves["val_loss"]
