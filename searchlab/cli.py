"""Command line: `searchlab [hydra overrides]`, e.g. `searchlab dataset=csv dataset.path=x.csv`.

`searchlab -m seed=1,2,3` (Hydra multirun) runs one search per job and ends with a sweep table.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from searchlab.callbacks import SearchCallback, TrialEnd
from searchlab.config import CONF_DIR, Config, from_dictconfig, register_schemas
from searchlab.console import NOISY_LOGGERS, silence_native_stderr, where_to_look
from searchlab.data import Dataset, check_cv_feasible, load_dataset
from searchlab.errors import SearchInterrupted, SearchlabError
from searchlab.metrics import scoring_for
from searchlab.records import resumed_config

register_schemas()
_failed_jobs: list[str] = []


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> dict[str, Any]:
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        config, data = _checked(from_dictconfig(cfg))
        from searchlab import pipeline  # TensorFlow loads here, once the configuration and data are known good

        _quiet_libraries(config.verbose)

        result = pipeline.run(config, data=data, callbacks=[_StopWhenSignalled()])
    except SearchInterrupted as exc:
        print(f"searchlab: {exc}", file=sys.stderr)
        sys.exit(130)
    except SearchlabError as exc:
        print(f"searchlab: error: {exc}", file=sys.stderr)
        if not sweeping:
            sys.exit(2)
        _failed_jobs.append(str(exc))
        return {"error": str(exc)}
    except KeyboardInterrupt:  # before any run was opened
        print("searchlab: interrupted.", file=sys.stderr)
        sys.exit(130)
    print()
    print(result.summary())
    print(f"\nMLflow: {where_to_look(result.tracking_uri, result.experiment_id, result.run_id)}")
    if result.model_uri:
        print(f"Model: {result.model_uri}; serve it with `make serve MODEL={result.model_uri}`")
    metric = result.scoring.display_name
    return {"dataset": result.data.name, "seed": config.seed, "run_id": result.run_id,
            f"test_{metric}": result.final.test_metrics[metric], "wall_time_s": round(result.wall_time, 1)}


class SweepSummary(Callback):
    """Prints one line per job at the end of a Hydra multirun."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, Any]] = []

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        overrides = " ".join(job_return.overrides or []) or "(defaults)"
        try:
            value = job_return.return_value
        except Exception as exc:  # the job raised: Hydra re-raises it on access
            value = {"error": f"{type(exc).__name__}: {exc}"}
        self.rows.append((overrides, value))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        print(f"\nsearchlab sweep: {len(self.rows)} jobs")
        for overrides, value in self.rows:
            shown = ", ".join(f"{k}={v}" for k, v in (value or {}).items())
            print(f"  {overrides}: {shown}")


def _quiet_libraries(verbose: int) -> None:
    """Below verbose=2, only the libraries' errors reach the terminal. Called once they are imported: MLflow
    sets its own logger's level when it loads."""
    if verbose < 2:
        for noisy in NOISY_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.ERROR)


def _checked(config: Config) -> tuple[Config, Dataset]:
    """The configuration to run (a resumed search's own) and its data set, checked to suit each other: user
    mistakes in a new search are reported before TensorFlow's seconds of start-up."""
    if config.resume:
        _quiet_libraries(config.verbose)
        config = resumed_config(config)
    data = load_dataset(config.dataset, config.seed)
    scoring_for(data.task, config.search.coarse.scoring)
    check_cv_feasible(data, config.search.coarse.cv)
    return config, data


_signalled: list[int] = []


def _raise_interrupt(signum: int, frame: Any) -> NoReturn:
    _signalled.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def _quiet_swallowed_interrupt(unraisable: Any) -> None:
    """A swallowed Ctrl-C/SIGTERM is not news: `_StopWhenSignalled` stops the search at the next trial."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


class _StopWhenSignalled(SearchCallback):
    """Stops the search at the next finished trial if a SIGTERM's KeyboardInterrupt was swallowed: raised
    inside a weakref or garbage-collection callback while TensorFlow trains in this process, Python prints
    "Exception ignored" and goes on."""

    def on_trial_end(self, trial: TrialEnd) -> None:
        if _signalled:
            raise KeyboardInterrupt(f"signal {_signalled[0]}")


def main() -> None:
    """Console entry point."""
    if not any(arg.startswith("verbose=2") for arg in sys.argv[1:]):  # verbose=2 shows everything
        silence_native_stderr()
    signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM ends runs as KILLED, like Ctrl-C
    signal.signal(signal.SIGINT, _raise_interrupt)  # also when started with SIGINT ignored (`cmd &`)
    sys.unraisablehook = _quiet_swallowed_interrupt
    _main()
    if _failed_jobs:
        sys.exit(2)


if __name__ == "__main__":
    main()
