"""The coarse stage on a local Dask cluster of 2 single-threaded workers against 1, in one run.

    .venv/bin/python bench/dask_scaling.py [--n-iter 10] [--epochs 5] [HYDRA_OVERRIDE ...]

Both runs evaluate the same candidates (same seed) on the same folds of the default data set
(digits), with `search.backend=dask` and `search.dask.n_workers` set to 1, then 2. A run's time
includes starting and closing its cluster, as a search would. Prints the times and their ratio.
"""

from __future__ import annotations

import argparse
import os
import time

from searchlab.coarse import run_coarse
from searchlab.config import Config, DaskConfig, compose
from searchlab.context import SearchContext
from searchlab.data import load_dataset
from searchlab.metrics import scoring_for


def coarse_seconds(config: Config, n_workers: int) -> tuple[float, int]:
    """Wall time of the coarse stage on a local cluster of `n_workers`, and how many candidates succeeded."""
    data = load_dataset(config.dataset, config.seed)
    ctx = SearchContext(data, scoring_for(data.task, config.search.coarse.scoring), config.model, config.seed)
    started = time.perf_counter()
    result = run_coarse(ctx, config.coarse_space(), config.search.coarse,
                        dask=DaskConfig(address=None, n_workers=n_workers))
    return time.perf_counter() - started, len(result.completed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-iter", type=int, default=10, help="coarse candidates (default 10)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per fit (default 5)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. search.coarse.cv=2")
    args = parser.parse_args()
    config = compose(f"search.coarse.n_iter={args.n_iter}", f"model.epochs={args.epochs}", "verbose=0",
                     *args.overrides)
    fits = config.search.coarse.n_iter * config.search.coarse.cv
    print(f"coarse stage on {config.dataset.name}: {config.search.coarse.n_iter} candidates x "
          f"{config.search.coarse.cv} folds = {fits} fits of up to {config.model.epochs} epochs; "
          f"{os.cpu_count()} CPU cores")
    times = {}
    for n_workers in (1, 2):
        seconds, ok = coarse_seconds(config, n_workers)
        times[n_workers] = seconds
        print(f"  {n_workers} worker(s): {seconds:6.1f} s ({ok} candidates completed)")
    print(f"  1 worker / 2 workers: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
