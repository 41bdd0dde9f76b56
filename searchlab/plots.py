"""Plots of a search, as PNG files drawn from plain Python and numpy data.

Headless and stateless: each function builds a `Figure` on an Agg canvas, never
touching pyplot, so no global figure registry keeps figures alive during long
searches. Each writes one PNG, clears its figure and returns the path.
No keras, tensorflow or mlflow here: callers convert their own types.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike
from sklearn import metrics as skm

__all__ = ["ParamView", "best_so_far", "confusion_matrix", "influence", "learning_curves", "parallel_coordinates",
           "ranking_curves", "regression_diagnostics", "scores_vs_params"]

Trials = Sequence[tuple[Mapping[str, Any], float]]

_DPI = 100
_SIZE = (8.0, 5.0)
_MAX_COLS = 4
_KEPT, _OTHER, _FAILED = "tab:orange", "tab:blue", "0.8"


@dataclass(frozen=True)
class ParamView:
    """How to draw one hyperparameter in `scores_vs_params`.

    `kind` is "int", "float" or "choice". For a numeric parameter, `low`/`high` is the
    narrowed range (shaded when `kept`). For a choice, `values` lists its options in
    display order; when `kept`, pass only the options still searched (they are shaded)
    and options seen in the trials are appended. `fixed` is the value a fixed
    (not kept) parameter was pinned to.
    """

    name: str
    kind: str
    log: bool
    kept: bool
    low: float | None
    high: float | None
    values: tuple[Any, ...] = ()
    fixed: Any = None


def learning_curves(history: Mapping[str, Sequence[float]], metric: str, path: Path | str) -> Path:
    """Loss and `metric` per epoch, each with its `val_` series when present; missing keys are skipped."""
    fig, axes = _figure(1, 2)
    for ax, key in zip(axes[0], ("loss", metric), strict=True):
        for name, style in ((key, "-"), (f"val_{key}", "--")):
            values = np.asarray(history.get(name, ()), dtype="float64")
            if values.size:
                ax.plot(np.arange(1, values.size + 1), values, style, marker="o" if values.size < 30 else None,
                        markersize=3, label=name)
        ax.set(title=key, xlabel="epoch", ylabel=key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.lines:
            ax.legend()
        else:
            _note(ax, f"no '{key}' recorded")
    return _save(fig, path)


def scores_vs_params(trials: Trials, params: Sequence[ParamView], metric: str, path: Path | str) -> Path:
    """One panel per hyperparameter: each finished coarse trial's score against its value."""
    ncols = max(1, min(_MAX_COLS, len(params)))
    nrows = max(1, math.ceil(len(params) / ncols))
    size = _SIZE if len(params) <= 1 else (max(8.0, 3.2 * ncols), max(3.5, 3.0 * nrows))
    fig, axes = _figure(nrows, ncols, size)
    done = [(p, s) for p, s in trials if math.isfinite(s)]
    scores = np.array([s for _, s in done], dtype="float64")
    for ax, view in zip(axes.flat[: len(params)], params, strict=True):
        raw = [p.get(view.name) for p, _ in done]
        if view.kind == "choice":
            _choice_panel(ax, view, raw, scores)
        else:
            _numeric_panel(ax, view, np.array([_as_float(v) for v in raw], dtype="float64"), scores)
        ax.set_title(f"{view.name} ({'kept' if view.kept else 'fixed'})")
        if not done:
            _note(ax, "no finished trials")
    for ax in axes[:, 0]:
        ax.set_ylabel(metric)
    for ax in list(axes.flat)[len(params):]:
        ax.set_axis_off()
    if not params:
        _note(axes[0, 0], "no hyperparameters")
    fig.suptitle(f"Coarse trials: {metric} by hyperparameter")
    return _save(fig, path)


