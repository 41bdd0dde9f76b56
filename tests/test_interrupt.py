"""Interrupting a real search (SIGINT / SIGTERM) and resuming it, with real processes and a real store.

A search runs as `python -m searchlab ...` in a subprocess; the test polls its SQLite store
with an `MlflowClient` and signals the process once enough trials are recorded. The data
set is a small synthetic 3-class table: it does not matter here, and the binary task is
broken in the fine stage (see `tests/test_robustness.py::test_binary_task_search_finishes`).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from searchlab.space import Param
from searchlab.tracking import Tracker

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "searchlab"
ARGS = ("experiment=smoke", "dataset=synthetic", "dataset.n_samples=300", "dataset.n_classes=3",
        "tracking.log_model=false", "verbose=0")
COARSE_TRIALS = "tags.`searchlab.run` = 'trial' and tags.`searchlab.stage` = 'coarse'"
FINE_TRIALS = "tags.`searchlab.run` = 'trial' and tags.`searchlab.stage` = 'fine'"
SEARCH_TIMEOUT = 600  # a whole smoke search takes ~1 min on 2 busy cores


# -- helpers ------------------------------------------------------------------------------------


def new_store(tmp_path: Path, name: str) -> tuple[str, MlflowClient, str]:
    """A SQLite store with the experiment already created, so polling never races the schema set-up."""
    uri = f"sqlite:///{tmp_path / name / 'mlflow.db'}"
    tracker = Tracker(uri, EXPERIMENT)
    return uri, tracker.client, tracker.experiment_id


@contextmanager
def search_process(tmp_path: Path, name: str, *overrides: str) -> Iterator[subprocess.Popen[bytes]]:
    """A search running in the background; killed at the end if it is still alive."""
    with open(tmp_path / f"{name}.out", "wb") as out, open(tmp_path / f"{name}.err", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "searchlab", *ARGS, *overrides], cwd=ROOT,
                                stdout=out, stderr=err)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def output(tmp_path: Path, name: str) -> str:
    return ((tmp_path / f"{name}.out").read_text(errors="replace") + "\n--- stderr\n"
            + (tmp_path / f"{name}.err").read_text(errors="replace"))


def runs(client: MlflowClient, experiment_id: str, query: str = "") -> list[Run]:
    return client.search_runs([experiment_id], query, max_results=1000)


def wait_until(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, timeout: float = 300) -> None:
    """Poll `ready` every 0.5 s; fail if the search ends (or the time runs out) first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            pytest.fail(f"the search ended (exit {proc.returncode}) before {what}")
        time.sleep(0.5)
    pytest.fail(f"no {what} after {timeout} s")


def interrupt(proc: subprocess.Popen[bytes], signum: int) -> int:
    proc.send_signal(signum)
    return proc.wait(timeout=120)


def run_search(tmp_path: Path, name: str, *overrides: str) -> int:
    with open(tmp_path / f"{name}.out", "wb") as out, open(tmp_path / f"{name}.err", "wb") as err:
        return subprocess.run([sys.executable, "-m", "searchlab", *ARGS, *overrides], cwd=ROOT, stdout=out,
                              stderr=err, timeout=SEARCH_TIMEOUT).returncode


def one(found: list[Run]) -> Run:
    assert len(found) == 1, [r.info.run_name for r in found]
    return found[0]


def stage_run(client: MlflowClient, experiment_id: str, stage: str) -> Run:
    return one(runs(client, experiment_id, f"tags.`searchlab.run` = 'stage' and tags.`searchlab.stage` = '{stage}'"))


def assert_ended_killed(client: MlflowClient, experiment_id: str, killed_stages: list[str]) -> str:
    """After an interruption: nothing RUNNING, the search and the open stage KILLED; returns the search id."""
    every = runs(client, experiment_id)
    assert not [r.info.run_name for r in every if r.info.status == "RUNNING"]
    search = one(runs(client, experiment_id, "tags.`searchlab.run` = 'search'"))
    assert search.info.status == "KILLED"
    for stage in killed_stages:
        assert stage_run(client, experiment_id, stage).info.status == "KILLED"
    return search.info.run_id


