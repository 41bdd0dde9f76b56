"""The fine stage on KerasTuner's distributed mode (`searchlab.infra.tuner_workers`): the search process is the
chief, with real worker processes on 127.0.0.1.

Two small searches, one per way of starting the workers. With `search.fine.workers=2` the search starts
its own two; one is killed while it trains its first trial and must be restarted, losing no trial. With
`start_workers=false`, two `searchlab-worker` processes this module starts serve it. Each must write the run
tree of a local search: every trial of the grid over its logged fine space exactly once under the one fine
stage run, logged by both workers. Both searches see the same coarse results, so they run the same trials.
No process may outlive a search.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from mlflow.entities import Run

from searchlab import pipeline
from searchlab.config import compose
from searchlab.errors import SearchInterrupted
from searchlab.infra.tracking_server import free_port
from searchlab.records import RUN_TAG, STAGE_TAG, TRIAL_ID_TAG, WORKER_TAG, read_fine_trials
from searchlab.tracking import Tracker
from searchlab.trials import EDGE_PREFIX
from tests.conftest import Store, grid_size, new_store

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

POINTS = 2
# A grid of 2 points on each of the 2 hyperparameters kept: 4 trials (a choice may add a value).
OVERRIDES = ("experiment=smoke", "dataset=synthetic", "dataset.n_samples=200", "search.coarse.n_iter=2",
             "search.coarse.n_jobs=1", "search.coarse.paired.scaling=null", "model.epochs=3",
             "search.fine.max_params=2", f"search.fine.points={POINTS}", "tracking.log_model=false", "verbose=0",
             "search.fine.beyond_edges=false", "search.fine.confirm_top=0")
FINE_TRIALS = f"tags.`{RUN_TAG}` = 'trial' and tags.`{STAGE_TAG}` = 'fine'"
TIMEOUT = 600


def read_proc(pid: int | str, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:  # gone meanwhile, or not ours
        return b""


def processes_of(tmp_path: Path, port: int) -> list[int]:
    """Pids of the live processes of a search under `tmp_path` with its oracle on `port`: workers name the
    directory on their command line; their training processes inherit `KERASTUNER_ORACLE_PORT`."""
    variable = f"KERASTUNER_ORACLE_PORT={port}".encode()
    return [int(proc.name) for proc in Path("/proc").glob("[0-9]*")
            if (str(tmp_path).encode() in read_proc(proc.name, "cmdline")
                or variable in read_proc(proc.name, "environ").split(b"\0"))
            and not read_proc(proc.name, "stat").split(b") ")[-1].startswith(b"Z")]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@dataclass(frozen=True)
class Searched:
    """A finished search, its store, and the search's processes still alive a few seconds after it ended."""

    result: pipeline.SearchResult
    store: Store
    leftovers: list[int]

    def fine_stage(self) -> Run:
        stages = self.store.runs(f"tags.`{RUN_TAG}` = 'stage' and tags.`{STAGE_TAG}` = 'fine'")
        assert len(stages) == 1, stages
        return stages[0]


def searched(tmp_path: Path, port: int, result: pipeline.SearchResult, store: Store) -> Searched:
    deadline = time.monotonic() + 15  # a worker's training process may take a moment to go
    while processes_of(tmp_path, port) and time.monotonic() < deadline:
        time.sleep(0.5)
    return Searched(result, store, processes_of(tmp_path, port))


@dataclass(frozen=True)
class Restarted(Searched):
    killed: int | None  # pid of the worker killed while it trained its first trial
    restarted: bool  # a new tuner0 process came up after it


class _KillTuner0:
    """From a thread of its own: kills worker tuner0 once it trains its first trial (it has forked its training
    process), then waits for the search to start another tuner0."""

    def __init__(self, tmp_path: Path, port: int) -> None:
        self.tmp_path, self.port = tmp_path, port
        self.search_ended = threading.Event()
        self.killed: int | None = None
        self.restarted = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def tuner0(self) -> list[int]:
        """The live tuner0 worker started by this (the chief's) process; not its training process, a fork."""
        found = []
        for pid in processes_of(self.tmp_path, self.port):
            try:
                if b"tuner0" in read_proc(pid, "cmdline") and psutil.Process(pid).ppid() == os.getpid():
                    found.append(pid)
            except psutil.Error:
                pass
        return found

    def training(self) -> bool:
        try:
            return any(psutil.Process(pid).children() for pid in self.tuner0())
        except psutil.Error:
            return False

    def new_tuner0(self) -> bool:
        self.restarted = self.restarted or bool(set(self.tuner0()) - {self.killed})
        return self.restarted

    def _run(self) -> None:
        wait_for(lambda: self.training() or self.search_ended.is_set(), "worker tuner0 training a trial")
        if self.search_ended.is_set():
            return
        [self.killed] = self.tuner0()
        os.kill(self.killed, signal.SIGKILL)
        wait_for(lambda: self.new_tuner0() or self.search_ended.is_set(), "tuner0 restarted")


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Restarted:
    """`search.fine.workers=2`: the search starts both workers; tuner0 is killed in its first trial."""
    port = free_port()
    tmp = tmp_path_factory.mktemp(f"started-{port}", numbered=False)
    store = new_store(tmp / "mlruns")
    killer = _KillTuner0(tmp, port)
    try:
        result = pipeline.run(compose(*OVERRIDES, f"tracking.uri={store.uri}", "search.fine.workers=2",
                                             f"search.fine.oracle=127.0.0.1:{port}"))
    finally:
        killer.search_ended.set()
        killer.thread.join(30)
    return Restarted(**vars(searched(tmp, port, result, store)), killed=killer.killed, restarted=killer.restarted)


