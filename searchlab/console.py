"""What a person sees on the terminal: progress lines, durations, where to look in MLflow."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

from searchlab.callbacks import SearchCallback, TrialEnd

_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
#: Libraries whose info and warnings (TensorFlow's retracing notes, MLflow's store set-up) are noise below verbose=2.
NOISY_LOGGERS = ("tensorflow", "absl", "mlflow", "alembic", "distributed")


@contextmanager
def quiet_libraries(verbose: int) -> Iterator[None]:
    """While open and below verbose=2, only the libraries' errors are logged; their levels are restored after
    (a notebook's logging is left as it was). Enter once they are imported: MLflow sets its logger's level when
    it loads."""
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS] if verbose < 2 else []
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def format_params(params: Mapping[str, Any]) -> str:
    """`units=96 layers=3 dropout=0.21`: short, stable, readable."""
    return " ".join(f"{k}={_short(v)}" for k, v in params.items())


def format_duration(seconds: float) -> str:
    """`02:05`, or `1:02:05` past an hour."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class ProgressPrinter(SearchCallback):
    """Prints `[coarse 3/20] 00:42 elapsed, ~03:10 left | best accuracy 0.9120 | coarse-002 accuracy 0.8870 ...`
    for each finished trial.

    Args:
        metric: the searched metric's name as people read it (accuracy, rmse, ...).
        stage_label: shown instead of the stage's own name (a distributed worker shows `fine tuner0`).
    """

    def __init__(self, metric: str, stream: TextIO | None = None, stage_label: str | None = None) -> None:
        self.metric, self.stream, self.stage_label = metric, stream, stage_label
        self.stage, self.done, self.failed = "", 0, 0
        self.total: int | None = None
        self.best: TrialEnd | None = None
        self.started = time.time()

    def on_stage_begin(self, stage: str, total: int | None) -> None:
        self.stage, self.total, self.done, self.failed = stage, total, 0, 0
        self.best = None
        self.started = time.time()

    def on_trial_end(self, trial: TrialEnd) -> None:
        self.done += 1
        if trial.ok:
            if self.best is None or trial.score > self.best.score:
                self.best = trial
        else:
            self.failed += 1
        elapsed = time.time() - self.started
        # a grid's edge round and a revisit come after its announced total: past it, the count goes on without one
        count = f"{self.done}/{self.total}" if self.total and self.done <= self.total else f"{self.done}"
        eta = ""
        if self.total and self.done < self.total:
            eta = f", ~{format_duration(elapsed / self.done * (self.total - self.done))} left"
        best = f"best {self.metric} {self.best.metric:.4f}" if self.best is not None else "no success yet"
        outcome = f"FAILED ({trial.error})" if not trial.ok else f"{self.metric} {trial.metric:.4f}"
        print(f"[{self.stage_label or self.stage or trial.stage} {count}] {format_duration(elapsed)} elapsed{eta} | "
              f"{best} | {trial.label} {outcome}  {format_params(trial.params)}",
              file=self.stream or sys.stdout, flush=True)


def run_url(experiment_id: str, run_id: str, host: str = "127.0.0.1", port: int = 5000) -> str:
    """Where the MLflow UI (`make ui`) shows a run."""
    return f"http://{host}:{port}/#/experiments/{experiment_id}/runs/{run_id}"


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A run's page: on the tracking server itself, or in the MLflow UI `make ui` serves for a local store."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"{redact(tracking_uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return run_url(experiment_id, run_id)


def where_to_look(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """How to open a run: on the tracking server itself, or with `make ui` for a local store."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {run_link(tracking_uri, experiment_id, run_id)}"
    return (f"run `make ui` (outside the repository: `mlflow ui --backend-store-uri {tracking_uri}`), then open "
            f"{run_url(experiment_id, run_id)}")


def redact(text: str) -> str:
    """Hide `user:password@` in URIs."""
    return _CREDENTIALS.sub("***@", text)


def silence_native_stderr() -> None:
    """Send TensorFlow's C++ log lines (which ignore TF_CPP_MIN_LOG_LEVEL before absl is set up) to /dev/null,
    keeping Python's own stderr (errors, tracebacks) on the terminal."""
    sys.stderr.flush()
    python_stderr = os.dup(2)
    sys.stderr = os.fdopen(python_stderr, "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