def assert_all_ended(client: MlflowClient, experiment_id: str) -> None:
    statuses = {r.info.run_name: r.info.status for r in runs(client, experiment_id)}
    assert set(statuses.values()) <= {"FINISHED", "FAILED"}, statuses


def by_tag(found: list[Run], tag: str) -> dict[str, Run]:
    """Runs keyed by a tag's value; fails on duplicates."""
    keyed: dict[str, Run] = {}
    for run in found:
        value = run.data.tags[tag]
        assert value not in keyed, f"two runs for {tag}={value}"
        keyed[value] = run
    return keyed


def read_json(uri: str, run_id: str, path: str, tmp_path: Path) -> dict[str, Any]:
    dst = tmp_path / "downloads" / run_id
    dst.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=uri,
                                                dst_path=str(dst))
    return dict(json.loads(Path(local).read_text()))


def decisions(uri: str, run_id: str, tmp_path: Path) -> list[str]:
    """The narrowing decisions (`kept ...` / `fixed at ...`) of a search, influence shares left out:
    those are computed from the scores, which may drift in their last digits between two runs."""
    dst = tmp_path / "downloads" / f"{run_id}-narrowing"
    dst.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="narrowing.md", tracking_uri=uri,
                                                dst_path=str(dst))
    lines = [line for line in Path(local).read_text().splitlines() if "kept" in line or "fixed at" in line]
    return sorted(re.sub(r"explains \d+% of the score variance", "explains ?%", line) for line in lines)


def grid_size(space: dict[str, Any], points: int) -> int:
    """Trials a grid fine stage runs over `space.json`'s tuned part."""
    size = 1
    for name, spec in space["tuned"].items():
        param = Param(name, spec["type"], spec.get("low", 0.0), spec.get("high", 0.0), spec.get("log", False),
                      tuple(spec.get("values", ())))
        size *= len(param.grid(points))
    return size


# -- tests --------------------------------------------------------------------------------------


def test_sigint_in_coarse_then_resume_matches_an_uninterrupted_search(tmp_path: Path) -> None:
    n_iter = 8
    uri, client, exp = new_store(tmp_path, "interrupted")
    overrides = (f"search.coarse.n_iter={n_iter}", f"tracking.uri={uri}")

    with search_process(tmp_path, "first", *overrides) as proc:
        wait_until(proc, lambda: len(runs(client, exp, COARSE_TRIALS)) >= 2, "two coarse trial runs")
        code = interrupt(proc, signal.SIGINT)
    log = output(tmp_path, "first")
    assert code == 130, log
    assert "resume=" in (tmp_path / "first.err").read_text(), log
    assert "Traceback" not in log
    search_id = assert_ended_killed(client, exp, ["coarse"])
    assert not runs(client, exp, "tags.`searchlab.stage` = 'fine'"), "interrupted in coarse: no fine runs yet"
    before = by_tag(runs(client, exp, COARSE_TRIALS), "searchlab.candidate")
    assert 2 <= len(before) < n_iter
    assert {r.info.status for r in before.values()} <= {"FINISHED", "FAILED"}

    assert run_search(tmp_path, "resumed", *overrides, "resume=last") == 0, output(tmp_path, "resumed")
    resumed_search = one(runs(client, exp, "tags.`searchlab.run` = 'search'"))
    assert resumed_search.info.run_id == search_id
    assert resumed_search.info.status == "FINISHED"
    coarse = by_tag(runs(client, exp, COARSE_TRIALS), "searchlab.candidate")
    assert sorted(coarse, key=int) == [str(i) for i in range(n_iter)]
    for candidate, old in before.items():  # reused, not trained again
        assert coarse[candidate].info.run_id == old.info.run_id
        assert coarse[candidate].info.end_time == old.info.end_time
    assert_all_ended(client, exp)

    # The same search, never interrupted, into a fresh store.
    fresh_uri, fresh_client, fresh_exp = new_store(tmp_path, "fresh")
    assert run_search(tmp_path, "fresh", f"search.coarse.n_iter={n_iter}", f"tracking.uri={fresh_uri}") == 0, \
        output(tmp_path, "fresh")
    fresh_search = one(runs(fresh_client, fresh_exp, "tags.`searchlab.run` = 'search'"))
    fresh_coarse = by_tag(runs(fresh_client, fresh_exp, COARSE_TRIALS), "searchlab.candidate")
    assert sorted(fresh_coarse) == sorted(coarse)
    for candidate in coarse:
        assert coarse[candidate].data.params == fresh_coarse[candidate].data.params, candidate

    drift = {c: abs(coarse[c].data.metrics["cv_score_mean"] - fresh_coarse[c].data.metrics["cv_score_mean"])
             for c in coarse if "cv_score_mean" in coarse[c].data.metrics}
    print(f"\ncoarse cv_score_mean drift, resumed vs uninterrupted: max {max(drift.values()):.6f}; "
          + ", ".join(f"#{c}: {d:.4f}" for c, d in sorted(drift.items(), key=lambda item: int(item[0]))))
    assert max(drift.values()) < 0.05

    resumed_fine_stage = stage_run(client, exp, "fine").info.run_id
    fresh_fine_stage = stage_run(fresh_client, fresh_exp, "fine").info.run_id
    assert (read_json(uri, resumed_fine_stage, "space.json", tmp_path)
            == read_json(fresh_uri, fresh_fine_stage, "space.json", tmp_path))
    assert decisions(uri, search_id, tmp_path) == decisions(fresh_uri, fresh_search.info.run_id, tmp_path)

    def fine_params(c: MlflowClient, e: str) -> set[frozenset[tuple[str, str]]]:
        return {frozenset(r.data.params.items()) for r in runs(c, e, FINE_TRIALS)}

    assert fine_params(client, exp) == fine_params(fresh_client, fresh_exp)


