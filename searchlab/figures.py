"""The plots a search leaves in MLflow: stage results turned into `searchlab.plots` calls."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from searchlab import plots
from searchlab.coarse import CoarseResult
from searchlab.data import Dataset
from searchlab.final import FinalResult
from searchlab.fine import FineResult
from searchlab.metrics import Scoring
from searchlab.narrow import Decision, FineSpace


def search_plots(out: Path, data: Dataset, scoring: Scoring, coarse: CoarseResult, fine_space: FineSpace,
                 fine: FineResult, final: FinalResult) -> list[Path]:
    """Every plot of the search run, written into `out`."""
    metric = scoring.display_name
    coarse_trials = [(t.params, scoring.to_metric(t.mean_score)) for t in coarse.sampled]
    coarse_label = f"CV {metric}" + (f" at {coarse.sampled[0].epochs} epochs" if coarse.n_promoted else "")
    views = [_view(d) for d in fine_space.decisions]
    paths = [
        plots.learning_curves(fine.best.curves, scoring.keras_name, out / "learning_curves.png"),
        plots.scores_vs_params(coarse_trials, views, coarse_label, out / "coarse_scores_vs_params.png"),
        plots.influence({d.name: d.influence.share for d in fine_space.decisions}, set(fine_space.tuned),
                        out / "influence.png",
                        intervals={d.name: (d.influence.low, d.influence.high) for d in fine_space.decisions},
                        shown=set(fine_space.shown)),
        plots.parallel_coordinates(coarse_trials, list(coarse.space),
                                   {n for n, p in coarse.space.items() if p.log}, coarse_label,
                                   out / "parallel_coarse.png"),
    ]
    if fine_space.tuned:
        fine_trials = [(t.tuned, scoring.to_metric(t.score)) for t in fine.trials]
        paths.append(plots.parallel_coordinates(fine_trials, list(fine_space.tuned),
                                                {n for n, p in fine_space.tuned.items() if p.log},
                                                f"validation {metric}", out / "parallel_fine.png"))
    if data.task == "binary":
        paths.append(plots.ranking_curves(data.y_test, final.test_prediction[:, 1], data.class_names[1],
                                          out / "roc_pr_test.png"))
    if data.is_classification:
        paths.append(plots.confusion_matrix(data.y_test, final.test_prediction.argmax(axis=1), list(data.class_names),
                                            out / "confusion_matrix_test.png"))
    else:
        paths.append(plots.regression_diagnostics(data.y_test, final.test_prediction,
                                                  out / "predicted_vs_actual_test.png"))
    return paths


def stage_plot(out: Path, scoring: Scoring, scores: Sequence[float], end_times: Sequence[float],
               start: float) -> Path:
    """Best-score-so-far of one stage against trial number and time."""
    values = [scoring.to_metric(s) for s in scores]
    elapsed = list(np.asarray(end_times, dtype="float64") - start)
    return plots.best_so_far(values, elapsed, scoring.display_name, not scoring.negated, out / "best_so_far.png")


def _view(decision: Decision) -> plots.ParamView:
    param = decision.narrowed or decision.original
    if param.kind == "choice":
        return plots.ParamView(decision.name, "choice", False, decision.kept, None, None,
                               tuple(param.values), decision.fixed_value)
    return plots.ParamView(decision.name, param.kind, param.log, decision.kept, param.low, param.high,
                           fixed=decision.fixed_value)