def influence(influences: Mapping[str, float], kept: set[str], path: Path | str, *,
              intervals: Mapping[str, tuple[float, float]] | None = None, shown: Set[str] = frozenset()) -> Path:
    """Horizontal bars of each hyperparameter's share of the score ranks' variance explained, kept ones
    highlighted; `intervals` draws each share's 95% interval, and `shown` marks those distinguishable from chance."""
    clean = {name: share if math.isfinite(share) else 0.0 for name, share in influences.items()}
    ranked = sorted(clean.items(), key=lambda item: item[1])  # barh draws bottom-up: largest on top
    fig, axes = _figure(1, 1, (8.0, max(_SIZE[1], 0.4 * len(ranked) + 1.5)))
    ax = axes[0, 0]
    names, shares = [name for name, _ in ranked], [share for _, share in ranked]
    ax.barh(names, shares, color=[_KEPT if name in kept else _OTHER for name in names])
    ends = list(shares)
    if intervals:
        low = [max(0.0, share - intervals.get(name, (share, share))[0]) for name, share in ranked]
        high = [max(0.0, intervals.get(name, (share, share))[1] - share) for name, share in ranked]
        ax.errorbar(shares, range(len(names)), xerr=[low, high], fmt="none", ecolor="0.2", capsize=3, linewidth=1)
        ends = [share + h for share, h in zip(shares, high, strict=True)]
    for y, (name, share) in enumerate(ranked):
        mark = " shown to matter" if name in shown else ""
        ax.text(ends[y] + 0.01, y, f"{share:.0%}{mark}", va="center", fontsize=9)
    title = "Influence of each hyperparameter on the coarse score"
    if intervals:
        title += "\n(bars: 95% bootstrap interval; shown to matter: beats chance in a permutation test)"
    ax.set(xlim=(0, 1.35), title=title, xlabel="share of score rank variance explained")
    ax.xaxis.set_major_formatter(lambda x, _: f"{x:.0%}")
    ax.legend(handles=[Patch(color=_KEPT, label="kept (searched in fine stage)"),
                       Patch(color=_OTHER, label="fixed")], loc="lower right")
    if not ranked:
        _note(ax, "no hyperparameters")
    return _save(fig, path)


def parallel_coordinates(
    trials: Trials, names: Sequence[str], log_names: set[str], metric: str, path: Path | str
) -> Path:
    """One axis per hyperparameter (scaled to 0..1), one line per trial coloured by score; failed in grey."""
    fig, axes = _figure()
    ax = axes[0, 0]
    columns = [_normalized_axis(ax, i, [p.get(name) for p, _ in trials], name in log_names)
               for i, name in enumerate(names)]
    levels = np.array(columns, dtype="float64").T.reshape(len(trials), len(names))
    scores = np.array([s for _, s in trials], dtype="float64")
    ok = np.isfinite(scores)
    x = np.arange(len(names))
    for row in levels[~ok]:
        ax.plot(x, row, color=_FAILED, linewidth=1, marker="o" if len(names) == 1 else None)
    if ok.any():
        norm = Normalize(*_spread(scores[ok].min(), scores[ok].max()))
        sm = ScalarMappable(norm=norm, cmap="viridis")
        for i in np.flatnonzero(ok)[np.argsort(scores[ok], kind="stable")]:  # best drawn last, on top
            ax.plot(x, levels[i], color=sm.to_rgba(scores[i]), linewidth=1.5, alpha=0.8,
                    marker="o" if len(names) == 1 else None)
        fig.colorbar(sm, ax=ax, label=metric)
    failed = " (failed in grey)" if (~ok).any() else ""
    ax.set(xlim=(-0.3, max(len(names) - 0.7, 0.3)), ylim=(-0.05, 1.05), yticks=[],
           title=f"Trials across hyperparameters, coloured by {metric}{failed}")
    ax.set_xticks(x, list(names), rotation=30 if len(names) > 5 else 0)
    if not names or not trials:
        _note(ax, "nothing to draw")
    return _save(fig, path)


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, class_names: Sequence[str], path: Path | str) -> Path:
    """Counts of true (rows) against predicted (columns) classes, annotated in every cell.

    `y_true` and `y_pred` hold class indices into `class_names`, or the class names themselves.
    """
    truth, pred = _class_indices(y_true, class_names), _class_indices(y_pred, class_names)
    _same_length("y_true", truth, "y_pred", pred)
    n = max([len(class_names), int(truth.max(initial=-1)) + 1, int(pred.max(initial=-1)) + 1, 1])
    labels = [str(c) for c in class_names] + [str(i) for i in range(len(class_names), n)]
    counts = np.zeros((n, n), dtype="int64")
    np.add.at(counts, (truth, pred), 1)
    side = min(12.0, max(5.0, 0.45 * n + 2.5))
    fig, axes = _figure(1, 1, (side + 1.5, side))
    ax = axes[0, 0]
    image = ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(1, int(counts.max())))
    fig.colorbar(image, ax=ax, label="count", shrink=0.8)
    fontsize = 10 if n <= 10 else max(6.0, 10 - (n - 10) * 0.25)
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=fontsize,
                color="white" if count > counts.max() / 2 else "black")
    rotate = n > 6 or max(len(label) for label in labels) > 6
    ax.set_xticks(range(n), labels, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(n), labels)
    accuracy = f"accuracy {np.trace(counts) / truth.size:.1%}" if truth.size else "no samples"
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix ({accuracy})")
    return _save(fig, path)


