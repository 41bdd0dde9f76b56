"""searchlab against plain scikit-learn and KerasTuner searches, side by side on the same data.

    .venv/bin/python bench/compare.py [--quick] [--data-dir DIR] [--datasets NAME ...] [hydra overrides]
    make bench ARGS="--quick --data-dir DIR"

The shared data sets (<name>_feats.csv / <name>_target.csv) are read from --data-dir, else from the
folder in $SEARCHLAB_BENCH_DATA; digits alone needs neither.

Per data set, every method gets the same held-out test split (`load_dataset` with the same seed)
and about the same planned number of training epochs, B, taken from searchlab's grid settings:

  searchlab-grid         `pipeline.run` with search/fine=grid (defines B)
  searchlab-hyperband    `pipeline.run` with search/fine=hyperband, hyperband_iterations sized to B
  random-search          RandomizedSearchCV over the coarse space, n_iter * cv * epochs ~ B
  kerastuner-hyperband   KerasTuner Hyperband over the coarse space on a validation split
  halving-random-search  HalvingRandomSearchCV with epochs as the resource
  optuna-tpe             Optuna's TPE sampler with a median pruner, (B - epochs) // epochs trials
  gbdt-reference         gradient-boosted trees with scikit-learn's defaults: no search, the summary's reference

The non-searchlab searches refit their best candidate on all training rows with
`searchlab.final.refit_and_test`, for the epoch count where its validation loss was lowest.
Results: a markdown table, a JSON file and a best-so-far plot per data set under bench/results/,
one MLflow parent run per data set (experiment `bench`) with a child run per method, and the
quality targets at the end. Every test score has a 95% bootstrap interval over the test rows, all methods
on the same resamples, and each method's paired difference against searchlab on the searched metric
(`searchlab.uncertainty`). How epochs are counted: bench/README.md.

Beside it: compare_budget.py (the plan), compare_methods.py (the five methods); this file reports.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from compare_budget import make_plan
from compare_methods import METHODS, Bench, MethodResult, Trace, run_method
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from searchlab.config import compose
from searchlab.console import format_duration, silence_native_stderr
from searchlab.data import check_cv_feasible, load_dataset
from searchlab.errors import SearchInterrupted, SearchlabError
from searchlab.metrics import scoring_for
from searchlab.records import ERROR_TAG
from searchlab.tracking import Tracker
from searchlab.uncertainty import LEVEL, bootstrap, compare, estimate

DATA_ENV = "SEARCHLAB_BENCH_DATA"  # the shared data folder, when --data-dir is not given
RESULTS = Path(__file__).resolve().parent / "results"

SHARED = ("avila-tr", "tree_class", "traffic_volume")
TASKS = {"avila-tr": "binary", "tree_class": "binary", "traffic_volume": "regression"}
# Each search optimizes the metric its published result is given in (tree_class: log loss).
SCORING = {"avila-tr": "accuracy", "tree_class": "neg_log_loss", "traffic_volume": "neg_root_mean_squared_error"}
# Tiny budgets everywhere, but the full wide space: two data sets in under 10 minutes on 2 cores.
QUICK = ("model.epochs=6", "model.patience=2", "search.coarse.n_iter=4", "search.coarse.cv=2",
         "search.fine.max_params=1", "search.fine.points=2", "search.fine.max_epochs=6")
QUICK_DATASETS = ("digits", "avila-tr")


# -- reporting ----------------------------------------------------------------------------------

def score_columns(bench: Bench) -> tuple[str, str]:
    return ("accuracy", "log_loss") if bench.data.is_classification else ("rmse", "mse")


def anchor(results: Sequence[MethodResult]) -> str | None:
    """The method every other is compared with, pairwise: the first searchlab method that has a test prediction."""
    return next((r.method for r in results
                 if r.method.startswith("searchlab") and r.test_prediction is not None and not r.error), None)


def held_out(bench: Bench, results: Sequence[MethodResult]) -> list[MethodResult]:
    """`results` with every test score's 95% bootstrap interval (the same resamples of the same test rows for all
    methods, `final.resamples` of them, seeded by the bench's seed) and each method's paired difference on the
    searched metric against `anchor`. Methods without a prediction (failed) are returned as they are."""
    predictions = {r.method: r.test_prediction for r in results if r.test_prediction is not None and not r.error}
    if not predictions:
        return list(results)
    data, metric, first = bench.data, bench.scoring.display_name, anchor(results)
    resampled = bootstrap(data.task, data.y_test, predictions, n_resamples=bench.config.final.resamples,
                          seed=bench.seed)
    points = {r.method: r.test for r in results}
    scored = []
    for r in results:
        if r.method not in predictions:
            scored.append(r)
            continue
        intervals = {}
        for name, value in r.test.items():
            if f"{r.method}/{name}" in resampled:
                e = estimate(value, resampled[f"{r.method}/{name}"])
                intervals[name] = (e.low, e.high)
        if "rmse" in intervals:  # MSE = RMSE squared, monotone: the interval's ends square too
            intervals["mse"] = (intervals["rmse"][0] ** 2, intervals["rmse"][1] ** 2)
        versus = None
        if first is not None and r.method != first:
            versus = compare(bench.scoring, resampled[f"{r.method}/{metric}"], resampled[f"{first}/{metric}"],
                             points[r.method][metric], points[first][metric])
        scored.append(replace(r, test_interval=intervals, versus_searchlab=versus))
    return scored


def _score(r: MethodResult, name: str) -> str:
    """A test score with its interval: 0.9885 [0.9838, 0.9928]."""
    low_high = r.test_interval.get(name)
    interval = f" [{low_high[0]:.4g}, {low_high[1]:.4g}]" if low_high else ""
    return f"{r.test[name]:.4g}{interval}"


def table(bench: Bench, results: Sequence[MethodResult]) -> str:
    """Markdown table of one data set."""
    metric, (first, second) = bench.scoring.display_name, score_columns(bench)
    versus = anchor(results)
    lines = [f"### {bench.data.describe()}", "",
             f"Planned budget B = {bench.plan.budget} epochs (at most {bench.plan.epochs} per fit).", "",
             f"| method | best val {metric} (own rows) | test {first} | test {second} | "
             f"test {metric} vs {versus or 'searchlab'} (paired, + = better) | wall time | trials | "
             "epochs trained (planned) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.error:
            lines.append(f"| {r.method} | failed: {r.error[:120]} | | | | {format_duration(r.wall_time)} | | |")
            continue
        best_val = bench.scoring.to_metric(r.best_val_score)
        paired = f"{r.versus_searchlab} {r.versus_searchlab.verdict}" if r.versus_searchlab else "-"
        lines.append(f"| {r.method} | {f'{best_val:.4f}' if math.isfinite(best_val) else '-'} | {_score(r, first)} | "
                     f"{_score(r, second)} | {paired} | {format_duration(r.wall_time)} | {r.trials} | "
                     f"{r.epochs_trained} ({r.planned_epochs}) |")
    sign = "lower" if bench.scoring.negated else "higher"
    lines += ["", f"Test columns: every method on the same {len(bench.data.y_test)} test rows, with the {LEVEL:.0%} "
              f"bootstrap interval over {bench.config.final.resamples} resamples of those rows (seed {bench.seed}), "
              f"the same resamples for every method. Paired: the method's test {metric} against "
              f"{versus or 'a searchlab method'}'s, resample by resample, the difference signed so that + means the "
              f"method is better ({sign} {metric}): 'ahead', 'behind', or 'level' when the interval holds 0. "
              "'best val' is each method's own "
              "selection score (CV folds, or a validation split): not measured on the same rows, so not comparable "
              "across methods. One run per method."]
    return "\n".join(lines)


def plot(bench: Bench, results: Sequence[MethodResult], path: Path) -> Path:
    """Best validation score so far against wall time, one line per method."""
    fig = Figure(figsize=(8.0, 5.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for r in results:
        if not r.trace:
            continue
        times = np.array([t for t, _ in r.trace])
        values = np.array([bench.scoring.to_metric(s) for _, s in r.trace])
        running = (np.fmin if bench.scoring.negated else np.fmax).accumulate(values)
        ax.step(np.r_[times, r.wall_time], np.r_[running, running[-1]], where="post", label=r.method)
    metric = bench.scoring.display_name
    ax.set(title=f"{bench.name}: best validation {metric} so far", xlabel="seconds since the method started",
           ylabel=f"{metric} ({'lower' if bench.scoring.negated else 'higher'} is better)")
    ax.legend(fontsize=8)
    fig.savefig(path, format="png")
    return path


def report(bench: Bench, results: Sequence[MethodResult], out: Path, prefix: str, tracker: Tracker,
           parent: str) -> str:
    """Write the table, JSON and plot of one data set, and log them and every method to MLflow."""
    text = table(bench, results)
    stem = out / f"{prefix}-{bench.name}"
    stem.with_suffix(".md").write_text(text + "\n")
    document = {"dataset": bench.name, "data": bench.data.describe(), "seed": bench.seed,
                "scoring": bench.scoring.name, "overrides": list(bench.overrides), "plan": asdict(bench.plan),
                "test_rows": len(bench.data.y_test), "resamples": bench.config.final.resamples,
                "paired_against": anchor(results),
                "methods": [{k: v for k, v in asdict(r).items() if k != "test_prediction"} for r in results]}
    stem.with_suffix(".json").write_text(json.dumps(_finite(document), indent=1) + "\n")
    # the test predictions, so that runs made apart (same data set and seed) can be compared pairwise: paired.py
    arrays: dict[str, Any] = {r.method: r.test_prediction for r in results
                              if r.test_prediction is not None and not r.error}
    np.savez_compressed(stem.with_suffix(".npz"), y_test=bench.data.y_test, task=bench.data.task,
                        scoring=bench.scoring.name, seed=bench.seed, **arrays)
    plot(bench, results, stem.with_suffix(".png"))

    for r in results:
        metrics = {"best_val_score": r.best_val_score,
                   f"best_val_{bench.scoring.display_name}": bench.scoring.to_metric(r.best_val_score),
                   **{f"test_{k}": v for k, v in r.test.items()}, "wall_time_s": r.wall_time, "trials": r.trials,
                   "epochs_trained": r.epochs_trained, "planned_epochs": r.planned_epochs}
        for k, (low, high) in r.test_interval.items():
            metrics |= {f"test_{k}_low": low, f"test_{k}_high": high}
        if r.versus_searchlab:
            versus = f"test_{r.versus_searchlab.metric}_vs_searchlab"
            metrics |= {versus: r.versus_searchlab.difference, f"{versus}_low": r.versus_searchlab.low,
                        f"{versus}_high": r.versus_searchlab.high}
        tags = {"bench.run": "method", "bench.method": r.method}
        if r.search_run_id:
            tags["bench.search_run_id"] = r.search_run_id
        if r.error:
            tags[ERROR_TAG] = r.error[:5000]
        running = (np.fmin if bench.scoring.negated else np.fmax).accumulate(
            [bench.scoring.to_metric(s) for _, s in r.trace] or [math.nan])
        tracker.log_finished_run(parent, r.method, tags=tags,
                                 params={**r.settings, **{f"best.{k}": v for k, v in r.best_params.items()}},
                                 metrics=metrics,
                                 curves={f"best_so_far_{bench.scoring.display_name}": [float(v) for v in running]},
                                 start_time=r.started, end_time=r.started + r.wall_time, failed=r.error is not None)
    tracker.set_description(parent, text)
    with tempfile.TemporaryDirectory() as folder:  # the three files alone, not the rest of `out`
        for suffix in (".md", ".json", ".png"):
            shutil.copy(stem.with_suffix(suffix), folder)
        tracker.log_artifacts(parent, Path(folder), "")
    return text


def _finite(value: Any) -> Any:
    """JSON has no NaN: None instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# -- quality targets ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    dataset: str
    metric: str
    threshold: float
    lower_is_better: bool
    time_limit: float | None = None

    def describe(self) -> str:
        limit = f" within {self.time_limit / 60:.0f} min" if self.time_limit else ""
        return f"{self.dataset} test {self.metric} {'<=' if self.lower_is_better else '>='} {self.threshold:g}{limit}"

    def met(self, result: MethodResult) -> bool:
        value = result.test.get(self.metric, math.nan)
        good = value <= self.threshold if self.lower_is_better else value >= self.threshold
        return good and (self.time_limit is None or result.wall_time <= self.time_limit)


