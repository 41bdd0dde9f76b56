"""Interrupting a real search (SIGINT / SIGTERM) and resuming it, with real processes and a real store.

A search runs as `python -m searchlab ...` in a subprocess; the test polls its SQLite store
with an `MlflowClient` and signals the process once enough trials are recorded. Those tests are
`slow` (three fixtures of one to three searches each); one fast test checks the read-back that
resuming relies on. The data set is a small synthetic 3-class table: it does not matter here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from joblib.externals.loky.process_executor import ShutdownExecutorError
from mlflow import MlflowClient
from mlflow.entities import Run

from searchlab import fine
from searchlab.config import Config
from searchlab.tracking import RUN_TAG, STAGE_TAG, Tracker
from tests.conftest import Store, grid_size, new_store

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "searchlab"
ARGS = ("experiment=smoke", "dataset=synthetic", "dataset.n_samples=300", "dataset.n_classes=3",
        "tracking.log_model=false", "verbose=0")
COARSE_TRIALS = "tags.`searchlab.run` = 'trial' and tags.`searchlab.stage` = 'coarse'"
FINE_TRIALS = "tags.`searchlab.run` = 'trial' and tags.`searchlab.stage` = 'fine'"
# A trial run is visible from its creation; one still being written when the signal lands is deleted,
# so the tests wait for trial runs that have ended before they interrupt.
ENDED = " and attributes.status != 'RUNNING'"
SEARCH_TIMEOUT = 600  # a whole smoke search takes ~1 min on 2 busy cores


# -- helpers ------------------------------------------------------------------------------------


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
    return sorted(re.sub(r"explains \d+% of the score ranks' variance", "explains ?%", line) for line in lines)


# -- tests --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoarseResume:
    """A search interrupted (SIGINT) in its coarse stage and resumed, plus the same search uninterrupted."""

    tmp: Path
    store: Store
    fresh: Store
    n_iter: int
    interrupt_code: int
    interrupt_log: str
    interrupt_stderr: str
    after_interrupt: list[Run]  # every run, read right after the interrupted process ended
    resume_code: int
    resume_log: str
    fresh_code: int
    fresh_log: str


@pytest.fixture(scope="module")
def coarse_resume(tmp_path_factory: pytest.TempPathFactory) -> CoarseResume:
    tmp = tmp_path_factory.mktemp("coarse-resume")
    n_iter = 8
    store = new_store(tmp / "interrupted")
    overrides = (f"search.coarse.n_iter={n_iter}", f"tracking.uri={store.uri}")
    with search_process(tmp, "first", *overrides) as proc:
        wait_until(proc, lambda: len(store.runs(COARSE_TRIALS + ENDED)) >= 2, "two ended coarse trial runs")
        interrupt_code = interrupt(proc, signal.SIGINT)
    after_interrupt = store.runs()
    resume_code = run_search(tmp, "resumed", *overrides, "resume=last")
    fresh = new_store(tmp / "fresh")
    fresh_code = run_search(tmp, "fresh", f"search.coarse.n_iter={n_iter}", f"tracking.uri={fresh.uri}")
    return CoarseResume(tmp, store, fresh, n_iter, interrupt_code, output(tmp, "first"),
                        (tmp / "first.err").read_text(), after_interrupt, resume_code, output(tmp, "resumed"),
                        fresh_code, output(tmp, "fresh"))


def _coarse_trials(found: list[Run]) -> dict[str, Run]:
    trials = [r for r in found if r.data.tags.get("searchlab.run") == "trial"
              and r.data.tags.get("searchlab.stage") == "coarse"]
    return by_tag(trials, "searchlab.candidate")


@pytest.mark.slow
def test_sigint_in_coarse_ends_every_open_run_killed(coarse_resume: CoarseResume) -> None:
    r = coarse_resume
    assert r.interrupt_code == 130, r.interrupt_log
    assert "resume=" in r.interrupt_stderr, r.interrupt_log
    assert "Traceback" not in r.interrupt_log
    statuses = {run.info.run_name: run.info.status for run in r.after_interrupt}
    assert "RUNNING" not in statuses.values(), statuses
    by_role = {(run.data.tags.get("searchlab.run"), run.data.tags.get("searchlab.stage")): run.info.status
               for run in r.after_interrupt if run.data.tags.get("searchlab.run") != "trial"}
    assert by_role == {("search", None): "KILLED", ("stage", "coarse"): "KILLED"}, statuses  # no fine stage yet
    trials = _coarse_trials(r.after_interrupt)
    assert 2 <= len(trials) < r.n_iter
    assert {run.info.status for run in trials.values()} <= {"FINISHED", "FAILED"}


@pytest.mark.slow
def test_resume_after_coarse_sigint_reuses_finished_trials(coarse_resume: CoarseResume) -> None:
    r = coarse_resume
    assert r.resume_code == 0, r.resume_log
    killed_search = one([run for run in r.after_interrupt if run.data.tags.get("searchlab.run") == "search"])
    search = one(r.store.runs("tags.`searchlab.run` = 'search'"))
    assert search.info.run_id == killed_search.info.run_id
    assert search.info.status == "FINISHED"
    before = _coarse_trials(r.after_interrupt)
    coarse = by_tag(r.store.runs(COARSE_TRIALS), "searchlab.candidate")  # fails on a duplicated candidate
    assert sorted(coarse, key=int) == [str(i) for i in range(r.n_iter)]
    for candidate, old in before.items():  # reused, not trained again
        assert coarse[candidate].info.run_id == old.info.run_id
        assert coarse[candidate].info.end_time == old.info.end_time
    assert_all_ended(r.store.client, r.store.experiment_id)


@pytest.mark.slow
def test_resumed_coarse_candidates_match_an_uninterrupted_search(coarse_resume: CoarseResume) -> None:
    r = coarse_resume
    assert r.resume_code == 0 and r.fresh_code == 0, r.resume_log + r.fresh_log
    coarse = by_tag(r.store.runs(COARSE_TRIALS), "searchlab.candidate")
    fresh = by_tag(r.fresh.runs(COARSE_TRIALS), "searchlab.candidate")
    assert sorted(coarse) == sorted(fresh)
    for candidate in coarse:
        assert coarse[candidate].data.params == fresh[candidate].data.params, candidate

    drift = {c: abs(coarse[c].data.metrics["cv_score_mean"] - fresh[c].data.metrics["cv_score_mean"])
             for c in coarse if "cv_score_mean" in coarse[c].data.metrics and "cv_score_mean" in fresh[c].data.metrics}
    print(f"\ncoarse cv_score_mean drift, resumed vs uninterrupted: max {max(drift.values()):.6f} ("
          + ", ".join(f"#{c}: {d:.4f}" for c, d in sorted(drift.items(), key=lambda item: int(item[0]))) + ")")
    assert max(drift.values()) < 0.05

    search = one(r.store.runs("tags.`searchlab.run` = 'search'")).info.run_id
    fresh_search = one(r.fresh.runs("tags.`searchlab.run` = 'search'")).info.run_id
    assert decisions(r.store.uri, search, r.tmp) == decisions(r.fresh.uri, fresh_search, r.tmp)


@pytest.mark.slow
def test_resumed_narrowing_and_fine_grid_match_an_uninterrupted_search(coarse_resume: CoarseResume) -> None:
    r = coarse_resume
    assert r.resume_code == 0 and r.fresh_code == 0, r.resume_log + r.fresh_log
    space = read_json(r.store.uri, stage_run(r.store.client, r.store.experiment_id, "fine").info.run_id,
                      "space.json", r.tmp)
    fresh_space = read_json(r.fresh.uri, stage_run(r.fresh.client, r.fresh.experiment_id, "fine").info.run_id,
                            "space.json", r.tmp)
    fine = {frozenset(run.data.params.items()) for run in r.store.runs(FINE_TRIALS)}
    fresh_fine = {frozenset(run.data.params.items()) for run in r.fresh.runs(FINE_TRIALS)}
    assert space == fresh_space
    assert fine == fresh_fine


def test_stopping_kills_the_running_trial_without_waiting_for_it() -> None:
    """A stop (Ctrl-C, SIGTERM, the search's end) ends the trial worker at once. With loky's default
    size, the stop used to resize the one-worker executor first, and a resize waits for the running job."""
    worker = fine.trial_worker()
    worker.submit(os.getpid).result()  # the worker process is up
    trial = worker.submit(time.sleep, 120)  # stands in for a long trial
    time.sleep(1)
    fine.stop_training()
    with pytest.raises(ShutdownExecutorError):  # killed; the old stop returned None after 120 s
        trial.result(timeout=60)


def test_resume_reads_back_the_exact_coarse_values(tmp_path: Path, make_config: Callable[..., Config]) -> None:
    """The cause of the test above, without training: a coarse trial logged the way the pipeline logs it
    comes back from `read_progress` with its float values rounded to 6 significant digits."""
    from searchlab.resume import CANDIDATE_TAG, read_progress  # loads TensorFlow (via searchlab.coarse)

    space = make_config("experiment=smoke").coarse_space()
    rng = np.random.RandomState(0)
    params = {name: param.cast(param.distribution().rvs(random_state=rng)) if param.is_numeric else param.values[-1]
              for name, param in space.items()}
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", EXPERIMENT)
    search = tracker.start_run("search", {RUN_TAG: "search"})
    stage = tracker.start_run("coarse", {RUN_TAG: "stage", STAGE_TAG: "coarse"}, parent=search)
    now = time.time()
    tracker.log_trial(stage, "coarse-000", {RUN_TAG: "trial", STAGE_TAG: "coarse", CANDIDATE_TAG: "0"}, params,
                      {"cv_score_fold_0": 0.5, "cv_score_fold_1": 0.7}, {}, now - 1, now)
    tracker.end_all("KILLED")
    progress = read_progress(tracker, search, space)
    assert progress.coarse[0].fold_scores == (0.5, 0.7)
    assert progress.coarse[0].params == params


@dataclass(frozen=True)
class FineResume:
    """A search interrupted (SIGINT) in its fine stage, then resumed."""

    tmp: Path
    store: Store
    points: int
    interrupt_code: int
    interrupt_log: str
    interrupt_stderr: str
    after_interrupt: list[Run]
    resume_code: int
    resume_log: str


@pytest.fixture(scope="module")
def fine_resume(tmp_path_factory: pytest.TempPathFactory) -> FineResume:
    tmp = tmp_path_factory.mktemp("fine-resume")
    points = 3  # with max_params=2 from the smoke preset: up to 9 grid trials, time to interrupt
    store = new_store(tmp / "interrupted")
    overrides = (f"search.fine.points={points}", f"tracking.uri={store.uri}")
    with search_process(tmp, "first", *overrides) as proc:
        wait_until(proc, lambda: bool(store.runs(FINE_TRIALS + ENDED)), "an ended fine trial run")
        interrupt_code = interrupt(proc, signal.SIGINT)
    after_interrupt = store.runs()
    resume_code = run_search(tmp, "resumed", *overrides, "resume=last")
    return FineResume(tmp, store, points, interrupt_code, output(tmp, "first"), (tmp / "first.err").read_text(),
                      after_interrupt, resume_code, output(tmp, "resumed"))


def _fine_trials(found: list[Run]) -> dict[str, Run]:
    trials = [r for r in found if r.data.tags.get("searchlab.run") == "trial"
              and r.data.tags.get("searchlab.stage") == "fine"]
    return by_tag(trials, "searchlab.trial_id")


@pytest.mark.slow
def test_sigint_in_fine_ends_every_open_run_killed(fine_resume: FineResume) -> None:
    r = fine_resume
    assert r.interrupt_code == 130, r.interrupt_log
    assert "resume=" in r.interrupt_stderr, r.interrupt_log
    assert "Traceback" not in r.interrupt_log
    statuses = {run.info.run_name: run.info.status for run in r.after_interrupt}
    assert "RUNNING" not in statuses.values(), statuses
    by_role = {(run.data.tags.get("searchlab.run"), run.data.tags.get("searchlab.stage")): run.info.status
               for run in r.after_interrupt if run.data.tags.get("searchlab.run") != "trial"}
    assert by_role == {("search", None): "KILLED", ("stage", "coarse"): "FINISHED",
                       ("stage", "fine"): "KILLED"}, statuses
    assert _fine_trials(r.after_interrupt)


@pytest.mark.slow
def test_resume_after_fine_sigint_reuses_finished_fine_trials(fine_resume: FineResume) -> None:
    r = fine_resume
    assert r.resume_code == 0, r.resume_log
    killed = one([run for run in r.after_interrupt if run.data.tags.get("searchlab.run") == "search"])
    search = one(r.store.runs("tags.`searchlab.run` = 'search'"))
    assert search.info.run_id == killed.info.run_id and search.info.status == "FINISHED"
    assert ({run.info.run_id for run in r.store.runs(COARSE_TRIALS)}
            == {run.info.run_id for run in r.after_interrupt if run.data.tags.get("searchlab.stage") == "coarse"
                and run.data.tags.get("searchlab.run") == "trial"})
    before = _fine_trials(r.after_interrupt)
    fine = by_tag(r.store.runs(FINE_TRIALS), "searchlab.trial_id")  # fails on a duplicated trial id
    for trial_id, old in before.items():
        assert fine[trial_id].info.run_id == old.info.run_id
        assert fine[trial_id].info.end_time == old.info.end_time
    space = read_json(r.store.uri, stage_run(r.store.client, r.store.experiment_id, "fine").info.run_id,
                      "space.json", r.tmp)
    assert len(fine) == grid_size(space, r.points) + 1, sorted(fine)  # the whole grid + the coarse winner
    params = [frozenset(run.data.params.items()) for tid, run in fine.items() if tid != "coarse-winner"]
    assert len(set(params)) == len(params), "a grid point was trained twice"
    assert_all_ended(r.store.client, r.store.experiment_id)


@pytest.mark.slow
def test_resume_of_the_fine_stage_leaves_no_run_running(fine_resume: FineResume) -> None:
    """After the resume, no run is left RUNNING and the search run is not left KILLED-and-lost."""
    r = fine_resume
    statuses = {run.info.run_name: run.info.status for run in r.store.runs()}
    assert "RUNNING" not in statuses.values(), statuses
    search = one(r.store.runs("tags.`searchlab.run` = 'search'"))
    assert search.info.status in {"FINISHED", "FAILED"}, statuses


@pytest.mark.slow
def test_sigterm_ends_runs_killed(tmp_path: Path) -> None:
    store = new_store(tmp_path / "store")
    uri, client, exp = store.uri, store.client, store.experiment_id
    with search_process(tmp_path, "first", f"tracking.uri={uri}") as proc:
        wait_until(proc, lambda: bool(runs(client, exp, "tags.`searchlab.stage` = 'coarse'")), "the coarse stage run")
        time.sleep(2)  # into the training proper
        code = interrupt(proc, signal.SIGTERM)
    log = output(tmp_path, "first")
    assert code == 130, log
    assert "resume=" in (tmp_path / "first.err").read_text(), log
    assert "Traceback" not in log
    assert_ended_killed(client, exp, ["coarse"])
