"""The fine stage on KerasTuner's distributed mode: the chief's side (`serve`) and a worker's (`main`).

The search process is the chief: it writes a job file into the fine stage's tuner directory and
serves the KerasTuner oracle over gRPC until every trial has ended. Each worker
(`searchlab-worker --dir <tuner directory> --id tuner0`) reads the job, builds the same tuner in
that directory, pulls trials from the oracle, trains them and logs each one as a trial run under
the search's fine stage run, so the run tree is the one a local search writes.

The job file is a pickle: the tuner directory must be trusted like the code itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from searchlab.console import silence_native_stderr
from searchlab.errors import ConfigError, SearchlabError
from searchlab.infra.processes import end_group, tf_thread_env, threads_per_worker

if TYPE_CHECKING:
    from searchlab.fine import FineSearch
    from searchlab.trials import FineTrial

# TensorFlow (with keras_tuner, searchlab.fine) loads inside the functions: a worker first sends
# TensorFlow's native start-up chatter to /dev/null, as the `searchlab` command does.

JOB_FILE = "searchlab-fine-job.pkl"
_RESTARTS = 2  # times a started worker that died is restarted (it retries its trial) before the stage fails


@dataclass(frozen=True)
class WorkerJob:
    """What a worker reads from the tuner directory."""

    search: FineSearch
    tracking_uri: str
    experiment: str
    stage_run: str  # the fine stage's run: workers log their trials under it
    oracle: str  # host:port of the chief's oracle


def serve(job: WorkerJob, oracle: Any, workers: int, start_workers: bool, verbose: int = 0) -> None:
    """Serve `oracle` to KerasTuner workers until every trial has ended.

    Args:
        workers: with `start_workers`, start that many worker processes here, each with an equal
            share of the cores, and restart one that dies; otherwise wait for the user's workers.

    Raises:
        ConfigError: the oracle's address cannot be listened on.
        SearchlabError: a started worker kept dying, or every one exited with trials left.
    """
    from keras_tuner.src.distribute import oracle_chief  # KerasTuner's chief servicer: no public API serves it

    oracle.verbose = 0  # KerasTuner's own per-trial display
    path = job.search.workdir / JOB_FILE
    server, servicer = _listen(oracle, job.oracle)
    started: dict[str, subprocess.Popen[bytes]] = {}
    restarts = dict.fromkeys((f"tuner{k}" for k in range(workers)), 0)
    threads = threads_per_worker(workers)
    try:
        _write(path, job)
        for tuner_id in restarts if start_workers else ():
            started[tuner_id] = _start(path.parent, tuner_id, threads)
        if not start_workers and verbose >= 1:
            print(f"fine: the oracle listens on {job.oracle}; start {workers} workers, each with its own id: "
                  f"searchlab-worker --dir {path.parent} --id tuner0 (tuner1, ... for the others)", flush=True)
        # KerasTuner's own chief loop (`oracle_chief.start_server`) checks every 20 s and never
        # notices a dead worker, whose trial would then stay running for ever.
        while True:
            codes = {tuner_id: proc.poll() for tuner_id, proc in started.items()}
            if servicer.stop_triggered and oracle_chief.exit_chief(oracle):
                return
            for tuner_id in [t for t, code in codes.items() if code not in (None, 0)]:
                _stop(started[tuner_id])
                if restarts[tuner_id] == _RESTARTS:
                    raise SearchlabError(f"fine-stage worker {tuner_id} died {_RESTARTS + 1} times (exit code "
                                         f"{codes[tuner_id]}); its output above says why.")
                restarts[tuner_id] += 1
                print(f"fine: worker {tuner_id} died (exit code {codes[tuner_id]}); restarting it to retry its "
                      "trial", file=sys.stderr, flush=True)
                started[tuner_id] = _start(path.parent, tuner_id, threads)
            if started and all(code == 0 for code in codes.values()):
                raise SearchlabError("every fine-stage worker exited, yet the oracle has trials left.")
            time.sleep(1)
    finally:
        path.unlink(missing_ok=True)  # tells workers still waiting for the oracle to exit
        for proc in started.values():
            _stop(proc)
        server.stop(grace=None)


def work(directory: Path, tuner_id: str, oracle: str | None = None, threads: int | None = None) -> None:
    """Be worker `tuner_id`: pull the fine stage's trials from the chief, train and log them, until none are left.

    Args:
        directory: the tuner directory, or a folder holding several (the newest job is taken);
            waits until a chief has written its job there.
        oracle: host:port of the chief's oracle; default: the one in the job (`search.fine.oracle`).
        threads: TensorFlow's threads for training; default: every core.
    """
    from searchlab.console import ProgressPrinter
    from searchlab.records import fine_end, log_fine_trial, read_fine_trials
    from searchlab.tracking import Tracker

    path = _find_job(directory)
    job: WorkerJob = pickle.loads(path.read_bytes())
    host, _, port = (oracle or job.oracle).rpartition(":")
    # KerasTuner reads these when the tuner is built and when it searches.
    os.environ.update(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=port)
    if threads:  # read by the training process when it starts
        os.environ.update(tf_thread_env(threads))
    search = dataclasses.replace(job.search, workdir=path.parent)  # the shared directory as this machine sees it
    scoring = search.scoring
    tracker = Tracker(job.tracking_uri, job.experiment)
    progress = ProgressPrinter(scoring.display_name, stage_label=f"fine {tuner_id}")

    def on_trial(trial: FineTrial) -> None:
        log_fine_trial(tracker, job.stage_run, trial, scoring, trial.tuned, worker=tuner_id)
        if search.job.verbose >= 1:
            progress.on_trial_end(fine_end(trial, scoring, trial.tuned))

    # Trials already recorded (a resumed search, or a restarted worker's) are replayed, not logged twice.
    done = {trial_id: trial for trial_id, (trial, _) in read_fine_trials(tracker, job.stage_run).items()}
    tuner = search.tuner(on_trial, done, overwrite=False)
    threading.Thread(target=_exit_with_chief, args=(path, tuner), daemon=True).start()
    try:
        tuner.search(verbose=0)
    finally:
        tuner.stop()


def main(argv: list[str] | None = None) -> None:
    """Console entry point `searchlab-worker`."""
    parser = argparse.ArgumentParser(
        prog="searchlab-worker",
        description="A worker of searchlab's distributed fine stage (search.fine.workers): pulls trials from "
                    "the search process's KerasTuner oracle, trains them and logs them to its MLflow run.")
    parser.add_argument("--dir", type=Path, required=True,
                        help="the shared tuner directory the search prints, or the folder holding several "
                             "(e.g. mlruns/tuner): the newest fine stage there is joined")
    parser.add_argument("--id", required=True,
                        help="this worker's id, unique among the workers, e.g. tuner0; a worker restarted "
                             "with the same id retries the trial it was training")
    parser.add_argument("--oracle", help="host:port to reach the oracle at; default: search.fine.oracle")
    parser.add_argument("--threads", type=int, help="TensorFlow threads for training; default: every core")
    args = parser.parse_args(argv)
    if "chief" in args.id:
        parser.error("--id must not contain 'chief': KerasTuner reserves it for the oracle's process")
    silence_native_stderr()  # Python's own errors still reach the terminal
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # runs the cleanup in `work`
    try:
        work(args.dir, args.id, args.oracle, args.threads)
    except KeyboardInterrupt:
        sys.exit(130)


def _listen(oracle: Any, address: str) -> tuple[grpc.Server, Any]:
    """Serve `oracle` with KerasTuner's gRPC servicer at `address`."""
    # KerasTuner's gRPC service definition and servicer: no public API serves an oracle.
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    # One request at a time, as KerasTuner's chief does; no SO_REUSEPORT: a port in use must fail here.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=[("grpc.so_reuseport", 0)])
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        server.add_insecure_port(address)
    except RuntimeError:
        raise ConfigError(f"search.fine.oracle: cannot listen on {address} (port in use, or not an address of "
                          "this machine); choose another, e.g. search.fine.oracle=127.0.0.1:50052.") from None
    server.start()
    return server, servicer


