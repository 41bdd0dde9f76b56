"""`make serve`: MLflow's model server for a searched model, on 127.0.0.1, without activating the venv.

`mlflow models serve --env-manager local` starts `uvicorn` from PATH, so `.venv/bin/mlflow models serve ...`
outside an activated venv fails with exit code 127. This command puts this Python's own bin directory first on
PATH, points MLflow at the store (MLFLOW_TRACKING_URI, which resolves `models:/` URIs) and becomes the server.
Without a model it serves the newest search's `best_model` in the store.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from searchlab.console import redact
from searchlab.errors import SearchlabError
from searchlab.registry import newest_model
from searchlab.tracking import default_tracking_uri

DEFAULT_PORT = 5001  # beside `make ui` / `make server` on 5000


def resolve_model(model: str | None, uri: str) -> str:
    """The model URI to serve: `model` as given (`models:/<id>`, `models:/<name>@champion`, ...), or when None the
    newest search's `best_model` in the store at `uri`.

    Raises:
        SearchlabError: no model given and the store has none (or does not exist).
    """
    if model:
        return model
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise SearchlabError(f"no MLflow store at {redact(uri)}: run a search first (`make search`), or name a "
                             "model (MODEL=models:/<id>) and its store (--uri).")
    found = newest_model(uri)
    if found is None:
        raise SearchlabError(f"no searched model in {redact(uri)}: run a search with tracking.log_model=true "
                             "(the default), or name a model (MODEL=models:/<id>).")
    return found


def serve_command(model_uri: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> list[str]:
    """The `mlflow models serve` command line, in this Python's environment (`--env-manager local`)."""
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "--host", host, "--port", str(port)]


def serve_env(uri: str) -> dict[str, str]:
    """This process's environment with this Python's bin directory first on PATH (where `uvicorn` is) and
    MLFLOW_TRACKING_URI set to the store `uri`."""
    bin_dir = str(Path(sys.executable).parent)  # not resolved: a venv's python is a symlink out of the venv
    path = os.environ.get("PATH", "")
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{path}" if path else bin_dir, "MLFLOW_TRACKING_URI": uri}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m searchlab.infra.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=None,
                        help="models:/<id> or models:/<name>@champion (default: the newest search's model)")
    parser.add_argument("--uri", default=default_tracking_uri(), help="tracking URI (default: ./mlruns)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address; only change it on a trusted network")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    try:
        model_uri = resolve_model(args.model, args.uri)
    except SearchlabError as exc:
        print(f"searchlab serve: error: {exc}", file=sys.stderr)
        sys.exit(2)
    url = f"http://{args.host}:{args.port}"
    print(f"searchlab serve: {model_uri} from {redact(args.uri)} at {url}/invocations (it answers after "
          "~20 s; Ctrl-C stops it). One row of raw features per inner list:\n"
          f"  curl -s {url}/invocations -H 'Content-Type: application/json' -d '{{\"inputs\": [[x1, x2, ...]]}}'",
          flush=True)
    command = serve_command(model_uri, args.host, args.port)
    os.execve(command[0], command, serve_env(args.uri))


if __name__ == "__main__":
    main()
