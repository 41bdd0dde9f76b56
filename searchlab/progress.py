"""Live progress on the terminal: one line per finished trial."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO


def format_params(params: Mapping[str, Any]) -> str:
    """`units=96 layers=3 dropout=0.21`: short, stable, readable."""
    return " ".join(f"{k}={_short(v)}" for k, v in params.items())


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class StageProgress:
    """Prints `[coarse  3/20] 00:42 elapsed, ~03:10 left | best 0.912 | 0.887  units=96 ...`."""

    def __init__(self, stage: str, total: int | None, metric: str, verbose: int, stream: TextIO = sys.stdout) -> None:
        self.stage, self.total, self.metric, self.verbose, self.stream = stage, total, metric, verbose, stream
        self.done = self.failed = 0
        self.best: float | None = None
        self.started = time.time()

    def trial(self, value: float | None, params: Mapping[str, Any], negated: bool, error: str | None = None,
              label: str | None = None) -> None:
        """Report one finished trial; `value` is the metric as people read it (RMSE positive)."""
        self.done += 1
        if error is None and value is not None:
            better = self.best is None or (value < self.best if negated else value > self.best)
            self.best = value if better else self.best
        else:
            self.failed += 1
        if self.verbose < 1:
            return
        elapsed = time.time() - self.started
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        eta = ""
        if self.total and self.done < self.total:
            eta = f", ~{format_duration(elapsed / self.done * (self.total - self.done))} left"
        best = f"best {self.metric} {self.best:.4f}" if self.best is not None else "no success yet"
        outcome = f"FAILED ({error})" if error else f"{self.metric} {value:.4f}"
        tag = f" {label}" if label else ""
        print(f"[{self.stage} {count}] {format_duration(elapsed)} elapsed{eta} | {best} |{tag} {outcome}  "
              f"{format_params(params)}", file=self.stream, flush=True)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
