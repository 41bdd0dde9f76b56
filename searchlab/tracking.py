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

import json
import re
import time
from itertools import zip_longest
from pathlib import Path
from typing import Any, Iterable, Mapping

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE

from searchlab.config import PROJECT_ROOT

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


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class Tracker:
    """Writes a search's run tree to one MLflow experiment."""

    def __init__(self, uri: str | None, experiment: str) -> None:
        self.uri = uri or default_tracking_uri()
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=_artifact_root(self.uri))
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
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
        self.open_runs.append(run.info.run_id)
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
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
        """Write one finished trial as a complete run in a single batch."""
        all_tags = {**tags, MLFLOW_PARENT_RUN_ID: parent}
        if error:
            all_tags["searchlab.error"] = error[:5000]
        run = self.client.create_run(self.experiment_id, start_time=_ms(start_time), tags=all_tags, run_name=name)
        run_id = run.info.run_id
        stamp = _ms(end_time)
        entries = [Metric(k, float(v), stamp, 0) for k, v in metrics.items() if _finite(v)]
        for key, values in curves.items():
            entries += [Metric(key, float(v), stamp, first_step + i) for i, v in enumerate(values) if _finite(v)]
        self.log(run_id, params=params, metrics=entries)
        self.client.set_terminated(run_id, status="FAILED" if error else "FINISHED", end_time=stamp)
        return run_id

    # -- values -----------------------------------------------------------------------------

    def log(self, run_id: str, params: Mapping[str, Any] | None = None,
            metrics: Iterable[Metric] | Mapping[str, float] = (), tags: Mapping[str, str] | None = None) -> None:
        """Params, metrics and tags in as few calls as MLflow's batch limits allow."""
        if isinstance(metrics, Mapping):
            now = _ms(time.time())
            metrics = [Metric(k, float(v), now, 0) for k, v in metrics.items() if _finite(v)]
        metric_chunks = _chunks(list(metrics), 1000)
        param_chunks = _chunks([Param(k, redact(_param_text(v))) for k, v in (params or {}).items()], _MAX_PARAMS)
        tag_list = [RunTag(k, v) for k, v in (tags or {}).items()]
        for i, (metric_chunk, param_chunk) in enumerate(zip_longest(metric_chunks, param_chunks, fillvalue=[])):
            self.client.log_batch(run_id, metrics=metric_chunk, params=param_chunk, tags=tag_list if i == 0 else [])
        if not metric_chunks and not param_chunks and tag_list:
            self.client.log_batch(run_id, tags=tag_list)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)

    def log_dict(self, run_id: str, data: Any, path: str) -> None:
        self.client.log_dict(run_id, data, path)

    def log_model(self, run_id: str, model: Any, example: np.ndarray) -> str:
        """Log a Keras model as `best_model` (Keras flavor, with signature); returns its model URI.

        The input example goes beside it as an artifact: MLflow 3.17's Keras flavor fails when
        given `input_example` (COMPAT.md; `tests/test_tracking.py` notices when that is fixed).
        """
        from mlflow.models import infer_signature

        example = example.astype("float32")
        signature = infer_signature(example, np.asarray(model.predict(example, verbose=0)))
        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=run_id, nested=True) as active:
            info = mlflow.keras.log_model(model, name="best_model", signature=signature)
            self.client.log_dict(active.info.run_id, {"inputs": example.tolist()},
                                 "best_model_input_example.json")
        # `start_run` as a context manager ends the run; the search ends it itself.
        self.client.update_run(run_id, status="RUNNING")
        return str(info.model_uri)

    def ui_url(self, run_id: str, host: str = "127.0.0.1", port: int = 5000) -> str:
        return f"http://{host}:{port}/#/experiments/{self.experiment_id}/runs/{run_id}"


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
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _finite(value: Any) -> bool:
    return value is not None and bool(np.isfinite(float(value)))

