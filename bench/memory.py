"""Memory over a long search: resident memory after trial 5 and after the last trial.

    .venv/bin/python bench/memory.py [hydra overrides]   # after the defaults below, so they win

Runs a search of 100+ trials (60 coarse candidates on the default worker processes, then a
4 x 4 x 3 fine grid + the coarse winner in the fine stage's worker process) on digits with short
training, samples the resident memory of the main process and of the whole process tree (workers
included) after every trial, from a `SearchCallback` given to `pipeline.run`, and prints the figures
(also as JSON in bench/results/memory.json). Not a test: it takes several minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from searchlab import pipeline
from searchlab.callbacks import SearchCallback, TrialEnd
from searchlab.config import compose

OVERRIDES = [
    "search.coarse.n_iter=60", "search.coarse.cv=2",
    "search.fine.max_params=3", "search.fine.points=4", "model.epochs=6", "model.patience=2",
    "search.coarse.space.optimizer.values=[adam,rmsprop]", "verbose=0",
]


class MemorySampler(SearchCallback):
    """After every trial: (stage, trial number, main process RSS, process tree RSS), in MiB."""

    def __init__(self) -> None:
        self.samples: list[tuple[str, int, float, float]] = []

    def on_trial_end(self, trial: TrialEnd) -> None:
        self.samples.append((trial.stage, len(self.samples) + 1, rss_mib(), tree_rss_mib()))


def rss_mib(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:  # the process just ended
        pass
    return 0.0


def tree_rss_mib() -> float:
    """This process and all its descendants (joblib's workers)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[stat.parent.name] = fields[1]
        except OSError:
            continue
    tree, frontier = {str(os.getpid())}, {str(os.getpid())}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - tree
        tree |= frontier
    return sum(rss_mib(pid) for pid in tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides after the defaults, e.g. search.coarse.n_iter=8")
    args = parser.parse_args()
    sampler = MemorySampler()
    with TemporaryDirectory() as store:
        overrides = [*OVERRIDES, f"tracking.uri=sqlite:///{store}/mlflow.db", *args.overrides]
        config = compose(*overrides)
        started = time.time()
        pipeline.run(config, callbacks=[sampler])
        wall = time.time() - started
    samples = sampler.samples
    report: dict[str, object] = {"trials": len(samples)}
    for label, column in (("main", [s[2] for s in samples]), ("tree", [s[3] for s in samples])):
        fifth, last = column[min(4, len(column) - 1)], column[-1]
        report |= {f"{label}_rss_after_trial_5_mib": round(fifth, 1), f"{label}_rss_after_last_mib": round(last, 1),
                   f"{label}_growth_mib": round(last - fifth, 1), f"{label}_peak_mib": round(max(column), 1)}
    report |= {"wall_s": round(wall, 1), "overrides": [o for o in overrides if not o.startswith("tracking.uri=")],
               "samples": samples}
    out = Path(__file__).resolve().parent / "results" / "memory.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print({k: v for k, v in report.items() if k != "samples"})


if __name__ == "__main__":
    main()