@pytest.fixture(scope="module")
def user_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Searched]:
    """`start_workers=false`: two `searchlab-worker` processes, started first and pointed at the folder of all
    tuner directories, serve the search; they train the trials in their own processes (`trial_worker=false`)."""
    port = free_port()
    tmp = tmp_path_factory.mktemp(f"user-{port}", numbered=False)
    store = new_store(tmp / "mlruns")
    worker = Path(sys.executable).parent / "searchlab-worker"
    workers: list[subprocess.Popen[bytes]] = []
    with open(tmp / "workers.out", "wb") as out:
        try:
            for k in range(2):
                workers.append(subprocess.Popen([str(worker), "--dir", str(tmp / "mlruns" / "tuner"), "--id",
                                                 f"tuner{k}", "--threads", "1"],
                                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            with _interrupt_if_a_worker_fails(workers):
                result = pipeline.run(compose(*OVERRIDES, f"tracking.uri={store.uri}",
                                                     "search.fine.workers=2", "search.fine.start_workers=false",
                                                     "search.fine.trial_worker=false",
                                                     f"search.fine.oracle=127.0.0.1:{port}"))
            log = (tmp / "workers.out").read_text()
            for proc in workers:  # the workers end by themselves once the oracle has no trial left
                assert proc.wait(30) == 0, log
            yield searched(tmp, port, result, store)
        except SearchInterrupted:
            pytest.fail(f"a worker failed:\n{(tmp / 'workers.out').read_text()[-3000:]}")
        finally:
            for proc in workers:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()


@contextmanager
def _interrupt_if_a_worker_fails(workers: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    """While open, a worker's failure interrupts this process (as Ctrl-C would): the chief waits for its
    workers for ever, and the search ends SearchInterrupted instead."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(1):
            if any(proc.poll() not in (None, 0) for proc in workers):
                os.kill(os.getpid(), signal.SIGINT)
                return

    def on_sigint(signum: int, frame: Any) -> None:
        if not done.is_set():  # never once the search has returned: pytest itself would stop
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        signal.signal(signal.SIGINT, previous)


# -- the run tree --------------------------------------------------------------------------------


def assert_complete_tree(s: Searched) -> dict[str, dict[str, Any]]:
    """One finished search; under its one fine stage run, each combination of the grid over the stage's
    logged fine space exactly once, logged by both workers, plus the coarse winner. Returns the tuned
    values by trial id."""
    assert [r.info.status for r in s.store.runs(f"tags.`{RUN_TAG}` = 'search'")] == ["FINISHED"]
    stage = s.fine_stage()
    assert stage.info.status == "FINISHED"
    trials = s.store.runs(FINE_TRIALS)
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {stage.info.run_id}
    assert all(r.info.status == "FINISHED" for r in trials), [(r.info.run_name, r.info.status) for r in trials]
    assert not s.store.runs("attributes.status = 'RUNNING'")

    ids = [r.data.tags[TRIAL_ID_TAG] for r in trials]
    assert len(ids) == len(set(ids)), f"a trial is recorded twice: {sorted(ids)}"
    space = json.loads(Path(s.store.client.download_artifacts(stage.info.run_id, "space.json")).read_text())
    edges = {t.trial_id for t in s.result.fine.trials if t.trial_id.startswith(EDGE_PREFIX)}
    tuned = {t.trial_id: t.tuned for t in s.result.fine.trials if t.trial_id not in edges}
    assert sorted(ids) == sorted([*tuned, *edges, "coarse-winner"])
    assert len(tuned) == grid_size(space, POINTS), "a trial is lost"
    assert {frozenset(values) for values in tuned.values()} == {frozenset(space["tuned"])}
    assert len({tuple(sorted(values.items())) for values in tuned.values()}) == len(tuned), "a combination twice"

    workers = {r.data.tags[TRIAL_ID_TAG]: r.data.tags.get(WORKER_TAG) for r in trials}
    for trial_id in ("coarse-winner", *edges):  # the search process trains these
        assert workers.pop(trial_id) is None
    assert set(workers.values()) == {"tuner0", "tuner1"}
    return tuned


def test_started_workers_write_the_local_run_tree(started: Restarted) -> None:
    assert_complete_tree(started)


def test_a_killed_worker_is_restarted_and_its_trial_retried(started: Restarted) -> None:
    assert started.killed is not None, "tuner0 never trained a trial"
    assert started.restarted
    assert all(t.ok for t in started.result.fine.trials)  # the trial it was training among them


def test_user_started_workers_write_the_same_run_tree(user_started: Searched, started: Restarted) -> None:
    tuned = assert_complete_tree(user_started)
    assert tuned == assert_complete_tree(started)  # the same grid trials, the same ids
    # and read back from the store as a resumed search would
    recorded = read_fine_trials(Tracker(user_started.store.uri, "searchlab"), user_started.fine_stage().info.run_id)
    assert {trial_id: trial.tuned for trial_id, (trial, _) in recorded.items()
            if trial_id != "coarse-winner" and not trial_id.startswith(EDGE_PREFIX)} == tuned


def test_no_process_outlives_a_search(started: Restarted, user_started: Searched) -> None:
    assert not started.leftovers
    assert not user_started.leftovers
    assert started.killed is not None and not Path(f"/proc/{started.killed}").exists()