def ranking_curves(y_true: ArrayLike, score: ArrayLike, positive: str, path: Path | str) -> Path:
    """A binary classifier's ROC curve and precision-recall curve for class 1 (named `positive`), with the
    chance line of each (the diagonal; the class's share of the rows)."""
    truth = np.asarray(y_true).ravel().astype(bool)
    scores = np.asarray(score, dtype="float64").ravel()
    _same_length("y_true", truth, "score", scores)
    fig, axes = _figure(1, 2)
    roc_ax, pr_ax = axes[0]
    if truth.any() and not truth.all():
        fpr, tpr, _ = skm.roc_curve(truth, scores)
        precision, recall, _ = skm.precision_recall_curve(truth, scores)
        roc_ax.plot(fpr, tpr, color=_KEPT, label=f"model (AUC {skm.roc_auc_score(truth, scores):.3f})")
        pr_ax.step(recall, precision, where="post", color=_KEPT,
                   label=f"model (AP {skm.average_precision_score(truth, scores):.3f})")
        roc_ax.legend(loc="lower right")
    else:
        _note(roc_ax, "needs both classes")
    roc_ax.plot([0, 1], [0, 1], "--", color="0.5", label="chance")
    share = float(truth.mean()) if truth.size else 0.0
    pr_ax.axhline(share, linestyle="--", color="0.5", label=f"chance ({share:.1%} {positive})")
    pr_ax.legend(loc="upper right")
    roc_ax.set(title=f"ROC ({positive} positive)", xlabel="false positive rate", ylabel="true positive rate",
               xlim=(0, 1), ylim=(0, 1.02))
    pr_ax.set(title=f"Precision-recall ({positive})", xlabel="recall", ylabel="precision", xlim=(0, 1),
              ylim=(0, 1.02))
    return _save(fig, path)


def regression_diagnostics(y_true: ArrayLike, y_pred: ArrayLike, path: Path | str) -> Path:
    """Predicted against actual (with y = x), and residuals against predicted (with zero)."""
    truth = np.asarray(y_true, dtype="float64").ravel()
    pred = np.asarray(y_pred, dtype="float64").ravel()
    _same_length("y_true", truth, "y_pred", pred)
    ok = np.isfinite(truth) & np.isfinite(pred)
    truth, pred = truth[ok], pred[ok]
    residuals = truth - pred
    fig, axes = _figure(1, 2)
    left, right = axes[0]
    style = {"s": 12, "alpha": 0.6 if truth.size < 1000 else 0.25, "color": _OTHER}
    left.scatter(truth, pred, **style)
    both = np.r_[truth, pred]
    lo, hi = _spread(both.min(), both.max()) if both.size else (0.0, 1.0)
    left.plot([lo, hi], [lo, hi], "--", color="tab:red", label="y = x")
    ss_total = float(((truth - truth.mean()) ** 2).sum()) if truth.size else 0.0
    r2 = f"R² = {1 - float((residuals**2).sum()) / ss_total:.3f}" if ss_total > 0 else "R² undefined"
    left.set(title=f"Predicted vs actual ({r2})", xlabel="actual", ylabel="predicted")
    left.legend()
    right.scatter(pred, residuals, **style)
    right.axhline(0, linestyle="--", color="tab:red")
    right.set(title="Residuals vs predicted", xlabel="predicted", ylabel="actual - predicted")
    if not truth.size:
        _note(left, "no finite predictions")
    return _save(fig, path)


def best_so_far(
    scores: Sequence[float], times: Sequence[float], metric: str, higher_is_better: bool, path: Path | str
) -> Path:
    """Best score so far against trial number and elapsed seconds; failed (NaN) trials keep the previous best."""
    values = np.asarray(scores, dtype="float64")
    elapsed = np.asarray(times, dtype="float64")
    _same_length("scores", values, "times", elapsed)
    running = np.fmax.accumulate if higher_is_better else np.fmin.accumulate  # fmax/fmin skip NaN
    order = np.argsort(elapsed, kind="stable")
    fig, axes = _figure(1, 2)
    for ax, x, y, label in ((axes[0, 0], np.arange(1, values.size + 1), values, "trial"),
                            (axes[0, 1], elapsed[order], values[order], "elapsed seconds")):
        ax.scatter(x, y, s=12, alpha=0.3, color=_OTHER, label="trial score")
        ax.step(x, running(y), where="post", color=_KEPT, linewidth=2, label="best so far")
        if np.isnan(y).any():
            ax.plot(x[np.isnan(y)], np.full(int(np.isnan(y).sum()), 0.03), "x", color="0.4",
                    transform=ax.get_xaxis_transform(), label="failed trial")
        ax.set(title=f"Best {metric} by {label}", xlabel=label, ylabel=metric)
        ax.legend(fontsize=8)
        if label == "trial":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not np.isfinite(values).any():
            _note(ax, "no finished trials")
    fig.suptitle(f"Search progress ({'higher' if higher_is_better else 'lower'} is better)")
    return _save(fig, path)


