"""`make ui`: the MLflow UI on 127.0.0.1 against the project's store (or `--uri`)."""

from __future__ import annotations

import argparse
import os
import sys

from searchlab.console import redact
from searchlab.infra.tracking_server import SERVER_ENV
from searchlab.tracking import default_tracking_uri


def ui_command(uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The `mlflow ui` command line for a store: one worker process (MLflow's default is 4) serves one user."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
            "--workers", "1"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m searchlab.infra.ui", description=__doc__)
    parser.add_argument("--uri", default=default_tracking_uri(), help="tracking URI (default: ./mlruns)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address; only change it on a trusted network")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    print(f"MLflow UI for {redact(args.uri)}\n  open http://{args.host}:{args.port}/  (training runs: pick the "
          "experiment, then the 'Model training' view). It takes ~10 s to answer; Ctrl-C stops it.", flush=True)
    command = ui_command(args.uri, args.host, args.port)
    os.execve(command[0], command, {**os.environ, **SERVER_ENV})


if __name__ == "__main__":
    main()
