"""The coarse stage on a Dask cluster (`search.backend=dask`, `searchlab.infra.dask_cluster`), with real processes.

The tests run `run_coarse` itself: on a local cluster of two worker processes started by the stage, against
the local backend, and interrupted; and on a `dask scheduler` with two `dask worker` processes this module
starts (each in a process group of its own, killed at the end, pass or fail), one of which it kills mid-stage.
The data is a synthetic 3-class table of 600 rows: enough for joblib to scatter the folds' index arrays (over
1 kB each) if it were let, which a lost worker would not survive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from distributed import Client

from searchlab import pipeline
from searchlab.coarse import CoarseResult, run_coarse
from searchlab.config import Config, DaskConfig, compose
from searchlab.context import SearchContext
from searchlab.data import load_dataset
from searchlab.errors import ConfigError
from searchlab.infra.processes import tf_thread_env
from searchlab.infra.tracking_server import free_port
from searchlab.metrics import scoring_for
from searchlab.trials import CoarseTrial
from tests.conftest import new_store

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

BIN = Path(sys.executable).parent
# Four candidates, two folds, three epochs: fits of a few seconds, two batches on two workers.
ARGS = ("experiment=smoke", "dataset=synthetic", "dataset.n_samples=600", "dataset.n_classes=3", "model.epochs=3",
        "search.coarse.n_iter=4", "search.coarse.cv=2", "search.fine.max_params=1", "search.fine.points=2",
        "tracking.log_model=false", "verbose=0",
        "search.fine.beyond_edges=false", "search.fine.confirm_top=0")
TIMEOUT = 300


def stage_inputs(*overrides: str) -> tuple[Config, SearchContext]:
    config = compose(*ARGS, *overrides)
    data = load_dataset(config.dataset, config.seed)
    scoring = scoring_for(data.task, config.search.coarse.scoring)
    return config, SearchContext(data, scoring, config.model, config.seed, config.verbose)


# -- processes ----------------------------------------------------------------------------------


def children() -> set[int]:
    """Live descendants of this process, except multiprocessing's resource tracker: started with the first
    spawned process, it lives as long as this process does (it is no Dask worker, and ends with its parent)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.Error:
            pass
    return found


def assert_none_left(before: set[int]) -> None:
    """Processes started since `before` all end within seconds."""
    deadline = time.monotonic() + 10
    while children() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    left = children() - before
    assert not left, f"processes left behind: {[psutil.Process(pid).cmdline() for pid in left]}"


