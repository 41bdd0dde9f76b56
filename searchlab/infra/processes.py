"""Worker processes: how many TensorFlow threads each gets, and ending a process group."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


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
    """End a process started with `start_new_session=True` and everything it started: SIGTERM to its group,
    then SIGKILL if it has not exited within `grace` seconds."""
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