def _figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = _SIZE) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=size, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=_DPI, format="png")
    finally:
        fig.clear()  # drop artists now rather than waiting for the garbage collector
    return path


def _spread(lo: float, hi: float) -> tuple[float, float]:
    """Widen an empty range so colour scales and reference lines still have extent."""
    pad = 0.0 if hi > lo else max(abs(float(lo)) * 0.05, 0.5)
    return float(lo) - pad, float(hi) + pad


def _same_length(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.size != b.size:
        raise ValueError(f"{name_a} and {name_b} must have the same length, got {a.size} and {b.size}")


def _note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _class_indices(y: ArrayLike, class_names: Sequence[str]) -> np.ndarray:
    labels = np.asarray(y).ravel()
    if labels.dtype.kind in "iubf":
        indices: np.ndarray = np.rint(labels.astype("float64")).astype("int64")
        if indices.size and indices.min() < 0:
            raise ValueError(f"class indices must be >= 0, got {int(indices.min())}")
        return indices
    index = {str(c): i for i, c in enumerate(class_names)}
    unknown = sorted({str(v) for v in labels} - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not in class_names {list(class_names)}")
    return np.array([index[str(v)] for v in labels], dtype="int64")


def _numeric_panel(ax: Axes, view: ParamView, x: np.ndarray, scores: np.ndarray) -> None:
    ok = np.isfinite(x)
    ax.scatter(x[ok], scores[ok], s=18, alpha=0.7, color=_OTHER)
    bounds = [b for b in (view.low, view.high) if b is not None]
    if view.log and (x[ok] > 0).all() and all(b > 0 for b in bounds):
        ax.set_xscale("log")
    elif view.kind == "int":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if view.kept and view.low is not None and view.high is not None:
        if view.low < view.high:
            ax.axvspan(view.low, view.high, color=_KEPT, alpha=0.2, label="narrowed range")
        else:
            ax.axvline(view.low, color=_KEPT, linewidth=2)
    elif not view.kept and math.isfinite(_as_float(view.fixed)):
        ax.axvline(_as_float(view.fixed), color=_KEPT, linestyle="--", linewidth=2)


def _choice_panel(ax: Axes, view: ParamView, raw: list[Any], scores: np.ndarray) -> None:
    categories = [str(v) for v in view.values]
    categories += sorted({str(v) for v in raw} - set(categories))
    if not view.kept and view.fixed is not None and str(view.fixed) not in categories:
        categories.append(str(view.fixed))
    index = {c: i for i, c in enumerate(categories)}
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(raw))
    ax.scatter([index[str(v)] for v in raw] + jitter, scores, s=18, alpha=0.7, color=_OTHER)
    if view.kept:
        for value in view.values:
            ax.axvspan(index[str(value)] - 0.4, index[str(value)] + 0.4, color=_KEPT, alpha=0.2)
    elif view.fixed is not None:
        ax.axvline(index[str(view.fixed)], color=_KEPT, linestyle="--", linewidth=2)
    ax.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 3 else 0)
    ax.set_xlim(-0.6, max(len(categories), 1) - 0.4)


def _label(ax: Axes, position: int, level: float, text: str) -> None:
    ax.text(position + 0.03, level, text, fontsize=8, va="center", bbox={"fc": "white", "ec": "none", "alpha": 0.7})


def _normalized_axis(ax: Axes, position: int, raw: list[Any], log: bool) -> list[float]:
    """Map one hyperparameter's values to 0..1, draw its axis and label its ends in original units."""
    present = [v for v in raw if v is not None]
    ax.axvline(position, color="0.3", linewidth=1)
    if present and all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in present):
        x = np.array([_as_float(v) for v in raw], dtype="float64")
        log = log and bool(np.nanmin(x, initial=np.inf) > 0)
        scaled = np.log10(x) if log else x
        lo, hi = float(np.nanmin(scaled)), float(np.nanmax(scaled))
        span = hi - lo
        levels = (scaled - lo) / span if span > 0 else np.where(np.isnan(scaled), np.nan, 0.5)
        ticks = {0.0: lo, 1.0: hi} if span > 0 else {0.5: lo}
        for level, value in ticks.items():
            _label(ax, position, level, _fmt(10**value if log else value))
        return [float(v) for v in levels]
    categories = sorted({str(v) for v in present})
    step = 1 / (len(categories) - 1) if len(categories) > 1 else 0.0
    where = {c: i * step if len(categories) > 1 else 0.5 for i, c in enumerate(categories)}
    for category, level in where.items():
        _label(ax, position, level, category)
    return [where[str(v)] if v is not None else math.nan for v in raw]