@contextmanager
def process_group(log: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A process in a process group of its own, which is killed on exit: nothing outlives a test."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(30)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[str]:
    """A `dask scheduler` and two single-threaded `dask worker`s, each a process group of its own; yields the
    scheduler's address."""
    address = f"tcp://127.0.0.1:{free_port()}"
    dask = str(BIN / "dask")
    with ExitStack() as stack:
        stack.enter_context(process_group(tmp_path / "scheduler.log", dask, "scheduler", "--host", "127.0.0.1",
                                          "--port", address.rsplit(":", 1)[1], "--no-dashboard",
                                          "--dashboard-address", "127.0.0.1:0"))  # its HTTP server: not 8787
        for i in range(2):
            stack.enter_context(process_group(tmp_path / f"worker{i}.log", dask, "worker", address, "--nthreads",
                                              "1", "--host", "127.0.0.1", "--no-dashboard", env=tf_thread_env(1)))
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address


# -- a local cluster, at the stage level ------------------------------------------------------------


@dataclass(frozen=True)
class Compared:
    local: CoarseResult
    dask: CoarseResult
    most_children: int  # processes of the local cluster seen while it trained
    before: set[int]  # this process's children before the cluster started


@pytest.fixture(scope="module")
def compared() -> Compared:
    """The same coarse stage on the local backend (in this process: its results do not depend on the number
    of joblib workers) and on a local Dask cluster of two worker processes the stage starts and closes."""
    config, ctx = stage_inputs("search.coarse.n_jobs=1")
    local = run_coarse(ctx, config.coarse_space(), config.search.coarse)
    before = children()
    seen: list[int] = []
    dask = run_coarse(ctx, config.coarse_space(), config.search.coarse, dask=DaskConfig(address=None, n_workers=2),
                      on_trial=lambda trial: seen.append(len(children() - before)))
    return Compared(local, dask, max(seen), before)


def test_dask_backend_matches_the_local_backend(compared: Compared) -> None:
    local, dask = compared.local.trials, compared.dask.trials
    assert [t.number for t in dask] == list(range(4))
    assert [t.params for t in dask] == [t.params for t in local]  # the same candidates, in the same order
    for trial in dask:  # every fold scored, and the workers' training curves came back
        assert trial.ok and len(trial.fold_scores) == 2 and np.isfinite(trial.fold_scores).all(), trial
        assert len(trial.curves["loss"]) == 3, trial.curves
    # Not always the same scores: Keras draws a layer's default seed from Python's global `random`, which a
    # Dask worker's own threads also draw from (`dask.sizeof` samples with it) while the model is being built,
    # so a fit may start from other initial weights. The local backend repeats bit for bit. A fit that starts
    # from the same weights scores exactly the same: proof that the same rows, folds and values reached the
    # workers. In 10 repetitions of this stage (80 fits; 3, 8 or 20 epochs) at least 4 of the 8 fits matched
    # exactly every time.
    pairs = [(a, b) for x, y in zip(local, dask, strict=True) for a, b in zip(x.fold_scores, y.fold_scores, strict=True)]
    assert any(a == b for a, b in pairs), pairs
    # The others differ by what other initial weights make of a few epochs on 240 rows. Measured over those
    # 80 fits: up to 0.20 in a fold's accuracy, 0.12 in a candidate's mean. Anything further off is no
    # longer that noise (a fit on the wrong rows or values, a score given to the wrong candidate). With
    # Dask's own threads drawing from a private `random` (a worker preload), all 16 fits of 2 runs matched.
    assert max(abs(a - b) for a, b in pairs) <= 0.25, pairs
    drift = [abs(x.mean_score - y.mean_score) for x, y in zip(local, dask, strict=True)]
    assert max(drift) <= 0.15, drift


def test_a_local_cluster_leaves_no_process_behind(compared: Compared) -> None:
    assert compared.most_children >= 2, "the local cluster's two worker processes never showed up"
    assert_none_left(compared.before)


def test_ctrl_c_on_a_local_cluster_leaves_no_process_behind() -> None:
    config, ctx = stage_inputs("search.coarse.n_iter=8")
    before = children()
    inside = True
    timer: threading.Timer | None = None

    def on_sigint(signum: int, frame: Any) -> None:
        if inside:  # never after the stage has returned: pytest itself would stop
            raise KeyboardInterrupt

    def on_trial(trial: CoarseTrial) -> None:
        nonlocal timer
        if timer is None:  # the next batch is on its way to the workers: Ctrl-C while the stage waits for it
            timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
            timer.start()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_coarse(ctx, config.coarse_space(), config.search.coarse, on_trial=on_trial,
                       dask=DaskConfig(address=None, n_workers=1))  # one worker and its nanny: enough to leave behind
    finally:
        inside = False
        signal.signal(signal.SIGINT, previous)
        if timer is not None:
            timer.cancel()
    assert timer is not None, "no candidate finished before the interrupt"
    assert_none_left(before)


# -- a running cluster ----------------------------------------------------------------------------


class _KillBusyWorker:
    """Once a coarse candidate has ended, kills (from a thread of its own) a Dask worker that is running fits."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.first_trial = threading.Event()
        self.killed: int | None = None
        self.thread = threading.Thread(target=self._kill, daemon=True)
        self.thread.start()

    def _kill(self) -> None:
        self.first_trial.wait(TIMEOUT)
        with Client(self.address, timeout=30) as client:
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                busy = [worker for worker, tasks in client.processing().items() if tasks]
                if busy:
                    pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                    group = os.getpgid(pid)
                    assert group != os.getpgid(0)  # the worker's own group: `dask worker` and its nanny
                    os.killpg(group, signal.SIGKILL)
                    self.killed = pid
                    return
                time.sleep(0.1)


def test_a_worker_killed_mid_coarse_loses_no_candidate(cluster: str) -> None:
    """On a running cluster that loses a worker mid-coarse, every candidate is reported once, in order, scored
    (the killed worker's fits run again on the other) or failed with its reason. The stage's reports are what
    the search records, whatever the backend (tests/test_pipeline.py: the run tree)."""
    n_iter = 4  # two batches on two worker threads: the kill lands in the second
    config, ctx = stage_inputs(f"search.coarse.n_iter={n_iter}")
    killer = _KillBusyWorker(cluster)
    reported: list[int] = []

    def on_trial(trial: CoarseTrial) -> None:
        reported.append(trial.number)
        killer.first_trial.set()

    result = run_coarse(ctx, config.coarse_space(), config.search.coarse, on_trial=on_trial,
                        dask=DaskConfig(address=cluster))
    killer.thread.join(5)
    assert killer.killed is not None, "no worker was busy after the first candidate"
    assert reported == list(range(n_iter)) == [t.number for t in result.trials]
    assert all(t.ok or t.error for t in result.trials)
    assert all(len(t.fold_scores) == 2 and t.curves["loss"] for t in result.trials if t.ok)  # histories came back


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path: Path) -> None:
    store = new_store(tmp_path / "mlruns")
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    config = compose(*ARGS, f"tracking.uri={store.uri}", "search.backend=dask",
                            f"search.dask.address={address}")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"^search\.dask\.address: cannot reach a Dask scheduler at ") as caught:
        pipeline.run(config)
    assert address in str(caught.value) and "search.dask.address=null" in str(caught.value)
    assert time.monotonic() - started < 30  # a 5 s connection timeout, no training
    assert {run.info.status for run in store.runs()} == {"FAILED"}  # the search and its coarse stage
