"""The command line as a user meets it: mistakes refused with a clear message and no run, one real subprocess per
kind of mistake (the other cases check the same messages in-process), a sweep, and a signal ending the runs.

Configuration and data mistakes are reported before TensorFlow loads: the data-error case runs with a
`tensorflow` package on its path that fails on import.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.errors import HydraException
from mlflow import MlflowClient
from mlflow.entities import ViewType
from omegaconf.errors import OmegaConfBaseException

from searchlab.config import compose
from searchlab.data import check_cv_feasible, load_dataset
from searchlab.errors import SearchlabError
from tests.conftest import TINY, empty_store_uri, new_store

ROOT = Path(__file__).resolve().parents[1]
TRACEBACK = "Traceback (most recent call last)"
# Small and quick if a case were (wrongly) accepted and a search started.
BASE = ("experiment=smoke", "verbose=0", "tracking.log_model=false")


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


def run_cli(*overrides: str, timeout: float = 180, env: dict[str, str] | None = None) -> Outcome:
    """`python -m searchlab <overrides>` from the project root."""
    done = subprocess.run([sys.executable, "-m", "searchlab", *overrides], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
    return Outcome(done.returncode, done.stdout, done.stderr)


def without_tensorflow(tmp_path: Path) -> dict[str, str]:
    """An environment whose `tensorflow` package fails on import: a refusal must come before TensorFlow loads."""
    poison = tmp_path / "poison" / "tensorflow"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text('raise ImportError("tensorflow was imported before the input was checked")\n')
    return {"PYTHONPATH": str(poison.parent)}


def store(tmp_path: Path) -> tuple[Path, str]:
    """Where a store in tmp_path would be (not created), and the override that points the CLI at it."""
    db = tmp_path / "mlruns" / "mlflow.db"
    return db, f"tracking.uri=sqlite:///{db}"


def runs_in_store(db: Path) -> list[str]:
    """Every run (any experiment, any lifecycle stage) in the SQLite store `db`; none if it does not exist."""
    if not db.exists():
        return []
    client = MlflowClient(f"sqlite:///{db}")
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    if not ids:
        return []
    runs = client.search_runs(ids, run_view_type=ViewType.ALL, max_results=1000)
    return [f"{r.info.run_name} ({r.info.status})" for r in runs]


def assert_refused(outcome: Outcome, expected: list[str], db: Path) -> None:
    """Exit != 0, every expected fragment in the output, no traceback, nothing in the store."""
    shown = f"exit {outcome.returncode}\n--- stdout\n{outcome.stdout}\n--- stderr\n{outcome.stderr}"
    assert outcome.returncode != 0, shown
    for fragment in expected:
        assert fragment in outcome.text, f"{fragment!r} not in the output:\n{shown}"
    assert TRACEBACK not in outcome.stdout and TRACEBACK not in outcome.stderr, shown
    assert runs_in_store(db) == [], shown


def assert_one_paragraph(outcome: Outcome) -> None:
    """searchlab's own messages: `searchlab: error: ...`, at most three lines, on stderr."""
    lines = [line for line in outcome.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[0].startswith("searchlab: error: "), outcome.stderr
    assert len(lines) <= 3, outcome.stderr
    assert outcome.returncode == 2


# (override(s), fragments the output must contain, whether searchlab's own validation says it)
CONFIG_CASES = [
    pytest.param(["dataset=nope"], ["nope", "Available options in 'dataset'", "csv", "digits", "imdb", "mnist",
                                    "synthetic"], False, id="unknown-group-option"),
    pytest.param(["search.coarse.n_itr=3"], ["search.coarse.n_itr"], False, id="unknown-key"),
    pytest.param(["search.coarse.n_iter=abc"], ["search.coarse.n_iter", "abc"], False, id="wrong-type"),
    pytest.param(["search.coarse.n_iter=0"], ["search.coarse.n_iter", ">= 1", "got 0"], True, id="n_iter-0"),
    pytest.param(["search.coarse.cv=1"], ["search.coarse.cv", ">= 2", "got 1"], True, id="cv-1"),
    pytest.param(["search.coarse.space.dropout.high=1.0"], ["search.coarse.space.dropout.high", "1.0", "< 1"], True,
                 id="dropout-high-1"),
    pytest.param(["search.coarse.space.l2.low=0"], ["search.coarse.space.l2.low", "> 0", "log"], True,
                 id="log-bound-0"),
    pytest.param(["search.coarse.space.units.low=300"], ["search.coarse.space.units.low", "300",
                                                         "search.coarse.space.units.high"], True, id="low-above-high"),
    pytest.param(["search.coarse.space.optimizer.values=[]"], ["search.coarse.space.optimizer.values", "non-empty"],
                 True, id="empty-choices"),
    pytest.param(["model.optimizer=adamax2"], ["model.optimizer", "adamax2", "adam", "sgd"], True,
                 id="unknown-optimizer"),
    pytest.param(["model.activation=swishy"], ["model.activation", "swishy", "relu", "tanh"], True,
                 id="unknown-activation"),
    pytest.param(["search.fine.max_params=0"], ["search.fine.max_params", ">= 1", "got 0"], True, id="max_params-0"),
    pytest.param(["dataset=synthetic", "dataset.test_size=0"], ["dataset.test_size", "> 0", "got 0"], True,
                 id="test_size-0"),
    pytest.param(["dataset=synthetic", "dataset.test_size=1.5"], ["dataset.test_size", "< 1", "1.5"], True,
                 id="test_size-1.5"),
    pytest.param(["search.fine.points=1"], ["search.fine.points", ">= 2", "got 1"], True, id="fine-points-1"),
    pytest.param(["search.fine.max_epochs=1"], ["search.fine.max_epochs", ">= 2", "got 1"], True,
                 id="fine-max_epochs-1"),
    pytest.param(["model.epochs=0"], ["model.epochs", ">= 1", "got 0"], True, id="epochs-0"),
    pytest.param(["seed=-1"], ["seed", ">= 0", "-1"], True, id="seed-negative"),
    pytest.param(["dataset=csv"], ["dataset.path", "dataset=csv"], True, id="csv-without-path"),
]


def _message(*overrides: str) -> str:
    """What composing and validating `overrides` says, as the command line would print it."""
    try:
        compose(*BASE, *overrides)
    except (SearchlabError, HydraException, OmegaConfBaseException) as exc:
        return str(exc)
    raise AssertionError(f"{overrides} was accepted")


@pytest.mark.parametrize(("overrides", "expected", "ours"), CONFIG_CASES)
def test_bad_config_message_names_the_key(overrides: list[str], expected: list[str], ours: bool) -> None:
    message = _message(*overrides)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_a_hydra_mistake_is_refused_on_the_command_line(tmp_path: Path) -> None:
    db, uri = store(tmp_path)
    outcome = run_cli(*BASE, uri, "dataset=nope", timeout=120)
    assert_refused(outcome, CONFIG_CASES[0].values[1], db)
    assert not db.exists(), "a configuration error should not even create the store"


def test_a_bad_value_is_refused_in_one_paragraph(tmp_path: Path) -> None:
    db, uri = store(tmp_path)
    outcome = run_cli(*BASE, uri, "search.coarse.n_iter=0", timeout=120)
    assert_refused(outcome, ["search.coarse.n_iter must be >= 1, got 0."], db)
    assert not db.exists()
    assert_one_paragraph(outcome)


# -- bad data: dataset=csv ----------------------------------------------------------------------


def _table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "label": np.arange(n) % 2})