TARGETS = (Target("avila-tr", "accuracy", 0.98, False, 12 * 60), Target("tree_class", "log_loss", 0.130, True, 12 * 60),
           Target("traffic_volume", "mse", 25.5, True, 12 * 60), Target("digits", "accuracy", 0.975, False, 12 * 60))


def time_to_reach(trace: Trace, score: float) -> float | None:
    """Seconds until the best-so-far score first reaches `score` (scikit-learn sign), or None."""
    for elapsed, value in sorted(trace):
        if math.isfinite(value) and value >= score - 1e-12:
            return elapsed
    return None


def targets_report(all_results: dict[str, list[MethodResult]], quick: bool) -> str:
    """The quality targets with measured values, and searchlab's speed against plain RandomizedSearchCV."""
    lines = ["## Quality targets" + (" (--quick: tiny budgets, so these only show that the checks run)"
                                     if quick else ""), ""]
    for target in TARGETS:
        results = [r for r in all_results.get(target.dataset, []) if not r.error]
        if not results:
            lines.append(f"- {target.describe()}: not measured (data set not run)")
            continue
        cells = [f"{r.method} {_score(r, target.metric)} in {format_duration(r.wall_time)}"
                 f" ({'met' if target.met(r) else 'not met'})" for r in results]
        searchlab_met = [r.method for r in results if r.method.startswith("searchlab") and target.met(r)]
        verdict = f"MET by {', '.join(searchlab_met)}" if searchlab_met else "NOT MET by searchlab"
        lines.append(f"- {target.describe()}: {verdict}; " + "; ".join(cells))
    lines += ["", "(Test scores with their 95% bootstrap intervals; a target is met on the value itself.)", "",
              "searchlab reaches plain RandomizedSearchCV's best validation score in at most half its wall time "
              "(from the best-so-far traces; CV and hold-out validation scores compared as they are, not the same "
              "rows: a speed check, not a quality comparison):"]
    if not all_results:
        lines.append("- not measured (no data set run)")
    for name, results in all_results.items():
        by_method = {r.method: r for r in results if not r.error}
        plain = by_method.get("random-search")
        if plain is None:
            lines.append(f"- {name}: not measured (random-search missing or failed)")
            continue
        parts = []
        for method in ("searchlab-grid", "searchlab-hyperband"):
            if method not in by_method:
                continue
            reached = time_to_reach(by_method[method].trace, plain.best_val_score)
            met = reached is not None and reached <= plain.wall_time / 2
            when = f"after {format_duration(reached)}" if reached is not None else "never"
            parts.append(f"{method} {when} ({'met' if met else 'not met'})")
        scoring = scoring_for(TASKS.get(name, "multiclass"), SCORING.get(name))  # digits: multiclass, accuracy
        best = f"{scoring.display_name} {scoring.to_metric(plain.best_val_score):.4f}"
        lines.append(f"- {name}: random-search best {best} in {format_duration(plain.wall_time)}, "
                     f"half is {format_duration(plain.wall_time / 2)}; " + "; ".join(parts or ["no searchlab result"]))
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------

