"""Narrowing: from coarse results to the fine stage's search space. Pure code.

Influence of a hyperparameter is the share of the coarse scores' rank variance its value
explains: the adjusted R squared of a least-squares fit of the score ranks on the value (for a
number: its standardized, log-aware position and that squared, so a trend or an optimum inside
the range; for a choice: one indicator per category), that is, beyond what as many random
columns would explain. Ranks, not raw scores: a few diverged candidates (an RMSE of 90 among
8s) would otherwise make the variance theirs, and the influence of whatever they happen to
share.

With a few dozen candidates and ten hyperparameters, the largest influence is sizeable
even when the score depends on none of them, so each influence comes with a 95% interval
(bootstrap over candidates) and a permutation test against chance: the score ranks are
shuffled over the candidates, and a hyperparameter is *shown to matter* when its influence
beats the largest of all hyperparameters' influences in 95% of the shuffles (a family-wise
test: with nothing to find, 5% of searches report anything). Those are searched first;
each free place goes to the hyperparameter that explains most of what those before it leave
unexplained (forward selection: when two matter, the second stands out once the first is
accounted for). The searched few keep a range spanning the best candidates' values; the
rest are fixed: a number at the best candidate's value, a choice at the one whose
candidates rank best on average (a single lucky candidate does not decide a choice).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from searchlab.space import Param, Space

_MIN_TOP = 3  # the narrowed range spans at least this many of the best candidates
_MARGIN = 0.1  # widen a narrowed range by this share of the original span on each side
_ONLY = "only {} are searched further: those shown to matter, then those explaining most of the rest"
ALPHA = 0.05  # family-wise level of the test against chance
_RESAMPLES = 1000  # permutations, and bootstrap resamples, per narrowing


@dataclass(frozen=True)
class Influence:
    """A hyperparameter's influence on the coarse score ranks, with its uncertainty."""

    share: float  # adjusted R squared of the score ranks on the value (`_design`), in [0, 1]
    low: float  # 95% bootstrap interval over candidates
    high: float
    p_value: float  # family-wise permutation p-value against "the score depends on no hyperparameter"

    @property
    def shown(self) -> bool:
        """Distinguishable from chance at the family-wise level `ALPHA`."""
        return self.p_value <= ALPHA

    def describe(self) -> str:
        verdict = "shown to matter" if self.shown else "not distinguishable from chance"
        return f"{self.share:.0%} (95% interval {self.low:.0%}-{self.high:.0%}; p={self.p_value:.3f}, {verdict})"


@dataclass(frozen=True)
class Decision:
    """What narrowing did with one hyperparameter, and why."""

    name: str
    influence: Influence
    original: Param
    narrowed: Param | None  # None when fixed
    fixed_value: Any = None
    why_fixed: str = ""

    @property
    def kept(self) -> bool:
        return self.narrowed is not None

    def explain(self) -> str:
        share = f"explains {self.influence.describe()} of the score ranks' variance"
        if self.narrowed is None:
            value = _fmt(self.fixed_value)
            return f"{self.name}: {share}; fixed at {value}, {self.why_fixed}"
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
    decided: tuple[str, ...] = ()  # how the choices outside the narrowing (paired comparisons) went, a line each
    left_open: dict[str, Param] = dataclasses.field(default_factory=dict)  # near ties the fine stage settles first

    def with_decided(self, fixed: Mapping[str, Any], why: Sequence[str],
                     left_open: Mapping[str, Param] | None = None) -> FineSpace:
        """This space with the choices the coarse stage decided otherwise (its paired comparisons) fixed, those it
        `left_open` (near ties, with their contenders) for the fine stage, and the account's lines on each."""
        return dataclasses.replace(self, fixed={**self.fixed, **fixed}, decided=(*self.decided, *why),
                                   left_open={**self.left_open, **(left_open or {})})

    @property
    def shown(self) -> list[str]:
        """The hyperparameters shown to matter, most influential first."""
        return [d.name for d in self.decisions if d.influence.shown]

    def account(self) -> str:
        """A human-readable account of every decision, those shown to matter first."""
        shown = self.shown
        evidence = (f"Shown to matter (family-wise permutation test, {ALPHA:.0%} level): {', '.join(shown)}."
                    if shown else
                    f"No hyperparameter shown to matter: no influence is distinguishable from chance (family-wise "
                    f"permutation test, {ALPHA:.0%} level, {self.n_candidates} candidates). The fine stage searches "
                    f"those explaining most of the score ranks anyway; more coarse candidates would tell more.")
        lines = [
            f"Narrowed from {self.n_candidates} coarse candidates ({self.n_failed} failed, counted as the worst "
            f"score); ranges span the best {self.n_top}, widened by {_MARGIN:.0%} of the original span.",
            evidence,
        ]
        lines += [f"- {d.explain()}" for d in self.decisions]
        lines += [f"- {line}" for line in self.decided]
        return "\n".join(lines)


