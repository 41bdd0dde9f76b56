"""MLflow tracking: the only module that imports mlflow.

Run tree of one search (tags in brackets):

    search            [searchlab.run=search]   config, chosen params, test metrics, best_model
      coarse          [searchlab.run=stage, searchlab.stage=coarse]
        coarse-000 .. [searchlab.run=trial, searchlab.stage=coarse]
      fine            [searchlab.run=stage, searchlab.stage=fine]
        fine-000 ..   [searchlab.run=trial, searchlab.stage=fine]

Everything goes through `MlflowClient` with explicit run ids (no global active run),
and each trial is written in one `log_batch` call: per-call logging costs ~10 ms.
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

from searchlab.config import PROJECT_ROOT
from searchlab.errors import ConfigError

RUN_TAG = "searchlab.run"
STAGE_TAG = "searchlab.stage"
_MAX_PARAMS = 100  # log_batch's limit on params per call (metrics allow 1000)
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def default_tracking_uri() -> str:
    """SQLite inside the project's `mlruns/`, absolute, wherever the user runs from."""
    return f"sqlite:///{PROJECT_ROOT / 'mlruns' / 'mlflow.db'}"


def redact(text: str) -> str:
    """Hide `user:password@` in URIs."""
    return _CREDENTIALS.sub("***@", text)


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
    """A run read back from the store (to resume a search)."""

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
    """Writes a search's run tree to one MLflow experiment."""

    def __init__(self, uri: str | None, experiment: str) -> None:
        """Open (or create) `experiment` in the store at `uri` (None: the project's SQLite store).

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

    # -- runs -------------------------------------------------------------------------------

    def start_run(self, name: str, tags: Mapping[str, str], parent: str | None = None,
                  description: str | None = None) -> str:
        """Create a RUNNING run; it stays in `open_runs` until ended."""
        all_tags = dict(tags)
        if parent:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent
        if description:
            all_tags[MLFLOW_RUN_NOTE] = description
        with interrupts_held():
            run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
            self.open_runs.append(run.info.run_id)
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        with interrupts_held():
            self.client.set_terminated(run_id, status=status)
            if run_id in self.open_runs:
                self.open_runs.remove(run_id)

    def end_all(self, status: str) -> None:
        """End every run still open (innermost first), e.g. as KILLED on Ctrl-C or FAILED on an error."""
        for run_id in reversed(list(self.open_runs)):
            self.end_run(run_id, status)

    def log_trial(
        self,
        parent: str,
        name: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        curves: Mapping[str, list[float]],
        start_time: float,
        end_time: float,
        error: str | None = None,
        first_step: int = 0,
    ) -> str:
        """Write one finished trial as a complete run in a single batch, Ctrl-C held until it is written.

        If the write fails halfway, the partial run is deleted; a writer killed outright (SIGKILL) leaves
        it RUNNING, and its stage deletes it when it ends (`delete_partial_trials`). Either way a resumed
        search trains the trial again instead of reading back half of it.
        """
        all_tags = {**tags, MLFLOW_PARENT_RUN_ID: parent}
        if error:
            all_tags["searchlab.error"] = error[:5000]
        stamp = _ms(end_time)
        entries = [Metric(k, float(v), stamp, 0) for k, v in metrics.items() if _finite(v)]
        for key, values in curves.items():
            entries += [Metric(key, float(v), stamp, first_step + i) for i, v in enumerate(values) if _finite(v)]
        with interrupts_held():
            run = self.client.create_run(self.experiment_id, start_time=_ms(start_time), tags=all_tags,
                                         run_name=name)
            run_id = run.info.run_id
            try:
                self.log(run_id, params=params, metrics=entries)
                self.client.set_terminated(run_id, status="FAILED" if error else "FINISHED", end_time=stamp)
            except Exception:
                self.client.set_terminated(run_id, status="KILLED")
                self.client.delete_run(run_id)
                raise
        return run_id

    def delete_partial_trials(self, parent: str) -> int:
        """Delete the runs under `parent` still RUNNING that this process does not hold open: trials whose writer
        was killed halfway. Call it once nothing else writes under `parent` (its stage is ending)."""
        partial = [run.info.run_id for run in self.client.search_runs(
            [self.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}' and attributes.status = 'RUNNING'",
            max_results=50000) if run.info.run_id not in self.open_runs]
        for run_id in partial:
            self.client.set_terminated(run_id, status="KILLED")
            self.client.delete_run(run_id)
        return len(partial)

    # -- reading back, to resume ----------------------------------------------------------

    def find_search(self, which: str) -> str:
        """The run id of the search to resume: `last` (newest unfinished search) or a run id.

        Raises:
            ConfigError: no such search, or it already finished.
        """
        if which == "last":
            runs = self.client.search_runs([self.experiment_id], f"tags.`{RUN_TAG}` = 'search'",
                                           order_by=["attributes.start_time DESC"], max_results=1)
            if not runs:
                raise ConfigError(f"resume=last: experiment {self.experiment!r} has no search to resume.")
            run = runs[0]
        else:
            try:
                run = self.client.get_run(which)
            except mlflow.exceptions.MlflowException:
                raise ConfigError(f"resume={which!r} is not a run in {redact(self.uri)}.") from None
            if run.data.tags.get(RUN_TAG) != "search" or run.info.experiment_id != self.experiment_id:
                raise ConfigError(f"resume={which!r} is not a searchlab search run of experiment "
                                  f"{self.experiment!r}.")
        if run.info.status == "FINISHED":
            raise ConfigError(f"resume: search {run.info.run_id} already finished; nothing to resume.")
        return str(run.info.run_id)

    def reopen(self, run_id: str) -> None:
        """Mark an interrupted run RUNNING again; it is tracked in `open_runs`."""
        self.client.update_run(run_id, status="RUNNING")
        self.open_runs.append(run_id)

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
            stored.append(StoredRun(run.info.run_id, run.info.status, dict(run.data.tags), dict(run.data.params),
                                    dict(run.data.metrics), curves, first_step,
                                    (run.info.start_time or 0) / 1000, (run.info.end_time or 0) / 1000))
        return stored

    def read_text(self, run_id: str, path: str) -> str:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=self.uri)
        return Path(local).read_text()

    def work_dir(self, run_id: str) -> Path:
        """A folder that outlives an interrupted search (KerasTuner's state), beside a SQLite store."""
        if self.uri.startswith("sqlite:///"):
            return Path(self.uri.removeprefix("sqlite:///")).parent / "tuner" / run_id
        return Path.home() / ".cache" / "searchlab" / "tuner" / run_id

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

    def log_artifacts(self, run_id: str, local_dir: Path, path: str) -> None:
        self.client.log_artifacts(run_id, str(local_dir), path)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)

    def log_dict(self, run_id: str, data: Any, path: str) -> None:
        self.client.log_dict(run_id, data, path)

    def log_model(self, run_id: str, model: Any, example: np.ndarray) -> str:
        """Log a Keras model as `best_model` (Keras flavor, with signature); returns its model URI.

        The input example goes beside it as an artifact: MLflow 3.17's Keras flavor fails when
        given `input_example` (COMPAT.md; `tests/test_tracking.py` notices when that is fixed).
        The pip requirements are given, not inferred: MLflow's inference loads the model in a subprocess
        that imports TensorFlow (3.5-4.6 s of a ~5 s model log here) to find the same four packages.
        """
        from mlflow.models import infer_signature

        example = example.astype("float32")
        signature = infer_signature(example, np.asarray(model.predict(example, verbose=0)))
        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=run_id, nested=True) as active:
            info = mlflow.keras.log_model(model, name="best_model", signature=signature,
                                          pip_requirements=_model_requirements())
            self.client.log_dict(active.info.run_id, {"inputs": example.tolist()},
                                 "best_model_input_example.json")
        # `start_run` as a context manager ends the run; the search ends it itself.
        self.client.update_run(run_id, status="RUNNING")
        return str(info.model_uri)

    def register(self, model_uri: str, name: str, run_id: str, metric: str, higher_is_better: bool) -> str:
        """Register `model_uri` as a new version of `name`; move alias `champion` to it only if its
        `metric` (a parent-run metric such as test_accuracy) beats the current champion's.

        Returns a sentence saying what happened.
        """
        version = mlflow.register_model(model_uri, name, tags={"searchlab.run_id": run_id}).version
        new = self.client.get_run(run_id).data.metrics.get(metric)
        try:
            champion = self.client.get_model_version_by_alias(name, "champion")
        except mlflow.exceptions.MlflowException:
            champion = None
        old = None
        if champion is not None and champion.run_id:
            old = self.client.get_run(champion.run_id).data.metrics.get(metric)
        if champion is None or old is None or (new is not None and (new > old if higher_is_better else new < old)):
            self.client.set_registered_model_alias(name, "champion", version)
            before = "" if champion is None else f" (was version {champion.version}, {metric} {old})"
            return f"registered {name} version {version}; it is now the champion{before}"
        return (f"registered {name} version {version} ({metric} {new:.4g}); the champion stays version "
                f"{champion.version} ({metric} {old:.4g})")



def _model_requirements() -> list[str]:
    """What a logged model needs, pinned to the versions that trained it (MLflow adds itself)."""
    from importlib.metadata import PackageNotFoundError, version

    backends = []
    for name in ("tensorflow-cpu", "tensorflow"):  # whichever distribution provides TensorFlow here
        try:
            backends.append(f"{name}=={version(name)}")
            break
        except PackageNotFoundError:
            continue
    return [f"keras=={version('keras')}", f"numpy=={version('numpy')}", *backends]


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