def dataset_overrides(name: str, data_dir: Path | None) -> tuple[str, ...] | str:
    """Hydra overrides selecting data set `name` (the shared ones from `data_dir`), or why it is unavailable."""
    if name == "digits":
        return ("dataset=digits",)
    assert data_dir is not None, "parse_args asks for the data folder when a shared data set is chosen"
    feats, target = data_dir / f"{name}_feats.csv", data_dir / f"{name}_target.csv"
    missing = [str(p) for p in (feats, target) if not p.is_file()]
    if missing:
        return f"skipping {name}: {', '.join(missing)} not found (is {data_dir} the shared data folder?)"
    return ("dataset=csv", f"dataset.path='{feats}'", f"dataset.target_path='{target}'", f"dataset.task={TASKS[name]}",
            f"search.coarse.scoring={SCORING[name]}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, digits + avila-tr: under 10 minutes")
    parser.add_argument("--data-dir", type=Path, help="folder with the shared <name>_feats.csv / <name>_target.csv "
                        f"files (default: ${DATA_ENV}); not needed for digits alone")
    parser.add_argument("--datasets", nargs="+", choices=("digits", *SHARED), help="default: all (--quick: "
                        + " ".join(QUICK_DATASETS) + ")")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tracking-uri", help="MLflow store (default: as configured; ./mlruns/mlflow.db)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="default: results/ beside this script")
    parser.add_argument("--verbose", action="store_true", help="keep TensorFlow's and the workers' console chatter")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every method, e.g. model.patience=3")
    args = parser.parse_args(argv)
    args.datasets = args.datasets or list(QUICK_DATASETS if args.quick else ("digits", *SHARED))
    shared = [name for name in args.datasets if name in SHARED]
    if args.data_dir is None and os.environ.get(DATA_ENV):
        args.data_dir = Path(os.environ[DATA_ENV])
    if shared and args.data_dir is None:
        parser.error(f"the shared data sets ({', '.join(shared)}) are read from a folder: give --data-dir DIR or set "
                     f"{DATA_ENV}=DIR (--datasets digits needs neither)")
    if shared and not args.data_dir.is_dir():
        parser.error(f"the shared data folder {args.data_dir} (--data-dir or {DATA_ENV}) does not exist")
    if args.data_dir is not None:
        args.data_dir = args.data_dir.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a killed `make bench` ends its MLflow runs KILLED
    if not args.verbose:
        silence_native_stderr()  # as the searchlab command: TensorFlow's C++ and worker-process chatter
        for noisy in ("tensorflow", "absl", "mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", "Skipping variable loading for optimizer", UserWarning)  # Hyperband resumes
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = "compare-quick" if args.quick else "compare"
    common = (*(QUICK if args.quick else ()), *args.overrides, f"seed={args.seed}",
              *([f"tracking.uri='{args.tracking_uri}'"] if args.tracking_uri else []))
    started = time.time()
    all_results: dict[str, list[MethodResult]] = {}
    tables = []
    for name in args.datasets:
        overrides = dataset_overrides(name, args.data_dir)
        if isinstance(overrides, str):
            print(f"bench: {overrides}")
            continue
        outcome = bench_dataset(name, (*overrides, *common), args.methods, args.out, prefix, args.quick)
        if outcome is not None:
            tables.append(outcome[0])
            all_results[name] = outcome[1]
            print("\n" + outcome[0])

    ending = f"{targets_report(all_results, args.quick)}\n\nTotal wall time: {format_duration(time.time() - started)}"
    (args.out / f"{prefix}.md").write_text("\n\n".join([*tables, ending]) + "\n")
    print("\n" + ending)
    print(f"\nResults in {args.out}/{prefix}*; MLflow experiment 'bench' (run `make ui`).")
    return 0


