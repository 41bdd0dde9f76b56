"""How sure a test score is: bootstrap intervals over the test rows, and paired comparisons of two models.

Every model of a search (the searched network, the trivial baseline, the reference trees) is scored on the same
resamples of the test rows: the resamples are drawn from the seed alone, so the same seed and row count give
the same resamples, and a difference between two models is taken resample by resample (paired). Pure numpy:
the metrics are `searchlab.metrics.metric_values` with each resample's row counts as weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from searchlab.metrics import Scoring, metric_values

LEVEL = 0.95  # of every interval
_CHUNK = 2_000_000  # resample weights held at once (rows x resamples): bounds memory on large test splits


@dataclass(frozen=True)
class Estimate:
    """A metric on the test rows and its bootstrap interval (percentiles of the resampled values)."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


@dataclass(frozen=True)
class Comparison:
    """Model a against model b on one metric, resample by resample: the difference of scores (higher is better,
    so a positive difference favours a) and its interval."""

    metric: str
    difference: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """"ahead" (a better on nearly every resample), "behind", or "level" (the interval holds 0)."""
        if self.low > 0:
            return "ahead"
        if self.high < 0:
            return "behind"
        return "level"

    def __str__(self) -> str:
        return f"{self.difference:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def resample_weights(n_rows: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """How often each of `n_rows` rows is drawn in each of `n_resamples` bootstrap resamples (rows drawn with
    replacement, as many as there are), in chunks of resamples: (chunk x n_rows) arrays. Depends on the seed and
    sizes only, so every model scored with the same seed sees the same resamples."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK // max(1, n_rows))
    for start in range(0, n_resamples, per_chunk):
        size = min(per_chunk, n_resamples - start)
        drawn = rng.integers(0, n_rows, size=(size, n_rows)) + n_rows * np.arange(size)[:, None]
        yield np.bincount(drawn.ravel(), minlength=size * n_rows).reshape(size, n_rows).astype("float64")


def bootstrap(task: str, y_true: np.ndarray, predictions: dict[str, np.ndarray], *, n_resamples: int = 1000,
              seed: int = 0) -> dict[str, np.ndarray]:
    """Every metric of every model on the same resamples: `"<model>/<metric>"` -> one value per resample.

    Args:
        predictions: model name -> its test prediction (class probabilities, or values).
    """
    chunks: dict[str, list[np.ndarray]] = {}
    for weights in resample_weights(len(y_true), n_resamples, seed):
        for model, prediction in predictions.items():
            for name, values in metric_values(task, y_true, prediction, weights).items():
                chunks.setdefault(f"{model}/{name}", []).append(values)
    return {key: np.concatenate(parts) for key, parts in chunks.items()}


def estimate(value: float, resampled: np.ndarray) -> Estimate:
    """`value` with the percentile interval of its `resampled` values (resamples where it is undefined dropped)."""
    finite = resampled[np.isfinite(resampled)]
    if not finite.size:
        return Estimate(value, float("nan"), float("nan"))
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Estimate(value, float(low), float(high))


def compare(scoring: Scoring, a: np.ndarray, b: np.ndarray, value_a: float, value_b: float) -> Comparison:
    """Paired comparison on `scoring`'s metric of two models' values on the same resamples (`a`, `b`), and on
    the test rows themselves (`value_a`, `value_b`)."""
    sign = -1.0 if scoring.negated else 1.0
    interval = estimate(sign * (value_a - value_b), sign * (a - b))
    return Comparison(scoring.display_name, interval.value, interval.low, interval.high)
