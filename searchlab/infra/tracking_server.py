"""`make server`: an MLflow tracking server over PostgreSQL on 127.0.0.1, in the foreground.

PostgreSQL (Debian's `postgresql` package) keeps its data in `mlruns/server/postgres/` (created by
`initdb` on first use) and listens on no TCP port at all: MLflow reaches it through a Unix socket
inside that 0700 folder, so no other user of the machine can connect and no password is needed.
`mlflow server` stores runs there and serves artifacts from `mlruns/server/artifacts/`
(`--serve-artifacts`). Ctrl-C stops both. Searches use it with `searchlab tracking=server`.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from searchlab.errors import SearchlabError
from searchlab.infra.processes import end_group

SERVER_DIR = Path("mlruns") / "server"  # of the directory the server starts in, as the default local store
DATABASE = "mlflow"
_Output = int | IO[Any] | None


def postgres_bin() -> Path | None:
    """The newest PostgreSQL server binaries (Debian: /usr/lib/postgresql/<version>/bin), if installed."""
    found = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    return max(found, key=lambda path: float(path.parent.name), default=None)  # 9.6 < 15


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: root runs it as the `postgres` system user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise SearchlabError("PostgreSQL refuses to run as root and there is no `postgres` user: run as an "
                             "unprivileged user, or `apt-get install postgresql` to create it.") from None
    return ["runuser", "-u", "postgres", "--"]


def _pg(bin_dir: Path, tool: str, *args: str) -> None:
    command = [*_as_postgres_user(), str(bin_dir / tool), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SearchlabError(f"{tool} failed (exit code {done.returncode}):\n{done.stdout}{done.stderr}")


@contextmanager
def postgres(data_dir: Path) -> Iterator[str]:
    """Run PostgreSQL on `data_dir` (initdb on first use); yield the backend-store URI of its `mlflow`
    database. Stopped cleanly (`pg_ctl stop -m fast`) on exit.

    Raises:
        SearchlabError: PostgreSQL is not installed, or initdb / pg_ctl failed (their output included).
    """
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise SearchlabError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                             "`apt-get install postgresql`.")
    data_dir = data_dir.resolve()
    if not (data_dir / "PG_VERSION").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        if _as_postgres_user():
            os.chown(data_dir, pwd.getpwnam("postgres").pw_uid, -1)
        # Trust is safe: the only way in is the socket inside this 0700 folder.
        _pg(bin_dir, "initdb", "-D", str(data_dir), "-U", DATABASE, "--auth=trust", "-E", "UTF8", "--no-instructions")
    options = f"-c listen_addresses='' -c unix_socket_directories={shlex.quote(str(data_dir))}"
    log = data_dir / "postgres.log"
    try:
        _pg(bin_dir, "pg_ctl", "start", "-D", str(data_dir), "-w", "-s", "-l", str(log), "-o", options)
    except SearchlabError as exc:  # e.g. a socket path over 107 characters: the reason is in the log
        raise SearchlabError(f"{exc}{log.read_text()[-2000:] if log.exists() else ''}") from None
    try:
        _create_database(data_dir)
        yield f"postgresql+psycopg2://{DATABASE}@/{DATABASE}?host={quote(str(data_dir))}"
    finally:
        _pg(bin_dir, "pg_ctl", "stop", "-D", str(data_dir), "-m", "fast", "-s")


def _create_database(socket_dir: Path) -> None:
    import psycopg2

    connection = psycopg2.connect(host=str(socket_dir), user=DATABASE, dbname="postgres")
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        connection.close()


def server_command(backend_uri: str, artifacts: Path, host: str = "127.0.0.1", port: int = 5000,
                   workers: int = 2) -> list[str]:
    """The `mlflow server` command line: runs in `backend_uri`, artifacts served from `artifacts`."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
            "--artifacts-destination", str(artifacts.resolve()), "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", str(workers)]


#: Set for `mlflow server` and `mlflow ui`: without MLflow's GenAI job runner (a scheduler and 7 Huey consumer
#: processes, which training runs never use), the UI answers in about half the time on half the CPU.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 now (for a throwaway server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(command: list[str], url: str, timeout: float = 120, output: _Output = None,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Start `mlflow server` or `mlflow ui` (in `env` and `SERVER_ENV`) in its own process group and wait until
    `url`/health answers (10-20 s here); the whole group is ended on exit (a server's workers outlive a plain
    kill of the parent).

    Raises:
        SearchlabError: the process exited, or did not answer within `timeout` seconds.
    """
    process = subprocess.Popen(command, start_new_session=True, stdout=output, stderr=output,
                               env={**(os.environ if env is None else env), **SERVER_ENV})
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if process.poll() is not None:
                raise SearchlabError(f"`mlflow {command[3]}` exited with code {process.returncode} before "
                                     f"answering at {url}; its output says why.")
            if time.monotonic() > deadline:
                raise SearchlabError(f"`mlflow {command[3]}` did not answer at {url} within {timeout:.0f} s.")
            time.sleep(1)
        yield process
    finally:
        end_group(process, grace=30.0)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def tracking_server(pg_data: Path, artifacts: Path, host: str = "127.0.0.1", port: int = 5000, workers: int = 2,
                    output: _Output = None) -> Iterator[subprocess.Popen[bytes]]:
    """PostgreSQL on `pg_data` and `mlflow server` over it, ready at http://host:port; both stopped on exit."""
    with postgres(pg_data) as backend_uri:
        command = server_command(backend_uri, artifacts, host, port, workers)
        with serving(command, f"http://{host}:{port}", output=output) as process:
            yield process


def main(argv: list[str] | None = None) -> None:
    """`make server`: run until Ctrl-C; exit code 1 when either server fails."""
    parser = argparse.ArgumentParser(prog="python -m searchlab.infra.tracking_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="bind address; only change it on a trusted network")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default: 2)")
    parser.add_argument("--dir", type=Path, default=SERVER_DIR,
                        help="holds postgres/ and artifacts/ (default: mlruns/server here)")
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM stop both servers cleanly, even when started with SIGINT ignored (`cmd &`).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    url = f"http://{args.host}:{args.port}"
    print(f"searchlab server: starting PostgreSQL in {args.dir / 'postgres'} and mlflow server on {url} "
          "(~30 s)...", flush=True)
    try:
        with tracking_server(args.dir / "postgres", args.dir / "artifacts", args.host, args.port,
                             args.workers) as process:
            use = "make search ARGS=tracking=server"
            if args.port != 5000 or args.host != "127.0.0.1":
                use = f"MLFLOW_TRACKING_URI={url} {use}"
            print(f"\nsearchlab server: ready at {url}/ (artifacts in {args.dir / 'artifacts'}). Run searches with "
                  f"`{use}`. Ctrl-C stops it.", flush=True)
            process.wait()
        raise SearchlabError(f"mlflow server exited with code {process.returncode}; PostgreSQL was stopped.")
    except KeyboardInterrupt:
        print("\nsearchlab server: stopped mlflow server and PostgreSQL.", file=sys.stderr)
    except SearchlabError as exc:
        print(f"searchlab server: error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
