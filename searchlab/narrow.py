"""Narrowing: from coarse results to the fine stage's search space. Pure code.

Influence of a hyperparameter is the share of the coarse scores' rank variance its value
explains: the adjusted correlation ratio (epsilon squared) of the score ranks grouped by
the parameter's value (categories, or three quantile bins of the, log-aware, value).
Ranks, not raw scores: a few diverged candidates (an RMSE of 90 among 8s) would otherwise
make the variance theirs, and the influence of whatever they happen to share.
The most influential few keep a range spanning the best candidates' values; the
rest are fixed at the best candidate's values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from searchlab.space import Param, Space

_BINS = 3  # quantile bins per numeric hyperparameter: few samples cannot support more
_MIN_TOP = 3  # the narrowed range spans at least this many of the best candidates
_MARGIN = 0.1  # widen a narrowed range by this share of the original span on each side


@dataclass(frozen=True)
class Decision:
    """What narrowing did with one hyperparameter, and why."""

    name: str
    influence: float
    original: Param
    narrowed: Param | None  # None when fixed
    fixed_value: Any = None
    why_fixed: str = ""

    @property
    def kept(self) -> bool:
        return self.narrowed is not None

    def explain(self) -> str:
        share = f"explains {self.influence:.0%} of the score ranks' variance"
        if self.narrowed is None:
            value = _fmt(self.fixed_value)
            return f"{self.name}: {share}; fixed at {value}, the best candidate's value ({self.why_fixed})"
        return f"{self.name}: {share}; kept, {_range(self.original)} -> {_range(self.narrowed)}"


@dataclass(frozen=True)
class FineSpace:
    """The fine stage's space: tuned ranges, fixed values and the account of each choice."""

    tuned: dict[str, Param]
    fixed: dict[str, Any]
    decisions: tuple[Decision, ...]
    n_candidates: int
    n_top: int
    n_failed: int

    def account(self) -> str:
        """A human-readable account of every decision, most influential first."""
        lines = [
            f"Narrowed from {self.n_candidates} coarse candidates ({self.n_failed} failed, counted as the worst "
            f"score); ranges span the best {self.n_top}, widened by {_MARGIN:.0%} of the original span.",
        ]
        lines += [f"- {d.explain()}" for d in self.decisions]
        return "\n".join(lines)


def narrow(
    trials: Sequence[tuple[Mapping[str, Any], float]],
    space: Space,
    max_params: int,
    top_fraction: float,
) -> FineSpace:
    """Build the fine space from coarse `(params, score)` pairs (score higher is better, NaN if failed).

    Args:
        trials: every coarse candidate's sampled values and mean CV score.
        space: the coarse space the values were sampled from.
        max_params: how many hyperparameters to keep searching.
        top_fraction: share of the best candidates whose values bound the narrowed ranges.

    Raises:
        ValueError: no trial has a finite score.
    """
    scores = np.array([score for _, score in trials], dtype="float64")
    ok = np.isfinite(scores)
    if not ok.any():
        raise ValueError("every coarse candidate failed; there is nothing to narrow from")
    # for influence: failing is as bad as the worst success (tied with it), and only the order counts
    ranks = rankdata(np.where(ok, scores, scores[ok].min()))
    order = np.argsort(-np.where(ok, scores, -np.inf), kind="stable")  # failures rank below every success
    n_top = min(int(ok.sum()), max(_MIN_TOP, math.ceil(top_fraction * ok.sum())))
    top = [trials[i][0] for i in order[:n_top]]
    best = trials[int(order[0])][0]

    influence = {name: _influence([t[0][name] for t in trials], ranks, param) for name, param in space.items()}
    ranked = sorted(space, key=lambda name: -influence[name])
    tuned: dict[str, Param] = {}
    decisions = []
    for name in ranked:
        param = space[name]
        narrowed = _narrow_param(param, [t[name] for t in top])
        if len(tuned) < max_params and not _degenerate(narrowed):
            tuned[name] = narrowed
            decisions.append(Decision(name, influence[name], param, narrowed))
        else:
            why = (f"the best {n_top} candidates agree on it" if _degenerate(narrowed)
                   else f"only the {max_params} most influential are searched further")
            decisions.append(Decision(name, influence[name], param, None, param.cast(best[name]), why))
    fixed = {d.name: d.fixed_value for d in decisions if not d.kept}
    return FineSpace(tuned, fixed, tuple(decisions), len(trials), n_top, int((~ok).sum()))


def _influence(values: list[Any], scores: np.ndarray, param: Param) -> float:
    """Adjusted share of the variance of `scores` explained by grouping on this parameter's value."""
    if param.is_numeric:
        x = np.array([float(v) for v in values])
        x = np.log(x) if param.log else x
        edges = np.unique(np.quantile(x, np.linspace(0, 1, _BINS + 1)[1:-1]))
        groups = np.searchsorted(edges, x, side="right")
    else:
        labels = [str(v) for v in values]
        groups = np.unique(labels, return_inverse=True)[1]
    k, n = len(np.unique(groups)), len(scores)
    if k < 2 or n <= k:
        return 0.0
    grand = scores.mean()
    ss_total = float(((scores - grand) ** 2).sum())
    if ss_total == 0:
        return 0.0
    ss_between = sum(float((groups == g).sum() * (scores[groups == g].mean() - grand) ** 2) for g in np.unique(groups))
    ms_within = (ss_total - ss_between) / (n - k)
    return float(max(0.0, (ss_between - (k - 1) * ms_within) / (ss_total + ms_within)))


def _narrow_param(param: Param, top_values: list[Any]) -> Param:
    if not param.is_numeric:
        present = {str(v) for v in top_values}
        return Param(param.name, "choice", values=tuple(v for v in param.values if str(v) in present))
    forward, backward = (math.log, math.exp) if param.log else (float, float)
    lo_bound, hi_bound = forward(param.low), forward(param.high)
    values = [forward(float(v)) for v in top_values]
    margin = _MARGIN * (hi_bound - lo_bound)
    low = backward(max(lo_bound, min(values) - margin))
    high = backward(min(hi_bound, max(values) + margin))
    # exp(log(x)) may stray by an ulp: stay inside the original bounds and around the top values
    top = [float(v) for v in top_values]
    low = min(max(param.low, low), min(top))
    high = max(min(param.high, high), max(top))
    if param.kind == "int":
        low, high = math.ceil(low - 1e-9), math.floor(high + 1e-9)
    return Param(param.name, param.kind, float(low), float(high), param.log)


def _degenerate(param: Param) -> bool:
    return len(param.values) < 2 if param.kind == "choice" else param.low >= param.high


def _range(param: Param) -> str:
    if param.kind == "choice":
        return "{" + ", ".join(map(str, param.values)) + "}"
    scale = " log" if param.log else ""
    return f"[{_fmt(param.cast(param.low))}, {_fmt(param.cast(param.high))}]{scale}"


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
