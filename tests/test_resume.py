"""Resuming: a search interrupted in its coarse stage, resumed, interrupted again in its fine stage and resumed
to the end, in-process with a real store. Each resume runs the same code as a new search from the first step
not yet done, and replays what the store holds instead of training it again.

Ctrl-C reaches the search as a KeyboardInterrupt raised in a callback; how the command line turns SIGINT and
SIGTERM into that is checked in tests/test_cli.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from searchlab import pipeline
from searchlab.callbacks import SearchCallback, TrialEnd
from searchlab.config import compose
from searchlab.errors import SearchInterrupted
from searchlab.fine import settling_trials
from searchlab.records import RUN_TAG, STAGE_TAG, fine_label, resumed_config
from tests.conftest import TINY, Store, grid_size, new_store

pytestmark = pytest.mark.slow


class InterruptAfter(SearchCallback):
    """Ctrl-C, as the search process sees it, after `count` trials of `stage`; records the trials it saw."""

    def __init__(self, stage: str, count: int) -> None:
        self.stage, self.count = stage, count
        self.trials: list[TrialEnd] = []

    def on_trial_end(self, trial: TrialEnd) -> None:
        self.trials.append(trial)
        if trial.stage == self.stage:
            self.count -= 1
            if self.count == 0:
                raise KeyboardInterrupt


def _statuses(store: Store) -> dict[tuple[str | None, str | None], str]:
    return {(r.data.tags.get(RUN_TAG), r.data.tags.get(STAGE_TAG)): r.info.status for r in store.runs()
            if r.data.tags.get(RUN_TAG) != "trial"}


def _trial_runs(store: Store, stage: str, key: str) -> dict[str, str]:
    """Trial run ids by candidate number or trial id; fails on a trial recorded twice."""
    found: dict[str, str] = {}
    for run in store.runs(f"tags.`{RUN_TAG}` = 'trial' and tags.`{STAGE_TAG}` = '{stage}'"):
        assert run.data.tags[key] not in found, f"{stage} trial {run.data.tags[key]} recorded twice"
        found[run.data.tags[key]] = run.info.run_id
    return found


@dataclass(frozen=True)
class Resumed:
    store: Store
    run_id: str
    message: str
    after_coarse_stop: dict[str, object]  # what the store held after each interruption
    after_fine_stop: dict[str, object]
    second: InterruptAfter  # what the first resume trained
    last: InterruptAfter  # what the second resume trained
    result: pipeline.SearchResult


N_ITER = 4
CAPPED = ("search.coarse.epochs=4",)  # the sampled candidates' fits capped: the better half is cross-validated again
N_PROMOTED = 2
PAIRED = ("search.coarse.paired.scaling=[standard,quantile]",)  # two more coarse candidates: the winner with each
N_COARSE = N_ITER + N_PROMOTED + 2


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> Resumed:
    store = new_store(tmp_path_factory.mktemp("store"))
    overrides = (*TINY, *PAIRED, *CAPPED, f"search.coarse.n_iter={N_ITER}", "search.fine.points=2", f"tracking.uri={store.uri}")

    def snapshot() -> dict[str, object]:
        return {"statuses": _statuses(store), "all": {r.info.status for r in store.runs()},
                "coarse": _trial_runs(store, "coarse", "searchlab.candidate"),
                "fine": _trial_runs(store, "fine", "searchlab.trial_id")}

    with pytest.raises(SearchInterrupted) as interrupted:
        pipeline.run(compose(*overrides), callbacks=[InterruptAfter("coarse", N_COARSE - 1)])  # in the comparison
    after_coarse_stop = snapshot()
    second = InterruptAfter("fine", 1)
    with pytest.raises(SearchInterrupted):
        pipeline.run(resumed_config(compose(*overrides, "resume=last")), callbacks=[second])
    after_fine_stop = snapshot()
    last = InterruptAfter("none", 0)
    result = pipeline.run(resumed_config(compose(*overrides, "resume=last")), callbacks=[last])
    return Resumed(store, interrupted.value.run_id, str(interrupted.value), after_coarse_stop, after_fine_stop,
                   second, last, result)


def test_an_interrupted_search_ends_its_open_runs_killed_and_says_how_to_resume(resumed: Resumed) -> None:
    assert f"resume={resumed.run_id}" in resumed.message
    assert resumed.after_coarse_stop["statuses"] == {("search", None): "KILLED", ("stage", "coarse"): "KILLED"}
    assert "RUNNING" not in resumed.after_coarse_stop["all"]  # type: ignore[operator]
    assert len(resumed.after_coarse_stop["coarse"]) == N_COARSE - 1  # type: ignore[arg-type]
    assert resumed.after_fine_stop["statuses"] == {("search", None): "KILLED", ("stage", "coarse"): "FINISHED",
                                                   ("stage", "fine"): "KILLED"}
    assert "RUNNING" not in resumed.after_fine_stop["all"]  # type: ignore[operator]


def test_resuming_the_coarse_stage_trains_only_the_missing_candidates(resumed: Resumed) -> None:
    """Interrupted in the paired comparison: the sampled and promoted candidates and the comparison's first are
    replayed."""
    before: dict[str, str] = resumed.after_coarse_stop["coarse"]  # type: ignore[assignment]
    after = _trial_runs(resumed.store, "coarse", "searchlab.candidate")
    assert sorted(after, key=int) == [str(i) for i in range(N_COARSE)]
    assert all(after[c] == run_id for c, run_id in before.items())  # reused, not trained again
    assert [t.label for t in resumed.second.trials if t.stage == "coarse"] == [
        f"coarse-{i:03d}" for i in range(N_COARSE) if str(i) not in before]
    assert not [t for t in resumed.last.trials if t.stage == "coarse"]


def test_resuming_the_fine_stage_trains_the_rest_of_the_grid_once(resumed: Resumed) -> None:
    before: dict[str, str] = resumed.after_fine_stop["fine"]  # type: ignore[assignment]
    assert len(before) == 1
    after = _trial_runs(resumed.store, "fine", "searchlab.trial_id")
    assert all(after[t] == run_id for t, run_id in before.items())
    result = resumed.result
    space = {"tuned": {n: p.as_dict() for n, p in result.fine_space.tuned.items()}}
    grid = [t for t in after if not t.startswith("edge-")]
    # the whole grid, each point once, + the coarse winner and the trials settling a near tie of the comparison
    assert len(grid) == grid_size(space, 2) + 1 + settling_trials(result.fine_space)
    assert len({frozenset(t.tuned.items()) for t in result.fine.trials}) == len(result.fine.trials)
    trained_last = {t.label for t in resumed.last.trials if t.stage != "confirm"}  # re-scoring is not a trial
    assert not trained_last & {fine_label(t) for t in before}  # replayed, not trained again
    assert trained_last | {fine_label(t) for t in before} == {fine_label(t) for t in after}


def test_the_resumed_search_finishes_as_one_search(resumed: Resumed, tmp_path: Path) -> None:
    assert resumed.result.run_id == resumed.run_id
    assert set(_statuses(resumed.store).values()) == {"FINISHED"}
    assert "RUNNING" not in {r.info.status for r in resumed.store.runs()}
    assert len(resumed.store.runs(f"tags.`{RUN_TAG}` = 'search'")) == 1