def _missing_file(tmp_path: Path) -> tuple[list[str], list[str]]:
    path = tmp_path / "absent.csv"
    return [f"dataset.path={path}", "dataset.target=label"], ["dataset.path", str(path)]


def _absent_target(tmp_path: Path) -> tuple[list[str], list[str]]:
    path = tmp_path / "table.csv"
    _table().to_csv(path, index=False)
    return [f"dataset.path={path}", "dataset.target=klass"], ["dataset.target", "'klass'", str(path), "a, b, label"]


def _text_feature(tmp_path: Path) -> tuple[list[str], list[str]]:
    path = tmp_path / "text.csv"
    table = _table()
    table["colour"] = ["red", "green", "blue"] * 20
    table.to_csv(path, index=False)
    return [f"dataset.path={path}", "dataset.target=label"], ["non-numeric", "colour"]


def _missing_values(tmp_path: Path) -> tuple[list[str], list[str]]:
    path = tmp_path / "holes.csv"
    table = _table()
    table.loc[[3, 7], "b"] = np.nan
    table.to_csv(path, index=False)
    return [f"dataset.path={path}", "dataset.target=label"], ["missing values", "b (2)"]


def _rare_class(tmp_path: Path) -> tuple[list[str], list[str]]:
    path = tmp_path / "rare.csv"
    table = _table().astype({"label": str})
    table.loc[:3, "label"] = "rare"  # 4 rows: about 3 stay in training, fewer than 5 folds
    table.to_csv(path, index=False)
    return ([f"dataset.path={path}", "dataset.target=label", "search.coarse.cv=5"],
            ["rare", "search.coarse.cv=5", "fewer training rows"])


@pytest.mark.parametrize("make_case", [_absent_target, _text_feature, _missing_values, _rare_class],
                         ids=["absent-target", "non-numeric-feature", "missing-values", "class-smaller-than-cv"])
def test_bad_data_message_names_the_file_or_column(tmp_path: Path,
                                                   make_case: Callable[[Path], tuple[list[str], list[str]]]) -> None:
    overrides, expected = make_case(tmp_path)
    config = compose(*BASE, "dataset=csv", *overrides)
    with pytest.raises(SearchlabError) as caught:
        check_cv_feasible(load_dataset(config.dataset, config.seed), config.search.coarse.cv)
    for fragment in expected:
        assert fragment in str(caught.value)


