"""Worker processes: how many TensorFlow threads each gets, and ending a process group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager


def process_count(n_jobs: int) -> int:
    """How many worker processes `n_jobs` asks for, scikit-learn's way: -1 is one per core."""
    return (os.cpu_count() or 1) if n_jobs == -1 else n_jobs


def threads_per_worker(workers: int) -> int:
    """The cores each of `workers` processes gets when they share this machine."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def tf_thread_env(threads: int) -> dict[str, str]:
    """Environment variables that size TensorFlow's thread pools (read when it starts) to `threads` cores."""
    return {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": str(threads)}


@contextmanager
def worker_thread_env(workers: int) -> Iterator[None]:
    """While open, processes started from here share the cores among `workers` TensorFlow processes.

    Worker processes inherit the environment when they start; TensorFlow reads these variables then.
    With one worker nothing changes: it may use every core.
    """
    if workers <= 1:
        yield
        return
    env = tf_thread_env(threads_per_worker(workers))
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def end_group(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """End a process started with `start_new_session=True` and everything in its process group: SIGTERM to the
    group, then SIGKILL to whatever of it is still there after `grace` seconds (the leader, or a member still
    shutting down or deaf to SIGTERM)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        process.poll()
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_alive(process):
        time.sleep(0.1)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def _group_alive(process: subprocess.Popen[bytes]) -> bool:
    """Whether any member of the group (the leader reaped or not) is still running."""
    process.poll()  # reap the leader, so that a zombie leader does not count
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True
