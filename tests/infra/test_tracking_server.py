"""Team tracking (`searchlab.infra.tracking_server`): a small search against `mlflow server` over PostgreSQL,
both real processes on 127.0.0.1, and a server that is not there.

The server starts once for the module (~30 s) and serves one search of two coarse candidates.
Needs Debian's `postgresql` package (`.ci/run` installs it): skipped without it, except under CI
(CI=true), where a missing PostgreSQL must fail rather than hide the test.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image

from searchlab import pipeline
from searchlab.config import compose
from searchlab.errors import ConfigError, SearchlabError
from searchlab.infra.tracking_server import free_port, postgres_bin, tracking_server
from searchlab.records import CANDIDATE_TAG, RUN_TAG, STAGE_TAG, TRIAL_ID_TAG
from searchlab.tracking import Tracker
from tests.conftest import require_system_package

N_ITER = 2
# A whole search in well under a minute, the model logged: it goes to the server's artifact store. Three classes:
# the model's softmax gives one column per class (a binary model has one sigmoid output).
SEARCH = ("tracking=server", "experiment=smoke", "dataset=synthetic", "dataset.n_samples=200", "dataset.n_classes=3",
          "model.epochs=3", f"search.coarse.n_iter={N_ITER}", "search.coarse.n_jobs=1", "search.fine.trial_worker=false",
          "search.fine.max_params=1", "search.coarse.paired.scaling=null", "verbose=0", "search.fine.beyond_edges=false",
          "search.fine.confirm_top=0")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """PostgreSQL + `mlflow server` as `make server` runs them; yields (tracking URI, artifact root)."""
    require_system_package(postgres_bin() is not None, "needs PostgreSQL's server binaries: apt-get install postgresql")
    artifacts = tmp_path_factory.mktemp("artifacts")
    log = tmp_path_factory.mktemp("server") / "mlflow-server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # As root, PostgreSQL runs as `postgres`, which cannot enter pytest's private tmp folders.
    with tempfile.TemporaryDirectory(prefix="searchlab-pg-") as pg, log.open("wb") as output:
        os.chmod(pg, 0o711)
        try:
            with tracking_server(Path(pg) / "data", artifacts, port=port, output=output):
                yield url, artifacts
        except SearchlabError as exc:
            pytest.fail(f"{exc}\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def searched(server: tuple[str, Path]) -> tuple[pipeline.SearchResult, MlflowClient]:
    url, _ = server
    result = pipeline.run(compose(*SEARCH, f"tracking.uri={url}"))
    return result, MlflowClient(url)


def _children(client: MlflowClient, experiment_id: str, parent: str) -> list[mlflow.entities.Run]:
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=1000)


@pytest.mark.distributed
@pytest.mark.slow
def test_complete_run_tree(searched: tuple[pipeline.SearchResult, MlflowClient]) -> None:
    result, client = searched
    search = client.get_run(result.run_id)
    assert search.data.tags[RUN_TAG] == "search" and search.info.status == "FINISHED"
    assert "test_accuracy" in search.data.metrics
    stages = {s.data.tags[STAGE_TAG]: s for s in _children(client, result.experiment_id, result.run_id)}
    assert sorted(stages) == ["coarse", "fine"]
    assert all(s.info.status == "FINISHED" for s in stages.values())

    coarse = _children(client, result.experiment_id, stages["coarse"].info.run_id)
    assert sorted(int(t.data.tags[CANDIDATE_TAG]) for t in coarse) == list(range(N_ITER))  # each exactly once
    fine = _children(client, result.experiment_id, stages["fine"].info.run_id)
    trial_ids = Counter(t.data.tags[TRIAL_ID_TAG] for t in fine)
    assert set(trial_ids.values()) == {1}
    assert set(trial_ids) == {t.trial_id for t in result.fine.trials} | {"coarse-winner"}
    assert all(t.info.status == "FINISHED" and t.data.tags[RUN_TAG] == "trial" for t in coarse + fine)

    everything = client.search_runs([result.experiment_id], max_results=1000)
    assert len(everything) == 1 + 2 + len(coarse) + len(fine)  # nothing stray, nothing twice


@pytest.mark.distributed
@pytest.mark.slow
def test_artifacts_and_model_through_the_server(searched: tuple[pipeline.SearchResult, MlflowClient],
                                                server: tuple[str, Path], tmp_path: Path) -> None:
    result, client = searched
    url, artifact_root = server
    assert client.get_experiment(result.experiment_id).artifact_location.startswith("mlflow-artifacts:")
    names = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "narrowing.md", "plots", "best_model_input_example.json"} <= names

    config = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="config.yaml",
                                                 dst_path=str(tmp_path), tracking_uri=url)
    assert yaml.safe_load(Path(config).read_text())["tracking"]["uri"] == url
    plots = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="plots",
                                                     dst_path=str(tmp_path), tracking_uri=url))
    with Image.open(plots / "learning_curves.png") as image:
        assert image.size[0] > 300
    assert any(artifact_root.rglob("config.yaml"))  # the server wrote it to the shared artifact root

    assert result.model_uri is not None
    mlflow.set_tracking_uri(url)
    model = mlflow.keras.load_model(result.model_uri)
    proba = np.asarray(model.predict(result.data.X_test, verbose=0))
    assert float((proba.argmax(axis=1) == result.data.y_test).mean()) == pytest.approx(
        result.final.test_metrics["accuracy"], abs=1e-6)


def test_tracking_server_config_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert compose("tracking=server").tracking.uri == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.org")
    tracking = compose("tracking=server").tracking
    assert (tracking.uri, tracking.experiment, tracking.log_model) == ("https://mlflow.example.org", "searchlab", True)


def test_unreachable_server_fails_fast() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"^tracking.uri='{uri}': no MLflow tracking server answers there "
                                          r"\(Connection refused\)\. Start one with `make server`"):
        Tracker(uri, "searchlab")
    assert time.monotonic() - started < 10


def test_unreachable_server_from_the_environment_stops_the_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tracking=server` with MLFLOW_TRACKING_URI where nothing answers: one sentence saying what is wrong, with
    what value and what to do, before any training (the command line prints it as `searchlab: error: ...`)."""
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        pipeline.run(compose("tracking=server", "experiment=smoke", "verbose=0"))
    assert str(caught.value) == (
        f"tracking.uri='{uri}': no MLflow tracking server answers there (Connection refused). "
        "Start one with `make server` (PostgreSQL and mlflow server on this machine), point tracking.uri (or "
        "MLFLOW_TRACKING_URI, which tracking=server reads) at your team's server, or record locally with "
        "tracking=local.")
    assert time.monotonic() - started < 10