def test_bad_data_is_refused_before_tensorflow_loads(tmp_path: Path) -> None:
    """A missing CSV file stops with a one-paragraph message naming it; TensorFlow is never imported (a
    `tensorflow` package that fails on import is first on the path)."""
    overrides, expected = _missing_file(tmp_path)
    db, uri = store(tmp_path)
    outcome = run_cli(*BASE, uri, "dataset=csv", *overrides, env=without_tensorflow(tmp_path))
    assert_refused(outcome, expected, db)
    assert_one_paragraph(outcome)


# -- resume and --cfg -------------------------------------------------------------------------


def test_resume_last_on_empty_store_is_refused_before_tensorflow_loads(tmp_path: Path) -> None:
    uri = empty_store_uri(tmp_path / "mlruns")
    db, uri = Path(uri.removeprefix("sqlite:///")), f"tracking.uri={uri}"
    outcome = run_cli("resume=last", "verbose=0", uri, env=without_tensorflow(tmp_path))
    assert outcome.returncode == 2, outcome.text
    assert "resume=last" in outcome.stderr and "no search to resume" in outcome.stderr, outcome.text
    assert TRACEBACK not in outcome.text
    assert runs_in_store(db) == []
    assert_one_paragraph(outcome)


def test_cfg_job_prints_the_composed_config(tmp_path: Path) -> None:
    db, uri = store(tmp_path)
    outcome = run_cli("--cfg", "job", "search.coarse.n_iter=7", uri, timeout=60)
    assert outcome.returncode == 0, outcome.text
    assert "n_iter: 7" in outcome.stdout
    for section in ("dataset:", "model:", "search:", "tracking:"):
        assert section in outcome.stdout
    assert TRACEBACK not in outcome.text
    assert not db.exists()


def test_help_lists_the_groups_the_keys_and_examples(tmp_path: Path) -> None:
    """`searchlab --help` (what `make search ARGS=--help` runs): every group and its options as Hydra finds them in
    conf/ (no schema among them), the most used keys, examples; no search, no store."""
    outcome = run_cli("--help", timeout=60)
    assert outcome.returncode == 0, outcome.text
    text = outcome.stdout
    for line in ("dataset: arrays, csv, digits, imdb, mnist, synthetic", "model: custom, mlp", "search/coarse: random",
                 "search/fine: grid, hyperband", "tracking: local, server", "experiment: half, imdb, mnist, residual, smoke"):
        assert line in text, text
    assert "_schema" not in text
    for key in ("seed=", "verbose=", "resume=", "dataset.path=", "dataset.target=", "dataset.sep=", "dataset.header=",
                "model.epochs=", "model.scaling=", "search.coarse.n_iter=", "search.coarse.cv=",
                "search.fine.max_params=", "tracking.uri=", "tracking.register_as="):
        assert f"\n{key}" in text, key
    examples = text.split("== Examples ==")[1]
    assert examples.count("\nsearchlab ") >= 3
    assert TRACEBACK not in outcome.text and not (ROOT / "outputs").exists()


def test_a_sweep_runs_one_search_per_job(tmp_path: Path) -> None:
    """`searchlab -m seed=1,2`: two searches into one store, and a table of both at the end."""
    store_ = new_store(tmp_path / "mlruns")  # the store and experiment exist before the jobs
    outcome = run_cli("-m", "seed=1,2", *TINY, "search.coarse.n_iter=2", "search.fine.max_params=1",
                      "search.fine.points=2", "model.epochs=2", f"tracking.uri={store_.uri}", timeout=600)
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    assert "searchlab sweep: 2 jobs" in outcome.stdout
    assert "seed=1" in outcome.stdout and "seed=2" in outcome.stdout
    assert "database is locked" not in outcome.text
    searches = store_.runs("tags.`searchlab.run` = 'search'")
    assert sorted(r.data.params["seed"] for r in searches) == ["1", "2"]
    assert {r.info.status for r in searches} == {"FINISHED"}


def test_sigterm_ends_the_open_runs_killed_and_says_how_to_resume(tmp_path: Path) -> None:
    """SIGTERM (a scheduler, `kill`) as Ctrl-C: exit code 130, every open run KILLED, a `resume=` hint, no
    traceback. Resuming itself is checked in-process (tests/test_pipeline.py)."""
    store_ = new_store(tmp_path / "mlruns")
    with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "searchlab", *TINY, "search.coarse.n_iter=6",
                                 f"tracking.uri={store_.uri}"], cwd=ROOT, stdout=out, stderr=err)
        try:
            deadline = time.time() + 300
            while not store_.runs("tags.`searchlab.stage` = 'coarse' and tags.`searchlab.run` = 'trial'"):
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "err").read_text()
                time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
    log = (tmp_path / "out").read_text() + (tmp_path / "err").read_text()
    assert code == 130, log
    assert "resume=" in (tmp_path / "err").read_text() and TRACEBACK not in log, log
    statuses = {(r.data.tags.get("searchlab.run"), r.data.tags.get("searchlab.stage")): r.info.status
                for r in store_.runs() if r.data.tags.get("searchlab.run") != "trial"}
    assert statuses == {("search", None): "KILLED", ("stage", "coarse"): "KILLED"}
    assert "RUNNING" not in {r.info.status for r in store_.runs()}
