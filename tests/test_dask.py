"""The coarse stage on a Dask cluster (`search.backend=dask`), with real processes on 127.0.0.1.

A `dask scheduler` and two `dask worker --nthreads 1` processes from the virtualenv run a small
search; each process runs in its own process group, which is killed at the end, pass or fail.
Searches are smoke-sized on a small synthetic 3-class table. Its 600 rows are enough for joblib
to scatter the folds' index arrays to the workers (over 1 kB each), which a lost worker must survive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from distributed import Client
from mlflow.entities import Run

from searchlab import pipeline
from searchlab.cluster import tf_thread_env
from searchlab.coarse import CoarseResult, run_coarse
from searchlab.config import Config
from searchlab.data import load_dataset
from searchlab.metrics import scoring_for
from searchlab.server import free_port
from tests.conftest import Store, new_store

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARGS = ("experiment=smoke", "dataset=synthetic", "dataset.n_samples=600", "dataset.n_classes=3",
        "tracking.log_model=false", "verbose=0", "search.fine.max_params=1")
SEARCH = "tags.`searchlab.run` = 'search'"
COARSE_TRIALS = "tags.`searchlab.run` = 'trial' and tags.`searchlab.stage` = 'coarse'"
TIMEOUT = 300  # one smoke search takes well under a minute on 2 busy cores


# -- helpers ------------------------------------------------------------------------------------


@contextmanager
def process_group(log: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own process group (session), which is killed on exit: nothing outlives a test."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        kill_group(proc)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def group_members(pgid: int) -> list[psutil.Process]:
    """Live processes of process group `pgid` (zombies are dead: their parent has not reaped them yet)."""
    found = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return found


def assert_group_ends(pgid: int) -> None:
    """Once its leader has exited, process group `pgid` empties within seconds (multiprocessing's
    resource tracker exits when it sees its parent gone); a Dask worker left behind would stay."""
    deadline = time.monotonic() + 10
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = group_members(pgid)
    assert not left, f"processes left behind: {[p.pid for p in left]}"


@dataclass(frozen=True)
class Cluster:
    address: str
    workers: list[subprocess.Popen[bytes]]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A `dask scheduler` and two single-threaded `dask worker`s, each a process group of its own."""
    address = f"tcp://127.0.0.1:{free_port()}"
    dask = str(BIN / "dask")
    with ExitStack() as stack:
        stack.enter_context(process_group(tmp_path / "scheduler.log", dask, "scheduler", "--host", "127.0.0.1",
                                          "--port", address.rsplit(":", 1)[1], "--no-dashboard",
                                          "--dashboard-address", "127.0.0.1:0"))  # its HTTP server: not 8787
        workers = [stack.enter_context(process_group(tmp_path / f"worker{i}.log", dask, "worker", address,
                                                     "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                                                     env=tf_thread_env(1)))
                   for i in range(2)]
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield Cluster(address, workers)


def coarse_trials(store: Store) -> dict[int, Run]:
    """The coarse trial runs by candidate number; fails on a duplicated candidate."""
    trials: dict[int, Run] = {}
    for run in store.runs(COARSE_TRIALS):
        number = int(run.data.tags["searchlab.candidate"])
        assert number not in trials, f"candidate {number} recorded twice"
        trials[number] = run
    return trials


def assert_complete_tree(store: Store, n_iter: int) -> dict[int, Run]:
    """One FINISHED search with FINISHED coarse and fine stages, and every coarse candidate exactly once."""
    statuses = {run.info.run_name: run.info.status for run in store.runs()}
    assert "RUNNING" not in statuses.values(), statuses
    search = store.runs(SEARCH)
    assert [run.info.status for run in search] == ["FINISHED"], statuses
    stages = {run.data.tags["searchlab.stage"]: run.info.status
              for run in store.runs("tags.`searchlab.run` = 'stage'")}
    assert stages == {"coarse": "FINISHED", "fine": "FINISHED"}, statuses
    trials = coarse_trials(store)
    assert sorted(trials) == list(range(n_iter))
    return trials


# -- tests --------------------------------------------------------------------------------------


def test_search_on_a_dask_cluster_matches_the_local_backend(
        cluster: Cluster, tmp_path: Path, make_config: Callable[..., Config]) -> None:
    store = new_store(tmp_path / "mlruns")
    config = make_config(*ARGS, f"tracking.uri={store.uri}", "search.backend=dask",
                         f"search.dask.address={cluster.address}")
    result = pipeline.run(config)

    trials = assert_complete_tree(store, config.search.coarse.n_iter)
    assert {run.info.status for run in trials.values()} == {"FINISHED"}
    assert all(t.ok and t.curves["loss"] for t in result.coarse.trials)  # the workers' histories came back

    # The same candidates on the same folds, all scored. Not always the same scores: Keras draws each
    # layer's default seed from Python's global `random`, which a Dask worker's own threads use too
    # (`dask.sizeof` samples with it) while a model is built. The local backend repeats bit for bit.
    local = _local_coarse(config)
    assert [t.params for t in result.coarse.trials] == [t.params for t in local.trials]
    assert [len(t.fold_scores) for t in result.coarse.trials] == [len(t.fold_scores) for t in local.trials]
    drift = [abs(a.mean_score - b.mean_score) for a, b in zip(result.coarse.trials, local.trials, strict=True)]
    print(f"\ncoarse mean CV score, Dask against local: max difference {max(drift):.4f}")


def _local_coarse(config: Config) -> CoarseResult:
    data = load_dataset(config.dataset, config.seed)
    scoring = scoring_for(data.task, config.search.coarse.scoring)
    return run_coarse(data, config.coarse_space(), config.model.hyperparameters(), config.search.coarse,
                      config.model, scoring, config.seed)


def test_a_worker_killed_mid_coarse_loses_no_candidate(cluster: Cluster, tmp_path: Path) -> None:
    store = new_store(tmp_path / "mlruns")
    n_iter = 6
    overrides = (f"tracking.uri={store.uri}", "search.backend=dask", f"search.dask.address={cluster.address}",
                 f"search.coarse.n_iter={n_iter}")
    with ExitStack() as stack, Client(cluster.address, timeout=30) as client:
        search = stack.enter_context(process_group(tmp_path / "search.log", sys.executable, "-m", "searchlab",
                                                   *ARGS, *overrides))
        deadline = time.monotonic() + TIMEOUT
        busy: list[str] = []
        while not busy:  # into the coarse stage: a candidate recorded, a fit running
            assert search.poll() is None and time.monotonic() < deadline, (tmp_path / "search.log").read_text()
            if store.runs(COARSE_TRIALS):
                busy = [worker for worker, tasks in client.processing().items() if tasks]
            time.sleep(0.2)
        pid = client.run(os.getpid)[busy[0]]
        kill_group(next(w for w in cluster.workers if pid in {p.pid for p in group_members(w.pid)}))
        code = search.wait(TIMEOUT)
    log = (tmp_path / "search.log").read_text()
    assert code == 0, log
    trials = assert_complete_tree(store, n_iter)
    # The killed worker's fits were run again on the other one (or, had that failed, recorded as FAILED).
    for run in trials.values():
        assert run.info.status == "FINISHED" or run.data.tags.get("searchlab.error"), run.info.run_name


def test_local_cluster_leaves_no_process_behind(tmp_path: Path) -> None:
    store = new_store(tmp_path / "mlruns")
    with ExitStack() as stack:
        search = stack.enter_context(process_group(tmp_path / "search.log", sys.executable, "-m", "searchlab",
                                                   *ARGS, f"tracking.uri={store.uri}", "search.backend=dask",
                                                   "search.dask.n_workers=2"))
        most = 0
        while search.poll() is None:
            most = max(most, len(group_members(search.pid)))
            time.sleep(0.5)
        log = (tmp_path / "search.log").read_text()
        assert search.returncode == 0, log
        assert most >= 3, "the local cluster's two worker processes never showed up"
        assert_group_ends(search.pid)
    assert_complete_tree(store, 4)


def test_ctrl_c_on_a_local_cluster_leaves_no_process_behind(tmp_path: Path) -> None:
    store = new_store(tmp_path / "mlruns")
    with ExitStack() as stack:
        search = stack.enter_context(process_group(tmp_path / "search.log", sys.executable, "-m", "searchlab",
                                                   *ARGS, f"tracking.uri={store.uri}", "search.backend=dask",
                                                   "search.coarse.n_iter=8"))
        deadline = time.monotonic() + TIMEOUT
        while not store.runs(COARSE_TRIALS):  # the local cluster is up and training
            assert search.poll() is None and time.monotonic() < deadline, (tmp_path / "search.log").read_text()
            time.sleep(0.2)
        search.send_signal(signal.SIGINT)
        assert search.wait(60) == 130, (tmp_path / "search.log").read_text()
        assert_group_ends(search.pid)
    search_run = store.runs(SEARCH)
    assert [run.info.status for run in search_run] == ["KILLED"]


def test_unreachable_scheduler_is_a_clear_error(tmp_path: Path) -> None:
    store = new_store(tmp_path / "mlruns")
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "searchlab", *ARGS, f"tracking.uri={store.uri}",
                           "search.backend=dask", f"search.dask.address={address}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("searchlab: error:")]
    assert len(error) == 1, done.stderr
    assert "search.dask.address" in error[0] and address in error[0] and "null" in error[0]
    assert time.monotonic() - started < 60  # TensorFlow's import and a 5 s connection timeout
    assert {run.info.status for run in store.runs()} == {"FAILED"}  # the search and its coarse stage
