"""Robustness of whole searches: diverging trials, a stage where everything fails, two searches on one
store, hygiene (credentials, UI binding, safe model loading) and repeatability under a seed.

Searches run in-process through `searchlab.pipeline.run` (except the concurrent pair, which must be
two processes) on a small synthetic 3-class table where the data set does not matter (the binary task:
test_pipeline.py).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run
from omegaconf import OmegaConf

from searchlab import pipeline
from searchlab.config import Config
from searchlab.errors import StageFailedError
from searchlab.tracking import RUN_TAG, STAGE_TAG, Tracker, flatten, redact
from searchlab.ui import main as ui_main
from searchlab.ui import ui_command
from tests.conftest import grid_size

MakeConfig = Callable[..., Config]
ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "searchlab"
SMALL = ("experiment=smoke", "dataset=synthetic", "dataset.n_samples=300", "dataset.n_classes=3", "verbose=0")
COARSE_TRIALS = "tags.`searchlab.run` = 'trial' and tags.`searchlab.stage` = 'coarse'"
FINE_TRIALS = "tags.`searchlab.run` = 'trial' and tags.`searchlab.stage` = 'fine'"


def _runs(uri: str, query: str = "") -> list[Run]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], query, max_results=1000)


def _role(run: Run) -> tuple[str | None, str | None]:
    return run.data.tags.get(RUN_TAG), run.data.tags.get(STAGE_TAG)


def _statuses(found: list[Run]) -> dict[str, str]:
    return {f"{run.info.run_name} [{run.info.run_id[:6]}]": run.info.status for run in found}


# -- failing trials -----------------------------------------------------------------------------


@pytest.mark.slow
def test_diverging_trials_are_failed_and_the_search_finishes(make_config: MakeConfig, store_uri: str) -> None:
    """SGD at learning rate 1e6 diverges: those trials end FAILED with the reason, the others carry the search."""
    config = make_config(*SMALL, f"tracking.uri={store_uri}", "tracking.log_model=false",
                         "~search.coarse.space.learning_rate",
                         "+search.coarse.space.learning_rate={type:choice,values:[0.001,1000000.0]}",
                         "search.coarse.space.optimizer.values=[sgd]")
    result = pipeline.run(config)

    assert result.coarse.completed and len(result.coarse.completed) < len(result.coarse.trials)
    found = _runs(store_uri)
    assert "RUNNING" not in _statuses(found).values(), _statuses(found)
    search = [run for run in found if _role(run) == ("search", None)]
    assert [run.info.status for run in search] == ["FINISHED"]
    coarse = [run for run in found if _role(run) == ("trial", "coarse")]
    assert len(coarse) == config.search.coarse.n_iter
    for run in coarse:
        diverging = float(run.data.params["learning_rate"]) > 1.0
        assert run.info.status == ("FAILED" if diverging else "FINISHED"), run.info.run_name
        if diverging:
            error = run.data.tags["searchlab.error"].lower()
            assert "nan" in error or "inf" in error, error
        else:
            assert "searchlab.error" not in run.data.tags
    for run in (r for r in found if _role(r) == ("trial", "fine")):  # the fine stage may keep the bad value
        assert run.info.status == ("FAILED" if float(run.data.params["learning_rate"]) > 1.0 else "FINISHED")
    assert float(result.final.params["learning_rate"]) == pytest.approx(0.001)


@pytest.mark.slow
def test_a_stage_where_every_trial_fails_fails_the_search(make_config: MakeConfig, store_uri: str) -> None:
    """Every coarse candidate diverges: StageFailedError, and the search and stage runs end FAILED.

    The learning rates are absurd on purpose: at 1e3..1e6 a ReLU network can die (every unit
    dead, so a constant output and a finite, clipped loss) instead of overflowing, and that
    candidate then "succeeds" at chance level; at 1e30 the weights overflow to inf/NaN at once.
    """
    config = make_config(*SMALL, f"tracking.uri={store_uri}", "tracking.log_model=false",
                         "search.coarse.space.learning_rate.low=1e30", "search.coarse.space.learning_rate.high=1e35",
                         "search.coarse.space.optimizer.values=[sgd]", "search.coarse.space.activation.values=[relu]")
    with pytest.raises(StageFailedError, match="coarse"):
        pipeline.run(config)

    found = _runs(store_uri)
    statuses = _statuses(found)
    assert "RUNNING" not in statuses.values(), statuses
    roles = {_role(run): run.info.status for run in found if _role(run)[0] != "trial"}
    assert roles == {("search", None): "FAILED", ("stage", "coarse"): "FAILED"}, statuses
    trials = [run for run in found if _role(run) == ("trial", "coarse")]
    assert len(trials) == config.search.coarse.n_iter
    assert {run.info.status for run in trials} == {"FAILED"}


def test_binary_labels_are_shaped_for_the_model() -> None:
    """The fine and final stages fit `Scalers.transform`'s labels: one column for a binary task, which
    the model's BinaryCrossentropy metric needs (1-D labels raise a rank ValueError in Keras 3.15)."""
    from searchlab.model import Scalers, build_model

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    y = (X[:, 0] > 0).astype("int64")
    scalers = Scalers.fit(X, y, "binary", "standard")
    Xs, ys = scalers.transform(X, y)
    assert ys.shape == (64, 1)
    model = build_model(n_features=3, task="binary", units=4, layers=1)
    history = model.fit(Xs, ys, epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# -- two searches on one store ------------------------------------------------------------------


@pytest.mark.slow
def test_two_searches_at_once_on_one_store(tmp_path: Path, make_config: MakeConfig) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    Tracker(uri, EXPERIMENT)  # the store and experiment exist before either search starts
    common = [*SMALL, "tracking.log_model=false", "search.coarse.n_jobs=1", f"tracking.uri={uri}"]
    procs = []
    for seed in (1, 2):
        out, err = open(tmp_path / f"{seed}.out", "wb"), open(tmp_path / f"{seed}.err", "wb")
        procs.append((subprocess.Popen([sys.executable, "-m", "searchlab", *common, f"seed={seed}"], cwd=ROOT,
                                       stdout=out, stderr=err), out, err, seed))
    try:
        codes = [proc.wait(timeout=900) for proc, *_ in procs]
    finally:
        for proc, out, err, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            out.close()
            err.close()
    logs = "\n".join((tmp_path / f"{seed}.err").read_text(errors="replace") for *_, seed in procs)
    assert codes == [0, 0], logs

    found = _runs(uri)
    assert "RUNNING" not in _statuses(found).values(), _statuses(found)
    searches = [run for run in found if _role(run) == ("search", None)]
    assert len(searches) == 2 and {run.info.status for run in searches} == {"FINISHED"}
    assert sorted(run.data.params["seed"] for run in searches) == ["1", "2"]
    parent_of = {run.info.run_id: run.data.tags.get("mlflow.parentRunId") for run in found}
    n_iter = make_config(*SMALL).search.coarse.n_iter
    points = make_config(*SMALL).search.fine.points
    tree_sizes = 0
    for search in searches:
        stages = {run.data.tags[STAGE_TAG]: run for run in found if parent_of[run.info.run_id] == search.info.run_id}
        assert sorted(stages) == ["coarse", "fine"]
        assert {run.info.status for run in stages.values()} == {"FINISHED"}
        coarse = [r for r in found if parent_of[r.info.run_id] == stages["coarse"].info.run_id]
        fine = [r for r in found if parent_of[r.info.run_id] == stages["fine"].info.run_id]
        assert sorted(int(r.data.tags["searchlab.candidate"]) for r in coarse) == list(range(n_iter))
        space = mlflow.artifacts.load_dict(f"{stages['fine'].info.artifact_uri}/space.json")
        assert len(fine) == grid_size(space, points) + 1  # the grid + the coarse winner
        assert all(_role(r) == ("trial", "fine") for r in fine)
        assert {r.info.status for r in coarse + fine} <= {"FINISHED", "FAILED"}
        tree_sizes += 1 + len(stages) + len(coarse) + len(fine)
    assert len(found) == tree_sizes  # every run belongs to one of the two trees


# -- hygiene ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("postgresql://bob:secret@db/x", "postgresql://***@db/x"),
    ("http://alice:p%40ss@mlflow.example:5000", "http://***@mlflow.example:5000"),
    ("uri: https://token@host/path and mysql://u:p@h/db", "uri: https://***@host/path and mysql://***@h/db"),
    ("sqlite:////tmp/mlruns/mlflow.db", "sqlite:////tmp/mlruns/mlflow.db"),
    ("http://127.0.0.1:5000/#/experiments/1", "http://127.0.0.1:5000/#/experiments/1"),
])
def test_redact_hides_credentials_in_uris(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_logged_config_never_holds_a_password(tmp_path: Path, make_config: MakeConfig) -> None:
    """The pipeline logs the config as params (`flatten` -> `Tracker.log`) and as `config.yaml` (`redact`);
    a tracking URI with credentials must come out of both without its password."""
    config = make_config("tracking.uri=postgresql://bob:secret@db/x")
    resolved = dataclasses.asdict(config)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", EXPERIMENT)
    run_id = tracker.start_run("hygiene", {RUN_TAG: "search"})
    tracker.log(run_id, params={**flatten(resolved), "extra": "postgresql://bob:secret@db/x"})
    tracker.end_run(run_id)
    params = tracker.client.get_run(run_id).data.params
    assert params["tracking.uri"] == "postgresql://***@db/x"
    assert params["extra"] == "postgresql://***@db/x"
    assert not [key for key, value in params.items() if "secret" in value]
    text = redact(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    assert "secret" not in text and yaml.safe_load(text)["tracking"]["uri"] == "postgresql://***@db/x"


def test_ui_binds_to_localhost_by_default(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    command = ui_command("sqlite:////tmp/mlflow.db")
    assert command[command.index("--host") + 1] == "127.0.0.1"

    launched: list[list[str]] = []
    monkeypatch.setattr("searchlab.ui.os.execv", lambda path, argv: launched.append(list(argv)))
    ui_main(["--uri", "postgresql://bob:secret@db/x"])
    assert launched and launched[0][launched[0].index("--host") + 1] == "127.0.0.1"
    assert "secret" not in capsys.readouterr().out


# -- repeatability and the logged model ------------------------------------------------------------


@pytest.fixture(scope="module")
def twin_searches(tmp_path_factory: pytest.TempPathFactory) -> tuple[pipeline.SearchResult, pipeline.SearchResult]:
    """Two in-process smoke searches with the same seed into two stores (the first logs its model)."""
    from tests.conftest import compose_config

    results = []
    for name, log_model in (("first", "true"), ("second", "false")):
        uri = f"sqlite:///{tmp_path_factory.mktemp(name) / 'mlruns' / 'mlflow.db'}"
        results.append(pipeline.run(compose_config(*SMALL, "seed=3", f"tracking.uri={uri}",
                                                   f"tracking.log_model={log_model}")))
    return results[0], results[1]


@pytest.mark.slow
def test_same_seed_same_search(twin_searches: tuple[pipeline.SearchResult, pipeline.SearchResult]) -> None:
    a, b = twin_searches
    assert [t.params for t in a.coarse.trials] == [t.params for t in b.coarse.trials]

    coarse_drift = max(abs(x.mean_score - y.mean_score) for x, y in zip(a.coarse.trials, b.coarse.trials, strict=True)
                       if x.ok and y.ok)
    b_fine = {t.trial_id: t for t in (*b.fine.trials, b.fine.coarse_winner)}
    fine_drift = max(abs(t.score - b_fine[t.trial_id].score) for t in (*a.fine.trials, a.fine.coarse_winner)
                     if t.ok and t.trial_id in b_fine and b_fine[t.trial_id].ok)
    print(f"\nsame seed, two searches: max coarse mean_score drift {coarse_drift:.6f}, "
          f"max fine score drift {fine_drift:.6f}")
    assert coarse_drift < 0.05 and fine_drift < 0.05

    assert a.fine_space.tuned == b.fine_space.tuned
    assert a.fine_space.fixed == b.fine_space.fixed
    assert ({frozenset(t.tuned.items()) for t in a.fine.trials}
            == {frozenset(t.tuned.items()) for t in b.fine.trials})


@pytest.mark.slow
def test_logged_model_loads_in_keras_safe_mode(twin_searches: tuple[pipeline.SearchResult, pipeline.SearchResult],
                                              tmp_path: Path) -> None:
    """The best model is a plain `.keras` file that Keras loads with `safe_mode=True` (no pickled code).

    `mlflow.keras.load_model` (mlflow 3.17, `mlflow/keras/load.py::_load_keras_model`) calls
    `keras.saving.load_model(path, custom_objects=..., **load_model_kwargs)` without a `safe_mode`
    argument, so Keras' default `safe_mode=True` applies, unless the model was logged with
    `save_exported_model` (a TF SavedModel, loaded by `tf.saved_model.load`), which searchlab does not use.
    """
    import keras

    result = twin_searches[0]
    assert result.model_uri is not None
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=result.model_uri, dst_path=str(tmp_path),
                                                     tracking_uri=result.tracking_uri))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["keras"]
    assert not flavor.get("save_exported_model")
    files = list(local.rglob("*.keras"))
    assert len(files) == 1, files
    model = keras.saving.load_model(files[0], safe_mode=True)
    X = result.data.X_test[:5]
    expected = np.asarray(result.final.model.predict(X, verbose=0))
    np.testing.assert_allclose(np.asarray(model.predict(X, verbose=0)), expected, rtol=1e-5, atol=1e-6)

    mlflow.set_tracking_uri(result.tracking_uri)
    via_mlflow = mlflow.keras.load_model(result.model_uri)
    np.testing.assert_allclose(np.asarray(via_mlflow.predict(X, verbose=0)), expected, rtol=1e-5, atol=1e-6)
