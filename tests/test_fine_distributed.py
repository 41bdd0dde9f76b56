"""The fine stage on KerasTuner's distributed mode, with a real chief and real worker processes on 127.0.0.1.

One local search is the reference. A search with `search.fine.workers=2` starts its own two
workers; one of them is killed mid-search and must be restarted, losing no trial. A search with
`start_workers=false` runs as a subprocess and is served by two `searchlab-worker` processes this
module starts. Each must write the local search's run tree: every grid trial exactly once under
the one fine stage run, logged by both workers. No process may outlive a search.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from searchlab import pipeline
from searchlab.resume import TRIAL_ID_TAG, WORKER_TAG, read_fine_trials
from searchlab.server import free_port
from searchlab.tracking import RUN_TAG, STAGE_TAG, Tracker
from tests.conftest import compose_config

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ("experiment=smoke", "dataset=synthetic", "dataset.n_samples=300", "search.fine.points=3",
             "tracking.log_model=false", "verbose=0")  # a 3 x 3 grid
TIMEOUT = 600  # a smoke search takes about a minute on 2 busy cores


def read_proc(pid: int | str, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:  # gone meanwhile, or not ours
        return b""


def processes_of(tmp_path: Path, port: int) -> list[int]:
    """Pids of the processes of a search under `tmp_path` with its oracle on `port`: workers name the
    directory on their command line; their training processes inherit `KERASTUNER_ORACLE_PORT`."""
    variable = f"KERASTUNER_ORACLE_PORT={port}".encode()
    return [int(proc.name) for proc in Path("/proc").glob("[0-9]*")
            if str(tmp_path).encode() in read_proc(proc.name, "cmdline")
            or variable in read_proc(proc.name, "environ").split(b"\0")]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@dataclass(frozen=True)
class Searched:
    """A finished search and its store."""

    result: pipeline.SearchResult | None  # None: it ran in a subprocess
    client: MlflowClient
    experiment_id: str
    leftovers: list[int]  # processes of the search still alive a few seconds after it ended

    def runs(self, query: str = "") -> list[Run]:
        return self.client.search_runs([self.experiment_id], query, max_results=1000)

    def fine_trials(self) -> list[Run]:
        return self.runs(f"tags.`{RUN_TAG}` = 'trial' and tags.`{STAGE_TAG}` = 'fine'")


def searched(tmp_path: Path, port: int, uri: str, result: pipeline.SearchResult | None = None) -> Searched:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("searchlab")
    assert experiment is not None
    deadline = time.time() + 15  # a worker's training process may take a moment to go
    while processes_of(tmp_path, port) and time.time() < deadline:
        time.sleep(0.5)
    return Searched(result, client, experiment.experiment_id, processes_of(tmp_path, port))


def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> pipeline.SearchResult:
    """The reference: the same search with the trials trained one at a time by the search process."""
    uri = store(tmp_path_factory.mktemp("local"))
    return pipeline.run(compose_config(*OVERRIDES, f"tracking.uri={uri}"))


@dataclass(frozen=True)
class Restarted(Searched):
    killed: int  # pid of the worker killed mid-search
    restarted: bool  # a new tuner0 process came up after it


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Restarted:
    """`search.fine.workers=2`: the search starts both workers; tuner0 is killed once it logged a trial."""
    port = free_port()
    tmp = tmp_path_factory.mktemp(f"started-{port}", numbered=False)
    uri = store(tmp)
    config = compose_config(*OVERRIDES, f"tracking.uri={uri}", "search.fine.workers=2",
                            f"search.fine.oracle=127.0.0.1:{port}")
    outcome: dict[str, Any] = {}

    def search() -> None:
        try:
            outcome["result"] = pipeline.run(config)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=search)
    thread.start()
    client = MlflowClient(uri)

    def tuner0() -> list[int]:
        return [pid for pid in processes_of(tmp, port)
                if b"searchlab.worker" in read_proc(pid, "cmdline") and b"tuner0" in read_proc(pid, "cmdline")]

    def logged_by_tuner0() -> bool:
        experiment = client.get_experiment_by_name("searchlab")
        return experiment is not None and bool(client.search_runs(
            [experiment.experiment_id], f"tags.`{WORKER_TAG}` = 'tuner0'", max_results=1))

    try:
        wait_for(lambda: logged_by_tuner0() or not thread.is_alive(), "a trial logged by worker tuner0")
        killed = tuner0()
        assert len(killed) == 1, killed
        os.kill(killed[0], signal.SIGKILL)
        wait_for(lambda: bool(set(tuner0()) - set(killed)) or not thread.is_alive(), "tuner0 restarted")
        restarted = bool(set(tuner0()) - set(killed))
    finally:
        thread.join(TIMEOUT)
    assert not thread.is_alive(), "the search did not end"
    if "error" in outcome:
        raise outcome["error"]
    return Restarted(**vars(searched(tmp, port, uri, outcome["result"])), killed=killed[0], restarted=restarted)


@pytest.fixture(scope="module")
def user_started(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    """`start_workers=false`: the search runs as a subprocess; two `searchlab-worker` processes,
    started first and pointed at the folder of all tuner directories, serve it."""
    port = free_port()
    tmp = tmp_path_factory.mktemp(f"user-{port}", numbered=False)
    uri = store(tmp)
    worker = Path(sys.executable).parent / "searchlab-worker"
    procs: list[subprocess.Popen[bytes]] = []
    with open(tmp / "search.out", "wb") as out:
        try:
            for k in range(2):
                procs.append(subprocess.Popen([str(worker), "--dir", str(tmp / "mlruns" / "tuner"), "--id",
                                               f"tuner{k}", "--threads", "1"],
                                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            search = subprocess.Popen(
                [sys.executable, "-m", "searchlab", *OVERRIDES, f"tracking.uri={uri}", "search.fine.workers=2",
                 "search.fine.start_workers=false", f"search.fine.oracle=127.0.0.1:{port}"],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(search)
            code = search.wait(TIMEOUT)
            log = (tmp / "search.out").read_text()
            assert code == 0, log
            for proc in procs[:2]:  # the workers end by themselves once the oracle has no trial left
                assert proc.wait(30) == 0, log
        finally:
            for proc in procs:
                kill_group(proc)
    return searched(tmp, port, uri)


# -- the run tree --------------------------------------------------------------------------------


def assert_complete_tree(s: Searched, local: pipeline.SearchResult) -> None:
    """One finished search; under its one fine stage run, each trial of the local search exactly once
    (same ids, same tuned values), logged by both workers, plus the coarse winner."""
    search = [r for r in s.runs() if r.data.tags.get(RUN_TAG) == "search"]
    assert [r.info.status for r in search] == ["FINISHED"]
    stages = s.runs(f"tags.`{RUN_TAG}` = 'stage' and tags.`{STAGE_TAG}` = 'fine'")
    assert [r.info.status for r in stages] == ["FINISHED"]
    trials = s.fine_trials()
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {stages[0].info.run_id}
    ids = [r.data.tags[TRIAL_ID_TAG] for r in trials]
    expected = sorted(t.trial_id for t in local.fine.trials)
    assert sorted(ids) == sorted([*expected, "coarse-winner"]), "a trial is lost or duplicated"
    assert all(r.info.status == "FINISHED" for r in trials), [(r.info.run_name, r.info.status) for r in trials]
    workers = {r.data.tags[TRIAL_ID_TAG]: r.data.tags.get(WORKER_TAG) for r in trials}
    assert workers.pop("coarse-winner") is None  # the search process trains it
    assert set(workers.values()) == {"tuner0", "tuner1"}
    assert not s.runs("attributes.status = 'RUNNING'")


def test_started_workers_write_the_local_run_tree(started: Restarted, local: pipeline.SearchResult) -> None:
    assert_complete_tree(started, local)
    assert started.result is not None
    assert ({t.trial_id: t.tuned for t in started.result.fine.trials}
            == {t.trial_id: t.tuned for t in local.fine.trials})
    assert len(local.fine.trials) == 9


def test_a_killed_worker_is_restarted_and_its_trial_retried(started: Restarted) -> None:
    assert started.restarted
    assert started.result is not None and all(t.ok for t in started.result.fine.trials)


def test_user_started_workers_write_the_local_run_tree(user_started: Searched, local: pipeline.SearchResult) -> None:
    assert_complete_tree(user_started, local)
    stage = user_started.runs(f"tags.`{RUN_TAG}` = 'stage' and tags.`{STAGE_TAG}` = 'fine'")[0]
    recorded = read_fine_trials(Tracker(user_started.client.tracking_uri, "searchlab"), stage.info.run_id)
    assert ({trial_id: trial.tuned for trial_id, (trial, _) in recorded.items() if trial_id != "coarse-winner"}
            == {t.trial_id: t.tuned for t in local.fine.trials})


def test_no_process_outlives_a_search(started: Restarted, user_started: Searched) -> None:
    assert not started.leftovers
    assert not user_started.leftovers
    assert not Path(f"/proc/{started.killed}").exists()