def test_sigint_in_fine_then_resume_reuses_finished_fine_trials(tmp_path: Path) -> None:
    points = 3
    uri, client, exp = new_store(tmp_path, "interrupted")
    overrides = (f"search.fine.points={points}", f"tracking.uri={uri}")

    with search_process(tmp_path, "first", *overrides) as proc:
        wait_until(proc, lambda: bool(runs(client, exp, FINE_TRIALS)), "a fine trial run")
        code = interrupt(proc, signal.SIGINT)
    log = output(tmp_path, "first")
    assert code == 130, log
    assert "resume=" in (tmp_path / "first.err").read_text(), log
    search_id = assert_ended_killed(client, exp, ["fine"])
    assert stage_run(client, exp, "coarse").info.status == "FINISHED"
    coarse_before = {r.info.run_id for r in runs(client, exp, COARSE_TRIALS)}
    before = by_tag(runs(client, exp, FINE_TRIALS), "searchlab.trial_id")
    assert before

    assert run_search(tmp_path, "resumed", *overrides, "resume=last") == 0, output(tmp_path, "resumed")
    search = one(runs(client, exp, "tags.`searchlab.run` = 'search'"))
    assert search.info.run_id == search_id and search.info.status == "FINISHED"
    assert {r.info.run_id for r in runs(client, exp, COARSE_TRIALS)} == coarse_before
    fine = by_tag(runs(client, exp, FINE_TRIALS), "searchlab.trial_id")  # fails on a duplicated trial id
    for trial_id, old in before.items():
        assert fine[trial_id].info.run_id == old.info.run_id
        assert fine[trial_id].info.end_time == old.info.end_time
    space = read_json(uri, stage_run(client, exp, "fine").info.run_id, "space.json", tmp_path)
    assert len(fine) == grid_size(space, points) + 1, sorted(fine)  # the whole grid + the coarse winner
    params = [frozenset(r.data.params.items()) for tid, r in fine.items() if tid != "coarse-winner"]
    assert len(set(params)) == len(params), "a grid point was trained twice"
    assert_all_ended(client, exp)


def test_sigterm_ends_runs_killed(tmp_path: Path) -> None:
    uri, client, exp = new_store(tmp_path, "store")
    with search_process(tmp_path, "first", f"tracking.uri={uri}") as proc:
        wait_until(proc, lambda: bool(runs(client, exp, "tags.`searchlab.stage` = 'coarse'")), "the coarse stage run")
        time.sleep(2)  # into the training proper
        code = interrupt(proc, signal.SIGTERM)
    log = output(tmp_path, "first")
    assert code == 130, log
    assert "resume=" in (tmp_path / "first.err").read_text(), log
    assert "Traceback" not in log
    assert_ended_killed(client, exp, ["coarse"])
