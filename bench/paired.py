"""Paired test-score comparisons across `compare.py` runs made apart, on the same data set and seed.

    .venv/bin/python bench/paired.py RUN.npz [RUN.npz ...] [--against METHOD] [--label LABEL ...]

Each `compare-<dataset>.npz` holds the test rows' targets and every method's test prediction of one run. Runs
of the same data set and seed share the test rows, so their methods can be compared resample by resample as in
one run: every method's searched metric with its 95% bootstrap interval (the same resamples for all) and its
paired difference against `--against` (+: better). Runs on other test rows are refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from searchlab.metrics import metric_values, scoring_for
from searchlab.uncertainty import bootstrap, compare, estimate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="compare-<dataset>.npz files of compare.py runs")
    parser.add_argument("--against", help="the method the others are compared with (default: the first searchlab "
                                          "method found)")
    parser.add_argument("--label", nargs="*", default=[], help="a label per run, prefixed to its method names "
                                                               "(default: the run's folder name)")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    labels = args.label or [run.parent.name for run in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"--label: {len(labels)} labels for {len(args.runs)} runs")

    predictions: dict[str, np.ndarray] = {}
    first = np.load(args.runs[0])
    for run, label in zip(args.runs, labels, strict=True):
        loaded = np.load(run)
        if not np.array_equal(loaded["y_test"], first["y_test"]) or str(loaded["scoring"]) != str(first["scoring"]):
            parser.error(f"{run}: other test rows or scoring than {args.runs[0]}; only runs of the same data set, "
                         f"seed and scoring compare pairwise")
        predictions |= {f"{label}/{method}": loaded[method] for method in loaded.files
                        if method not in ("y_test", "task", "scoring", "seed")}
    task, y_test = str(first["task"]), first["y_test"]
    scoring = scoring_for(task, str(first["scoring"]))
    metric = scoring.display_name
    against = next((name for name in predictions
                    if (name.endswith(f"/{args.against}") if args.against else "/searchlab" in name)), None)
    if args.against and against is None:
        parser.error(f"--against {args.against}: no such method in {', '.join(sorted(predictions))}")

    resampled = bootstrap(task, y_test, predictions, n_resamples=args.resamples, seed=int(first["seed"]))
    points = {name: float(metric_values(task, y_test, p, names=[metric])[metric][0]) for name, p in predictions.items()}
    print(f"{len(y_test)} test rows, {args.resamples} resamples; test {metric}; paired difference against "
          f"{against} (+ = better)")
    for name in predictions:
        line = f"{name:40s} {estimate(points[name], resampled[f'{name}/{metric}'])}"
        if against is not None and name != against:
            diff = compare(scoring, resampled[f"{name}/{metric}"], resampled[f"{against}/{metric}"], points[name],
                           points[against])
            line += f"   {diff} {diff.verdict}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
