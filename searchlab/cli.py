"""Command line: `searchlab [hydra overrides]`, e.g. `searchlab dataset=csv dataset.path=x.csv`."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, NoReturn

import hydra
from omegaconf import DictConfig

from searchlab.config import CONF_DIR, from_dictconfig, register_schemas
from searchlab.errors import SearchlabError

register_schemas()


def _raise_interrupt(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    try:
        config = from_dictconfig(cfg)
        from searchlab import pipeline  # TensorFlow loads here, after the config is known to be valid

        result = pipeline.run(config)
    except SearchlabError as exc:
        print(f"searchlab: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("searchlab: interrupted; the open MLflow runs were ended as KILLED.", file=sys.stderr)
        sys.exit(130)
    print()
    print(result.summary())
    print(f"\nMLflow: run `make ui`, then open http://127.0.0.1:5000/#/experiments/{result.experiment_id}"
          f"/runs/{result.run_id}")


def _silence_native_stderr() -> None:
    """Send TensorFlow's C++ log lines (which ignore TF_CPP_MIN_LOG_LEVEL before absl is set up)
    to /dev/null, keeping Python's own stderr (errors, tracebacks) on the terminal."""
    sys.stderr.flush()
    python_stderr = os.dup(2)
    sys.stderr = os.fdopen(python_stderr, "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def main() -> None:
    """Console entry point."""
    if not any(arg.startswith("verbose=2") for arg in sys.argv[1:]):
        _silence_native_stderr()
    signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM ends runs as KILLED, like Ctrl-C
    _main()


if __name__ == "__main__":
    main()
