"""Memory over a long search: resident memory after trial 5 and after the last trial.

    .venv/bin/python bench/memory.py [hydra overrides]

Runs a search of 100+ trials (60 coarse candidates on the default worker processes, then a
4 x 4 x 3 fine grid + the coarse winner in the main process) on digits with short training,
samples the resident memory of the main process and of the whole process tree (workers included)
after every trial and prints the figures (also as JSON under bench/results/).
Not a test: it takes several minutes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from hydra import compose, initialize_config_dir

from searchlab import pipeline, progress
from searchlab.config import CONF_DIR, from_dictconfig, register_schemas

OVERRIDES = [
    "search.coarse.n_iter=60", "search.coarse.cv=2",
    "search.fine.max_params=3", "search.fine.points=4", "model.epochs=6", "model.patience=2",
    "'search.coarse.space.optimizer.values=[adam,rmsprop]'", "verbose=0",
]


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


def main(extra: list[str]) -> None:
    samples: list[tuple[str, int, float, float]] = []
    original = progress.StageProgress.trial

    def measured(self: progress.StageProgress, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        samples.append((self.stage, len(samples) + 1, rss_mib(), tree_rss_mib()))

    progress.StageProgress.trial = measured  # type: ignore[method-assign]
    register_schemas()
    with TemporaryDirectory() as store:
        overrides = [o.strip("'") for o in OVERRIDES] + [f"tracking.uri=sqlite:///{store}/mlflow.db"] + extra
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            config = from_dictconfig(compose("config", overrides=overrides))
        started = time.time()
        pipeline.run(config)
        wall = time.time() - started
    report: dict[str, object] = {"trials": len(samples)}
    for label, column in (("main", 2), ("tree", 3)):
        fifth, last = samples[4][column], samples[-1][column]
        report |= {f"{label}_rss_after_trial_5_mib": round(fifth, 1), f"{label}_rss_after_last_mib": round(last, 1),
                   f"{label}_growth_mib": round(last - fifth, 1),
                   f"{label}_peak_mib": round(max(s[column] for s in samples), 1)}
    report |= {"wall_s": round(wall, 1), "overrides": overrides[:-1], "samples": samples}
    out = Path(__file__).parent / "results" / "memory.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print({k: v for k, v in report.items() if k != "samples"})


if __name__ == "__main__":
    main(sys.argv[1:])
