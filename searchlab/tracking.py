"""MLflow plumbing: a store, its runs, and batched writes and reads. What the runs mean (tags, the run
tree of a search) is `searchlab.records`'; logging and registering the model is `searchlab.registry`'.

Everything goes through `MlflowClient` with explicit run ids: no global tracking URI, no fluent active run.
A finished child run is written in one `log_batch` call: per-call logging costs ~10 ms on SQLite.
"""

from __future__ import annotations

import fcntl
import json
import re
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE

from searchlab.console import redact
from searchlab.errors import ConfigError

_MAX_PARAMS = 100  # log_batch's limit on params per call (metrics allow 1000)


def default_tracking_uri() -> str:
    """SQLite in `./mlruns` of the directory searchlab runs in, as an absolute URI."""
    return f"sqlite:///{Path.cwd().resolve() / 'mlruns' / 'mlflow.db'}"


def _artifact_root(uri: str) -> str | None:
    """Artifacts beside a SQLite store (MLflow's default would be ./mlruns of the current directory)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return None


def _check_server(uri: str) -> None:
    """Fail within seconds when nothing answers at `uri` (MLflow itself retries for minutes)."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)  # type: ignore[no-untyped-call]
    try:  # any HTTP answer will do, even an error status: only an unreachable server is caught here
        http_request(creds, "/health", "GET", max_retries=0, timeout=5,  # type: ignore[no-untyped-call]
                     raise_on_status=False)
    except mlflow.exceptions.MlflowException as exc:
        found = re.search(r"\[Errno -?\d+\] ([^\"')]+)", str(exc))  # e.g. "Connection refused"
        raise ConfigError(
            f"tracking.uri={redact(uri)!r}: no MLflow tracking server answers there "
            f"({found.group(1) if found else 'no answer within 5 s'}). Start one with `make server` (PostgreSQL "
            "and mlflow server on this machine), point tracking.uri (or MLFLOW_TRACKING_URI, which tracking=server "
            "reads) at your team's server, or record locally with tracking=local.") from None


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """For a SQLite store: one process at a time creates its tables and experiments. Two searches started
    together on a new store (two terminals, a parallel sweep) otherwise both ran MLflow's table creation,
    and one failed with "table latest_metrics already exists"."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them.

    A store write cut halfway leaves SQLite locked for the clean-up that follows ("database is locked") and a
    half-written run behind; a write takes milliseconds, so holding the signal costs nothing a user notices.
    Signal handlers belong to the main thread: elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, _: held.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            signal.raise_signal(held[0])


@dataclass(frozen=True)
class StoredRun:
    """A run read back from the store."""

    run_id: str
    status: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    curves: dict[str, list[float]]
    first_step: int
    start_time: float
    end_time: float


class Tracker:
    """One experiment of one MLflow store: creates, ends, writes and reads back its runs.

    Runs this process opens stay in `open_runs` until ended, so that an interrupted search can end them all.
    """

    def __init__(self, uri: str | None, experiment: str) -> None:
        """Open (or create) `experiment` in the store at `uri` (None: `default_tracking_uri()`).

        Raises:
            ConfigError: `uri` is an HTTP(S) address where no server answers.
        """
        self.uri = uri or default_tracking_uri()
        if self.uri.startswith(("http://", "https://")):
            _check_server(self.uri)
        self.experiment = experiment
        with _store_lock(self.uri):
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                self.experiment_id = self.client.create_experiment(experiment,
                                                                   artifact_location=_artifact_root(self.uri))
            else:
                self.experiment_id = found.experiment_id
        self.open_runs: list[str] = []

    # -- run lifecycle ----------------------------------------------------------------------

    def start_run(self, name: str, tags: Mapping[str, str], parent: str | None = None) -> str:
        """Create a RUNNING run (under `parent`, if given); it stays in `open_runs` until ended."""
        all_tags = {**tags, **({MLFLOW_PARENT_RUN_ID: parent} if parent else {})}
        with interrupts_held():
            run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
            self.open_runs.append(run.info.run_id)
        return run.info.run_id

    def reopen(self, run_id: str) -> None:
        """Mark an interrupted run RUNNING again; it is tracked in `open_runs`."""
        self.client.update_run(run_id, status="RUNNING")
        self.open_runs.append(run_id)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        with interrupts_held():
            self.client.set_terminated(run_id, status=status)
            if run_id in self.open_runs:
                self.open_runs.remove(run_id)

    def end_all(self, status: str) -> None:
        """End every run still open (innermost first), e.g. as KILLED on Ctrl-C or FAILED on an error."""
        for run_id in reversed(list(self.open_runs)):
            self.end_run(run_id, status)

    def log_finished_run(self, parent: str, name: str, *, tags: Mapping[str, str], params: Mapping[str, Any],
                         metrics: Mapping[str, float], curves: Mapping[str, list[float]], start_time: float,
                         end_time: float, failed: bool = False, first_step: int = 0) -> str:
        """Write a finished child run of `parent` whole, in a single batch, with Ctrl-C held until it is written.

        `curves` are per-step series starting at step `first_step`. If the write fails halfway, the partial
        run is deleted; a writer killed outright (SIGKILL) leaves it RUNNING, and its parent deletes it when
        it ends (`delete_partial_runs`). Either way nothing half-written is read back as finished.
        """
        stamp = _ms(end_time)
        entries = [Metric(k, float(v), stamp, 0) for k, v in metrics.items() if _finite(v)]
        for key, values in curves.items():
            entries += [Metric(key, float(v), stamp, first_step + i) for i, v in enumerate(values) if _finite(v)]
        with interrupts_held():
            run = self.client.create_run(self.experiment_id, start_time=_ms(start_time), run_name=name,
                                         tags={**tags, MLFLOW_PARENT_RUN_ID: parent})
            run_id = run.info.run_id
            try:
                self.log(run_id, params=params, metrics=entries)
                self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED", end_time=stamp)
            except Exception:
                self.client.set_terminated(run_id, status="KILLED")
                self.client.delete_run(run_id)
                raise
        return run_id

    def delete_partial_runs(self, parent: str) -> int:
        """Delete the runs under `parent` still RUNNING that this process does not hold open: runs whose writer
        was killed halfway. Call it once nothing else writes under `parent`."""
        partial = [run.info.run_id for run in self.client.search_runs(
            [self.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}' and attributes.status = 'RUNNING'",
            max_results=50000) if run.info.run_id not in self.open_runs]
        for run_id in partial:
            self.client.set_terminated(run_id, status="KILLED")
            self.client.delete_run(run_id)
        return len(partial)

    # -- reading back ------------------------------------------------------------------------

    def get(self, run_id: str) -> StoredRun | None:
        """The run `run_id` (without curves), or None when the store has no such run in this experiment."""
        try:
            run = self.client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            return None
        if run.info.experiment_id != self.experiment_id:
            return None
        return _stored(run, {}, 0)

    def newest(self, tags: Mapping[str, str]) -> StoredRun | None:
        """The most recently started run carrying every one of `tags`, or None."""
        query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
        runs = self.client.search_runs([self.experiment_id], query, order_by=["attributes.start_time DESC"],
                                       max_results=1)
        return _stored(runs[0], {}, 0) if runs else None

    def children(self, parent: str) -> list[StoredRun]:
        """Every run directly under `parent`, with its curves, oldest first."""
        runs = self.client.search_runs([self.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}'",
                                       order_by=["attributes.start_time ASC"], max_results=50000)
        stored = []
        for run in runs:
            curves, first_step = {}, 0
            for key in run.data.metrics:
                history = sorted(self.client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
                if len(history) > 1 or (history and history[0].step > 0):
                    curves[key] = [m.value for m in history]
                    first_step = history[0].step
            stored.append(_stored(run, curves, first_step))
        return stored

    def read_text(self, run_id: str, path: str) -> str:
        """The text artifact `path` of run `run_id`."""
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=self.uri)
        return Path(local).read_text()

    # -- values -----------------------------------------------------------------------------

    def log(self, run_id: str, params: Mapping[str, Any] | None = None,
            metrics: Iterable[Metric] | Mapping[str, float] = (), tags: Mapping[str, str] | None = None) -> None:
        """Params, metrics and tags in as few calls as MLflow's batch limits allow."""
        if isinstance(metrics, Mapping):
            now = _ms(time.time())
            metrics = [Metric(k, float(v), now, 0) for k, v in metrics.items() if _finite(v)]
        metric_chunks: list[list[Metric]] = _chunks(list(metrics), 1000)
        param_list = [Param(k, redact(_param_text(v))) for k, v in (params or {}).items()]
        param_chunks: list[list[Param]] = _chunks(param_list, _MAX_PARAMS)
        tag_list = [RunTag(k, v) for k, v in (tags or {}).items()]
        empty: list[Any] = []
        for i, (metric_chunk, param_chunk) in enumerate(zip_longest(metric_chunks, param_chunks, fillvalue=empty)):
            self.client.log_batch(run_id, metrics=metric_chunk, params=param_chunk, tags=tag_list if i == 0 else [])
        if not metric_chunks and not param_chunks and tag_list:
            self.client.log_batch(run_id, tags=tag_list)

    def set_description(self, run_id: str, text: str) -> None:
        """The run's description in the MLflow UI (Markdown)."""
        self.log(run_id, tags={MLFLOW_RUN_NOTE: text})

    def log_artifacts(self, run_id: str, local_dir: Path, path: str) -> None:
        self.client.log_artifacts(run_id, str(local_dir), path)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)

    def log_dict(self, run_id: str, data: Any, path: str) -> None:
        self.client.log_dict(run_id, data, path)


def _stored(run: Any, curves: dict[str, list[float]], first_step: int) -> StoredRun:
    return StoredRun(run.info.run_id, run.info.status, dict(run.data.tags), dict(run.data.params),
                     dict(run.data.metrics), curves, first_step,
                     (run.info.start_time or 0) / 1000, (run.info.end_time or 0) / 1000)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _param_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))  # the shortest text that reads back exactly: a resumed search needs that
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _finite(value: Any) -> bool:
    return value is not None and bool(np.isfinite(float(value)))

