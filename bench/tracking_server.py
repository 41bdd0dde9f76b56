"""Overhead of the team tracking server: the same smoke search recorded in local SQLite and in
`mlflow server` over PostgreSQL (started as `make server` starts it, in throwaway folders).

    .venv/bin/python bench/tracking_server.py [--repeats 2] [hydra overrides ...]

Both stores exist before timing starts, and one untimed search warms the process up (imports,
first-model costs). Then the two stores alternate (A B B A ...) so drift on a busy machine hits
both alike. For each search, from its callbacks (`search_timing.py`): wall time, the time spent
writing to the store (the part the store can change; training noise dominates the wall time), and
of that the time to write each trial run; per stage its wall time, training and trial writes.
Results go to bench/results/tracking_server.json and are printed; the server's log to
bench/results/tracking_server-mlflow.log.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from search_timing import STAGES, timed_search

from searchlab.config import compose
from searchlab.data import Dataset, load_dataset
from searchlab.infra.tracking_server import free_port, tracking_server
from searchlab.tracking import Tracker

SUMMARY = (("wall_s", "wall time"), ("tracking_s", "writing to the store"), ("trial_write_s", "  trial runs"),
           ("trial_write_median_s", "  one trial run"), *((f"{stage}_s", f"{stage} stage") for stage in STAGES))


def search(uri: str, overrides: list[str], data: Dataset) -> dict[str, float]:
    """One smoke search on `data` recorded at `uri`: where its wall time went (`search_timing.timed_search`)."""
    _, times = timed_search(compose("experiment=smoke", "verbose=0", *overrides, f"tracking.uri={uri}"), data)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="searches per store (default: 2)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both searches")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    for noisy in ("tensorflow", "absl", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    rows: list[dict[str, Any]] = []
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="searchlab-bench-") as scratch:
        os.chmod(scratch, 0o711)  # as root, PostgreSQL runs as `postgres` and must enter this folder
        port = free_port()
        started = time.perf_counter()
        with (results / "tracking_server-mlflow.log").open("wb") as log, \
                tracking_server(Path(scratch) / "postgres", Path(scratch) / "artifacts", port=port, output=log):
            startup = time.perf_counter() - started
            stores = {"sqlite": f"sqlite:///{scratch}/sqlite/mlflow.db", "server": f"http://127.0.0.1:{port}"}
            for uri in stores.values():
                Tracker(uri, "searchlab")  # SQLite's tables; the server created its own when it started
            config = compose("experiment=smoke", *args.overrides)
            data = load_dataset(config.dataset, config.seed)  # the same rows for every search
            search(f"sqlite:///{scratch}/warmup/mlflow.db", args.overrides, data)
            for repeat in range(args.repeats):
                for store in (("sqlite", "server") if repeat % 2 == 0 else ("server", "sqlite")):
                    rows.append({"store": store, "repeat": repeat, **search(stores[store], args.overrides, data)})
                    print(f"  {store:6s} repeat {repeat}: wall {rows[-1]['wall_s']:6.1f} s, "
                          f"writing to the store {rows[-1]['tracking_s']:5.2f} s "
                          f"(trial runs {rows[-1]['trial_write_s']:5.2f} s)", flush=True)
    summary: dict[str, Any] = {"server_startup_s": startup, "repeats": args.repeats, "overrides": args.overrides,
                               "load_average_1min_at_end": os.getloadavg()[0], "cpus": os.cpu_count()}
    for key, _ in SUMMARY:
        for store in ("sqlite", "server"):
            summary[f"{store}_{key}"] = statistics.median(r[key] for r in rows if r["store"] == store)
        summary[f"{key}_ratio_server_vs_sqlite"] = summary[f"server_{key}"] / summary[f"sqlite_{key}"]
    (results / "tracking_server.json").write_text(json.dumps({"summary": summary, "runs": rows}, indent=1))
    print(f"\nmedians over {args.repeats} searches per store (server started in {startup:.1f} s; "
          f"load average {summary['load_average_1min_at_end']:.1f} on {summary['cpus']} CPUs at the end):")
    for key, label in SUMMARY:
        print(f"  {label:20s} sqlite {summary[f'sqlite_{key}']:6.2f} s   server {summary[f'server_{key}']:6.2f} s   "
              f"ratio {summary[f'{key}_ratio_server_vs_sqlite']:.2f}x")


if __name__ == "__main__":
    main()
