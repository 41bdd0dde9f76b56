"""The coarse stage on a `dask.distributed` cluster (`search.backend=dask`).

Either a running cluster the user points at (`search.dask.address`: a `dask scheduler`, or the
scheduler of a dask-jobqueue / dask-kubernetes cluster) or a local cluster of single-threaded worker
processes started here and closed afterwards. While `dask_backend` is open, joblib's Dask backend
carries scikit-learn's cross-validation fits to the workers.

The fits leave their training curves in a directory of this machine (see `searchlab.coarse`),
so workers on other machines must see it at the same path: point TMPDIR at a shared filesystem.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import joblib
from distributed import Client, LocalCluster
from distributed.comm.addressing import resolve_address
from joblib._dask import DaskDistributedBackend  # joblib's "dask" backend class: subclassed, joblib has no public one

from searchlab.config import DaskConfig
from searchlab.errors import ConfigError
from searchlab.infra.processes import tf_thread_env, threads_per_worker

CONNECT_TIMEOUT = 5.0  # seconds to reach the scheduler at search.dask.address
WORKER_TIMEOUT = 60.0  # seconds to wait for a first worker (an adaptive cluster starts them on demand)


@contextmanager
def dask_backend(settings: DaskConfig, shared_dir: str) -> Iterator[int]:
    """Run joblib's parallel work on a Dask cluster while open; yields the cluster's worker threads.

    Args:
        settings: `search.dask`: a scheduler `address`, or None for a local cluster of `n_workers`
            single-threaded processes, started here and closed on exit (also on errors and Ctrl-C).
        shared_dir: a directory the fits write into, which every worker must see.

    Raises:
        ConfigError: the scheduler cannot be reached, has no worker, or its workers cannot see `shared_dir`.
    """
    with ExitStack() as stack:
        if settings.address is None:
            cluster = stack.enter_context(_local_cluster(settings.n_workers))
            client = stack.enter_context(Client(cluster, set_as_default=False))  # type: ignore[no-untyped-call]
        else:
            client = stack.enter_context(_connect(settings.address))
            _check_workers(client, settings.address, shared_dir)
        with joblib.parallel_config(backend=_ClusterBackend(client=client)):
            yield sum(client.nthreads().values())


def _local_cluster(n_workers: int) -> LocalCluster:
    threads = threads_per_worker(n_workers)
    # No dashboard, and the scheduler's HTTP endpoints on a free port rather than 8787, which may be taken.
    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,  # type: ignore[no-untyped-call]
                        dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},
                        silence_logs=logging.ERROR, env=tf_thread_env(threads))


def _connect(address: str) -> Client:
    allowed = ("Give the address of a running Dask scheduler (as `dask scheduler` prints it, e.g. "
               "tcp://host:8786), or search.dask.address=null to start a local cluster here.")
    try:
        # A malformed address would leave a half-built Client behind that hangs at exit: check it first.
        resolve_address(address)
        return Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)  # type: ignore[no-untyped-call]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"search.dask.address: cannot reach a Dask scheduler at {address!r} "
                          f"({exc}). {allowed}") from None


def _check_workers(client: Client, address: str, shared_dir: str) -> None:
    try:
        client.wait_for_workers(1, timeout=WORKER_TIMEOUT)
    except TimeoutError:
        raise ConfigError(f"search.dask.address: the Dask scheduler at {address!r} has no worker after "
                          f"{WORKER_TIMEOUT:.0f} s. Start workers (`dask worker {address} --nthreads 1`).") from None
    blind = sorted(worker for worker, seen in client.run(os.path.isdir, shared_dir).items() if not seen)
    if blind:
        raise ConfigError(f"search.dask.address: the Dask workers {', '.join(blind)} cannot see {shared_dir}, "
                          "where the fits leave their training curves. Point TMPDIR at a filesystem this "
                          "machine and the workers share, at the same path on both.")


class _ClusterBackend(DaskDistributedBackend):
    """joblib's Dask backend, made to survive a lost worker and to use a cluster of one worker thread.

    joblib scatters each large task argument (the data, a fold's indices) to one worker, and a task
    whose input died with that worker is cancelled, which fails the whole search (replicas do not
    help: the scheduler drops them). Here every task carries its own arguments, so the scheduler can
    rerun it on any worker; sending the training rows with each fit costs little next to the fit.
    """

    call_data_futures: dict[Any, Any] | None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        # joblib runs everything in this process when the backend counts a single worker thread
        return max(2, int(super().effective_n_jobs(n_jobs)))

    def start_call(self) -> None:
        super().start_call()
        self.call_data_futures = None  # no per-call scattering

    def stop_call(self) -> None:
        self.call_data_futures = {}
        super().stop_call()
