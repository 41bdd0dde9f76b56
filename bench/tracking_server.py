"""Overhead of the team tracking server: the same smoke search recorded in local SQLite and in
`mlflow server` over PostgreSQL (started as `make server` starts it, in throwaway folders).

    .venv/bin/python bench/tracking_server.py [--repeats 2] [hydra overrides ...]

Both stores exist before timing starts, and one untimed search warms the process up (imports,
first-model costs). Then the two stores alternate (A B B A ...) so drift on a busy machine hits
both alike. For each search:
wall time, and the time spent inside `Tracker` calls (the part the store can change; training
noise dominates the wall time). Results go to bench/results/tracking_server.json and are printed;
the server's log to bench/results/tracking_server-mlflow.log.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from searchlab import pipeline
from searchlab.config import CONF_DIR, from_dictconfig, register_schemas
from searchlab.server import free_port, tracking_server
from searchlab.tracking import Tracker


@contextmanager
def tracker_time(*extra: tuple[Any, str]) -> Iterator[dict[str, float]]:
    """Time spent in public `Tracker` methods (constructor included) and in the `extra` (module, function)
    pairs, per name, outermost calls only (methods call each other). The yielded dict fills as calls end;
    `sum(spent.values())` is the total."""
    spent: dict[str, float] = {}
    depth = [0]
    targets: list[tuple[Any, str]] = [(Tracker, name) for name, _ in inspect.getmembers(Tracker, inspect.isfunction)
                                      if not name.startswith("_")]
    targets += [(Tracker, "__init__"), *extra]
    originals = [(owner, name, getattr(owner, name)) for owner, name in targets]

    def timed(name: str, original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            depth[0] += 1
            try:
                return original(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    for owner, name, original in originals:
        setattr(owner, name, timed(name, original))
    try:
        yield spent
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def search(uri: str, overrides: list[str]) -> dict[str, float]:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        config = from_dictconfig(compose("config", overrides=["experiment=smoke", "verbose=0", *overrides,
                                                              f"tracking.uri={uri}"]))
    with tracker_time() as spent:
        start = time.perf_counter()
        pipeline.run(config)
        wall = time.perf_counter() - start
    return {"wall_s": wall, "tracking_s": sum(spent.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="searches per store (default: 2)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both searches")
    args = parser.parse_args()
    register_schemas()
    warnings.simplefilter("ignore")
    for noisy in ("tensorflow", "absl", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    rows: list[dict[str, Any]] = []
    results = Path(__file__).parent / "results"
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
            search(f"sqlite:///{scratch}/warmup/mlflow.db", args.overrides)
            for repeat in range(args.repeats):
                for store in (("sqlite", "server") if repeat % 2 == 0 else ("server", "sqlite")):
                    rows.append({"store": store, "repeat": repeat, **search(stores[store], args.overrides)})
                    print(f"  {store:6s} repeat {repeat}: wall {rows[-1]['wall_s']:6.1f} s, "
                          f"in Tracker {rows[-1]['tracking_s']:5.2f} s", flush=True)
    summary: dict[str, Any] = {"server_startup_s": startup, "repeats": args.repeats, "overrides": args.overrides,
                               "load_average_1min_at_end": os.getloadavg()[0], "cpus": os.cpu_count()}
    for key in ("wall_s", "tracking_s"):
        for store in ("sqlite", "server"):
            summary[f"{store}_{key}"] = statistics.median(r[key] for r in rows if r["store"] == store)
        summary[f"{key}_ratio_server_vs_sqlite"] = summary[f"server_{key}"] / summary[f"sqlite_{key}"]
    (results / "tracking_server.json").write_text(json.dumps({"summary": summary, "runs": rows}, indent=1))
    print(f"\nmedians over {args.repeats} searches per store (server started in {startup:.1f} s; "
          f"load average {summary['load_average_1min_at_end']:.1f} on {summary['cpus']} CPUs at the end):")
    for key, label in (("wall_s", "wall time"), ("tracking_s", "time in Tracker")):
        print(f"  {label:16s} sqlite {summary[f'sqlite_{key}']:6.2f} s   server {summary[f'server_{key}']:6.2f} s   "
              f"ratio {summary[f'{key}_ratio_server_vs_sqlite']:.2f}x")


if __name__ == "__main__":
    main()