def bench_dataset(name: str, overrides: tuple[str, ...], methods: Sequence[str], out: Path, prefix: str,
                  quick: bool) -> tuple[str, list[MethodResult]] | None:
    """Every method on one data set, reported and tracked: (table, results), or None if the data is unusable."""
    try:
        config = compose(*overrides)
        data = replace(load_dataset(config.dataset, config.seed), name=name)
        check_cv_feasible(data, config.search.coarse.cv)
        scoring = scoring_for(data.task, config.search.coarse.scoring)
    except SearchlabError as exc:
        print(f"bench: skipping {name}: {exc}")
        return None
    plan = make_plan(config)
    tracker = Tracker(config.tracking.uri, "bench")
    parent = tracker.start_run(f"bench {name}", {"bench.run": "dataset", "bench.dataset": name,
                                                 "bench.quick": str(quick).lower()})
    tracker.log(parent, params={"seed": config.seed, "overrides": " ".join(overrides), **asdict(plan)})
    print(f"\n[{name}] {data.describe()}; planned budget B = {plan.budget} epochs")
    results: list[MethodResult] = []
    try:
        with tempfile.TemporaryDirectory(prefix="searchlab-bench-") as workdir:
            bench = Bench(name, overrides, config, data, scoring, plan, Path(workdir))
            for method in methods:
                print(f"[{name}] {method}: planned {plan.planned(method)} epochs ...", flush=True)
                results.append(run_method(bench, method))
                print(f"[{name}] {method}: " + _one_line(bench, results[-1]), flush=True)
            results = held_out(bench, results)
            text = report(bench, results, out, prefix, tracker, parent)
    except (KeyboardInterrupt, SearchInterrupted):
        if results:  # keep the methods that finished: a partial table, files and MLflow runs
            report(bench, held_out(bench, results), out, prefix, tracker, parent)
            print(f"[{name}] interrupted: the table in {out} holds the {len(results)} finished methods", flush=True)
        tracker.end_all("KILLED")
        raise
    except BaseException:
        tracker.end_all("FAILED")
        raise
    tracker.end_run(parent)
    return text, results


def _one_line(bench: Bench, r: MethodResult) -> str:
    if r.error:
        return f"FAILED after {format_duration(r.wall_time)}: {r.error}"
    first, _ = score_columns(bench)
    best_val = bench.scoring.to_metric(r.best_val_score)
    val = f"val {bench.scoring.display_name} {best_val:.4f}, " if math.isfinite(best_val) else ""
    return (f"done in {format_duration(r.wall_time)}: {val}test {first} {r.test[first]:.4f}, {r.trials} trials, "
            f"{r.epochs_trained} epochs")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, SearchInterrupted):
        print("bench: interrupted; the finished data sets' results are in the --out folder (bench/results/).",
              file=sys.stderr)
        sys.exit(130)