def _write(path: Path, job: WorkerJob) -> None:
    """Write `job` so that a worker never reads half of it."""
    partial = path.with_suffix(".partial")
    partial.write_bytes(pickle.dumps(job))
    os.replace(partial, path)


def _start(directory: Path, tuner_id: str, threads: int) -> subprocess.Popen[bytes]:
    # Its own process group: `_stop` ends the worker together with its training process.
    return subprocess.Popen([sys.executable, "-m", "searchlab.infra.tuner_workers", "--dir", str(directory),
                             "--id", tuner_id, "--threads", str(threads)], start_new_session=True, stderr=sys.stderr)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End a started worker's process group: the worker and its training process."""
    end_group(proc)


def _find_job(directory: Path) -> Path:
    """The newest job file in `directory` or one level below; waits for one to appear."""
    told = False
    while True:
        found = {}
        for path in (directory / JOB_FILE, *directory.glob(f"*/{JOB_FILE}")):
            try:
                found[path] = path.stat().st_mtime
            except FileNotFoundError:
                pass
        if found:
            return max(found, key=lambda path: found[path])
        if not told:
            print(f"searchlab-worker: waiting for a fine stage to start in {directory}", flush=True)
            told = True
        time.sleep(1)


def _exit_with_chief(job_path: Path, tuner: Any) -> None:
    """Exit once the chief has removed its job: it has stopped serving, and a worker still waiting
    for its oracle would wait an hour (KerasTuner's gRPC timeout)."""
    while job_path.exists():
        time.sleep(2)
    tuner.stop()
    os._exit(0)


if __name__ == "__main__":
    main()