def narrow(
    trials: Sequence[tuple[Mapping[str, Any], float]],
    space: Space,
    max_params: int,
    top_fraction: float,
    *,
    seed: int = 0,
) -> FineSpace:
    """Build the fine space from coarse `(params, score)` pairs (score higher is better, NaN if failed).

    Args:
        trials: every coarse candidate's sampled values and mean CV score.
        space: the coarse space the values were sampled from.
        max_params: how many hyperparameters to keep searching.
        top_fraction: share of the best candidates whose values bound the narrowed ranges.
        seed: seeds the permutations and bootstrap resamples (the same inputs give the same result).

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

    features = {name: _design([t[0][name] for t in trials], param) for name, param in space.items()}
    influence = influences(features, ranks, np.random.default_rng(seed))
    waiting = sorted(space, key=lambda name: (not influence[name].shown, -influence[name].share))
    tuned: dict[str, Param] = {}
    decisions: list[Decision] = []
    while waiting:
        name = waiting[0]
        if not influence[name].shown and len(tuned) < max_params:
            name = _explains_most_of_the_rest(waiting, features, [features[d.name] for d in decisions], ranks)
        waiting.remove(name)
        param = space[name]
        narrowed = _narrow_param(param, [t[name] for t in top])
        if len(tuned) < max_params and not _degenerate(narrowed):
            tuned[name] = narrowed
            decisions.append(Decision(name, influence[name], param, narrowed))
        elif _degenerate(narrowed):
            decisions.append(Decision(name, influence[name], param, None, param.cast(best[name]),
                                      f"the best {n_top} candidates' value"))
        elif param.kind == "choice":
            value, mean_rank = _best_on_average([t[0][name] for t in trials], ranks, param)
            decisions.append(Decision(name, influence[name], param, None, value,
                                      f"the choice whose candidates rank best on average ({mean_rank:.1f} of "
                                      f"{len(trials)}, shrunk towards the mean); {_ONLY.format(max_params)}"))
        else:
            decisions.append(Decision(name, influence[name], param, None, param.cast(best[name]),
                                      f"the best candidate's value; {_ONLY.format(max_params)}"))
    decisions.sort(key=lambda d: (not d.influence.shown, -d.influence.share))  # the account reads by influence
    fixed = {d.name: d.fixed_value for d in decisions if not d.kept}
    return FineSpace(tuned, fixed, tuple(decisions), len(trials), n_top, int((~ok).sum()))


def influences(features: Mapping[str, np.ndarray], scores: np.ndarray, rng: np.random.Generator,
               resamples: int = _RESAMPLES) -> dict[str, Influence]:
    """Each hyperparameter's influence on `scores` (higher is better; ranks here) from its design matrix
    `features[name]` (`_design`): the share with a bootstrap interval and a family-wise permutation p-value.

    The p-values are step-down (Westfall and Young's max-T): the most influential is tested against the
    largest influence of all hyperparameters under shuffled scores, the next against the largest of the rest,
    and so on, each p-value at least the previous one. With nothing to find, `ALPHA` of searches show anything.
    """
    n = len(scores)
    shares = {name: float(_explained(design, scores[None, :])[0]) for name, design in features.items()}
    names = sorted(shares, key=lambda name: -shares[name])
    shuffled = scores[rng.permuted(np.tile(np.arange(n), (resamples, 1)), axis=1)]  # the same for every name
    null = {name: _explained(features[name], shuffled) for name in names}
    picks = rng.integers(0, n, size=(resamples, n))
    resampled = rankdata(scores[picks], axis=1)
    result: dict[str, Influence] = {}
    p_value = 0.0
    for i, name in enumerate(names):
        null_max = np.max([null[other] for other in names[i:]], axis=0)
        p_value = max(p_value, (1 + int((null_max >= shares[name] - 1e-12).sum())) / (1 + resamples))
        low, high = np.quantile(_explained(features[name], resampled, picks), [0.025, 0.975])
        result[name] = Influence(shares[name], float(low), float(high), p_value if shares[name] > 0 else 1.0)
    return result


def _explains_most_of_the_rest(names: Sequence[str], features: Mapping[str, np.ndarray], before: Sequence[np.ndarray],
                               ranks: np.ndarray) -> str:
    """Forward selection: of `names`, the one whose design explains most of the score ranks that the designs
    `before` it leave unexplained (the residuals of a least-squares fit on them). Two hyperparameters that both
    matter each explain only part of the ranks; once the first is accounted for, the second stands out from
    those that correlate with the ranks by chance."""
    design = np.column_stack([np.ones(len(ranks)), *before])
    left = ranks - design @ np.linalg.lstsq(design, ranks, rcond=None)[0]
    return max(names, key=lambda name: float(_explained(features[name], left[None, :])[0]))


def _best_on_average(values: list[Any], ranks: np.ndarray, param: Param, prior: float = 2.0) -> tuple[Any, float]:
    """The choice whose candidates' score ranks are highest on average, each mean shrunk towards the overall mean
    as if `prior` average candidates had drawn it too (one lucky candidate is not evidence); and that mean."""
    labels = np.array([str(v) for v in values])
    overall = float(ranks.mean())
    means = {choice: (float(ranks[labels == str(choice)].sum()) + prior * overall)
             / (int((labels == str(choice)).sum()) + prior) for choice in param.values}
    choice = max(param.values, key=lambda c: means[c])  # ties: the first in the space's order
    return choice, means[choice]


def _design(values: list[Any], param: Param) -> np.ndarray:
    """The columns a hyperparameter's value explains the score with: for a number, its position in the range
    (log-aware) and that squared (a trend or an optimum inside the range); for a choice, one indicator per
    category but the first."""
    if param.is_numeric:
        x = np.array([float(v) for v in values])
        x = np.log(x) if param.log else x
        x = (x - x.mean()) / (x.std() or 1.0)
        return np.column_stack([x, x**2 - (x**2).mean()]) if len(np.unique(x)) > 2 else x[:, None]
    codes = np.unique([str(v) for v in values], return_inverse=True)[1]
    return (codes[:, None] == np.arange(1, codes.max() + 1)[None, :]).astype("float64")


def _explained(design: np.ndarray, scores: np.ndarray, picks: np.ndarray | None = None) -> np.ndarray:
    """Adjusted R squared of a least-squares fit of each row of `scores` (rows: resamples) on `design` (or on
    `design[picks]`, row by row): the share of variance explained beyond what as many random columns would
    explain; 0 where negative or undefined."""
    rows, n = scores.shape
    z = design[picks] if picks is not None else np.broadcast_to(design, (rows, *design.shape))
    z = np.concatenate([np.ones((rows, n, 1)), z], axis=2)
    gram = np.einsum("rni,rnj->rij", z, z) + 1e-9 * np.eye(z.shape[2])
    coef = np.linalg.solve(gram, np.einsum("rni,rn->ri", z, scores)[..., None])[..., 0]
    residual = scores - np.einsum("rni,ri->rn", z, coef)
    total = ((scores - scores.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    k = np.linalg.matrix_rank(z) - 1 if picks is not None else np.full(rows, np.linalg.matrix_rank(z[0]) - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        adjusted = 1 - ((residual**2).sum(axis=1) / (n - k - 1)) / (total / (n - 1))
    return np.where((k >= 1) & (n > k + 1) & (total > 1e-12), np.clip(np.nan_to_num(adjusted), 0.0, 1.0), 0.0)


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
