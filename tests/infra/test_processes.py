"""Worker processes: TensorFlow thread budgets and ending a whole process group (`searchlab.infra.processes`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from searchlab.infra import processes
from searchlab.infra.processes import end_group, tf_thread_env, threads_per_worker, worker_thread_env

# A parent that starts a child and reports its pid, then both wait. IGNORE_TERM=both makes both deaf to SIGTERM
# (an ignored signal stays ignored across exec), IGNORE_TERM=child only the child.
FAMILY = """
import os, signal, subprocess, sys, time
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
if os.environ.get("IGNORE_TERM") == "child":
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
print(child.pid, flush=True)
time.sleep(120)
"""


def start_family(ignore_term: str = "") -> tuple[subprocess.Popen[bytes], int]:
    """A parent in a process group of its own (as `start_new_session=True` makes it) and its child's pid."""
    env = {**os.environ, "IGNORE_TERM": ignore_term}
    parent = subprocess.Popen([sys.executable, "-c", FAMILY], stdout=subprocess.PIPE, start_new_session=True, env=env)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    return parent, child


def gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether `pid` has exited within `timeout` seconds (a zombie has: it waits for init to reap it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_end_group_ends_the_process_and_its_child() -> None:
    parent, child = start_family()
    try:
        end_group(parent, grace=5.0)
        assert parent.returncode == -15  # SIGTERM was enough: no need to wait out the grace period
        assert gone(child), "the child outlived its process group"
    finally:
        _kill(parent, child)


def test_end_group_kills_a_group_that_ignores_sigterm() -> None:
    parent, child = start_family(ignore_term="both")
    try:
        started = time.monotonic()
        end_group(parent, grace=0.5)
        assert parent.returncode == -9
        assert time.monotonic() - started < 5
        assert gone(child)
    finally:
        _kill(parent, child)


def test_end_group_kills_a_child_that_outlives_sigterm() -> None:
    parent, child = start_family(ignore_term="child")
    try:
        end_group(parent, grace=0.5)
        assert gone(child, timeout=2)
    finally:
        _kill(parent, child)


def test_end_group_of_an_ended_process_returns() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    process.wait(30)
    end_group(process)  # no ProcessLookupError
    assert process.returncode == 0


def _kill(parent: subprocess.Popen[bytes], child: int) -> None:
    """Whatever the test's outcome, nothing it started lives on."""
    for pid in (parent.pid, child):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    parent.wait(10)


VARIABLES = tuple(tf_thread_env(1))


@pytest.mark.parametrize("cores, workers, expected", [(2, 1, 2), (2, 2, 1), (2, 3, 1), (8, 3, 2), (8, 0, 8)])
def test_threads_per_worker_shares_the_cores(monkeypatch: pytest.MonkeyPatch, cores: int, workers: int,
                                             expected: int) -> None:
    monkeypatch.setattr(processes.os, "cpu_count", lambda: cores)
    assert threads_per_worker(workers) == expected


def test_worker_thread_env_is_set_inside_and_restored_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes.os, "cpu_count", lambda: 8)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # the user's own value comes back
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)  # an unset one is unset again
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS", raising=False)
    with worker_thread_env(4):
        assert {key: os.environ.get(key) for key in VARIABLES} == {
            "TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "2"}
        # a child process started here inherits the budget: that is how the workers get it
        seen = subprocess.run([sys.executable, "-c", "import os; print(os.environ['TF_NUM_INTRAOP_THREADS'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert seen == "2"
    assert os.environ.get("OMP_NUM_THREADS") == "7"
    assert "TF_NUM_INTRAOP_THREADS" not in os.environ and "TF_NUM_INTEROP_THREADS" not in os.environ


def test_worker_thread_env_is_restored_after_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with pytest.raises(RuntimeError), worker_thread_env(2):
        raise RuntimeError("a fit failed")
    assert "OMP_NUM_THREADS" not in os.environ


def test_one_worker_keeps_every_core(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in VARIABLES:
        monkeypatch.delenv(key, raising=False)
    with worker_thread_env(1):
        assert not any(key in os.environ for key in VARIABLES)
