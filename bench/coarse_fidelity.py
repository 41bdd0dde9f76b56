"""How well a cheap coarse fit ranks candidates: the same candidates cross-validated with each fit capped at a few
epochs, and at the full budget (model.epochs with early stopping), side by side on the same folds.

    .venv/bin/python bench/coarse_fidelity.py [--data-dir DIR] [--datasets NAME ...] [--n-iter N] [--caps E ...]

For each data set: `run_coarse` over `--n-iter` candidates of the default coarse space, once per epoch cap and
once uncapped, then Spearman's rank correlation of the candidates' mean CV scores (cap vs full), the share of the
full budget's best 25% that the cap also puts in its best 25%, and each run's wall time and epochs trained.
Results are printed as a markdown table and written to bench/results/coarse_fidelity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from compare import DATA_ENV, SHARED, dataset_overrides
from scipy.stats import spearmanr

from searchlab.coarse import run_coarse
from searchlab.config import compose
from searchlab.context import SearchContext
from searchlab.data import load_dataset
from searchlab.metrics import scoring_for

RESULTS = Path(__file__).parent / "results"


def measure(overrides: tuple[str, ...], n_iter: int, caps: list[int]) -> dict[str, dict[str, Any]]:
    """Each cap's and the full budget's coarse stage over the same candidates and folds."""
    runs: dict[str, dict[str, Any]] = {}
    for cap in [*caps, None]:
        config = compose(*overrides, f"search.coarse.n_iter={n_iter}", f"search.coarse.epochs={cap or 'null'}",
                         "search.coarse.promote=0", "verbose=0")  # the capped rung alone
        data = load_dataset(config.dataset, config.seed)
        ctx = SearchContext(data, scoring_for(data.task, config.search.coarse.scoring), config.model, config.seed, 0)
        started = time.perf_counter()
        result = run_coarse(ctx, config.coarse_space(), config.search.coarse)
        runs[str(cap or "full")] = {
            "wall_s": time.perf_counter() - started,
            "scores": [t.mean_score for t in result.trials],
            "epochs": sum(len(t.curves.get("loss", [])) * config.search.coarse.cv for t in result.trials),
        }
    full = np.array(runs["full"]["scores"], dtype="float64")
    top = max(1, len(full) // 4)
    best_full = set(np.argsort(-np.nan_to_num(full, nan=-np.inf))[:top])
    for run in runs.values():
        scores = np.array(run["scores"], dtype="float64")
        ok = np.isfinite(scores) & np.isfinite(full)
        run["spearman"] = float(spearmanr(scores[ok], full[ok]).statistic) if ok.sum() > 2 else float("nan")
        run["top_quarter_kept"] = len(best_full & set(np.argsort(-np.nan_to_num(scores, nan=-np.inf))[:top])) / top
    return runs


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get(DATA_ENV))
    parser.add_argument("--datasets", nargs="+", default=["digits", *SHARED])
    parser.add_argument("--n-iter", type=int, default=16)
    parser.add_argument("--caps", type=int, nargs="+", default=[10, 30])
    args = parser.parse_args(argv)
    table = ["| data | epochs per fit | Spearman vs full | best quarter kept | wall | epochs trained |",
             "|---|---|---|---|---|---|"]
    results = {}
    for name in args.datasets:
        overrides = dataset_overrides(name, args.data_dir)
        if isinstance(overrides, str):
            print(overrides)
            continue
        runs = measure(overrides, args.n_iter, args.caps)
        results[name] = runs
        for label, run in runs.items():
            table.append(f"| {name} | {label} | {run['spearman']:.2f} | {run['top_quarter_kept']:.0%} | "
                         f"{run['wall_s']:.0f} s | {run['epochs']} |")
        print("\n".join(table[-len(runs):]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "coarse_fidelity.json").write_text(json.dumps(results, indent=1))
    print("\n".join(table))


if __name__ == "__main__":
    main(sys.argv[1:])
