"""`make serve` (`searchlab.infra.serve`): MLflow's real model server for a logged model, started as a user starts it
(no activated venv: this Python's bin directory is not on PATH), answering JSON at /invocations.

The model is logged directly with `registry.log_model` (no search): a raw-feature model as the final stage exports
it, its scalers inside. The server starts once (~20 s, most of it MLflow and TensorFlow starting up).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from searchlab import registry
from searchlab.errors import SearchlabError
from searchlab.infra.serve import resolve_model, serve_env
from searchlab.infra.tracking_server import free_port, serving
from searchlab.model import Scalers, build_model
from searchlab.tracking import Tracker
from tests.conftest import empty_store_uri


def _raw_feature_model(task: str) -> object:
    """A small model on raw features of very different scales, scaling inside, as the final stage exports it. A
    regression model is compiled with searchlab's own metrics (RMSE in target units), which the served copy must
    not need."""
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(60, 4)) * [1, 10, 100, 0.1] + [0, 5, 50, 0]).astype("float32")
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 5).astype(int) if task == "multiclass" else X[:, 0] * 3 + X[:, 2] + 7
    scalers = Scalers.fit(X, y, task, "standard")
    net = build_model(n_features=4, task=task, n_classes=3, units=8, layers=1, target_scale=scalers.target_scale)
    net.fit(*scalers.transform(X, y), epochs=1, verbose=0)
    return scalers.wrap(net)


@pytest.mark.slow
def test_make_serve_answers_like_the_model_in_python(tmp_path: Path) -> None:
    """Two searches' models in a store; `python -m searchlab.infra.serve` without a model serves the newer one,
    and its predictions for raw rows are the in-process ones. Before any model, it says there is none."""
    tracker = Tracker(empty_store_uri(tmp_path / "mlruns"), "searchlab")
    with pytest.raises(SearchlabError, match=r"no searched model in .*MODEL=models:/<id>"):
        resolve_model(None, tracker.uri)
    rows = np.array([[0.3, 4.0, 120.0, 0.01], [-1.2, 9.5, -20.0, 0.2], [2.0, -3.0, 55.0, -0.05]], dtype="float32")
    for task in ("multiclass", "regression"):  # the second is the newest
        model = _raw_feature_model(task)
        run_id = tracker.start_run(f"search {task}", {})
        registry.log_model(tracker, run_id, model, rows)
        tracker.end_run(run_id)
    expected = np.asarray(model.predict(rows, verbose=0))  # type: ignore[attr-defined]

    bin_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != bin_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "searchlab.infra.serve", "--uri", tracker.uri, "--port", str(port)]
    with log.open("wb") as output:
        try:
            with serving(command, url, output=output, env={**os.environ, "PATH": path or "/usr/bin:/bin"}):
                request = urllib.request.Request(f"{url}/invocations", data=json.dumps({"inputs": rows.tolist()}).encode(),
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=60) as response:
                    served = np.asarray(json.loads(response.read())["predictions"])
        except SearchlabError as exc:
            pytest.fail(f"{exc}\n{log.read_text()[-3000:]}")
    assert served.size == len(rows)  # one value per row: the newest model (regression), not the 3-class one
    np.testing.assert_allclose(served.ravel(), expected.ravel(), rtol=1e-5, atol=1e-5)
    assert "searchlab serve: models:/" in log.read_text()


def test_serve_env_puts_this_python_first_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    env = serve_env("sqlite:////somewhere/mlflow.db")
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert (Path(env["PATH"].split(os.pathsep)[0]) / "uvicorn").exists()
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:////somewhere/mlflow.db"


def test_a_named_model_is_served_as_given_and_a_missing_store_is_named(tmp_path: Path) -> None:
    absent = f"sqlite:///{tmp_path / 'absent' / 'mlflow.db'}"
    with pytest.raises(SearchlabError, match=r"no MLflow store at .*absent.*make search"):
        resolve_model(None, absent)
    assert resolve_model("models:/digits-mlp@champion", absent) == "models:/digits-mlp@champion"
    assert not (tmp_path / "absent").exists()
