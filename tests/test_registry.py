"""Logging the searched model and registering it: the champion moves only on a better score."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from searchlab import registry
from searchlab.tracking import Tracker
from tests.conftest import empty_store_uri


@pytest.mark.parametrize(("new", "champion", "higher_is_better", "promote"), [
    (0.9, None, True, True),  # nothing to beat
    (None, None, True, True),
    (0.91, 0.90, True, True),
    (0.90, 0.90, True, False),  # a tie keeps the champion
    (0.89, 0.90, True, False),
    (0.20, 0.25, False, True),  # lower is better (log loss, RMSE)
    (0.30, 0.25, False, False),
    (None, 0.90, True, False),  # no score never displaces a scored champion
])
def test_promotion_rule(new: float | None, champion: float | None, higher_is_better: bool, promote: bool) -> None:
    assert registry.should_promote(new, champion, higher_is_better) is promote


def _tiny_model() -> keras.Model:
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tracker, keras.Model, str, str]:
    """A search-like run with a logged model."""
    tracker = Tracker(empty_store_uri(tmp_path_factory.mktemp("store")), "models")
    run_id = tracker.start_run("search", {})
    model = _tiny_model()
    uri = registry.log_model(tracker, run_id, model, np.ones((4, 3)))
    return tracker, model, run_id, uri


def test_the_logged_model_pins_what_trained_it_and_loads(logged: tuple[Tracker, keras.Model, str, str],
                                                       tmp_path: Path) -> None:
    """The requirements are given, not inferred (seconds in a subprocess): the model must still list the
    installed keras, numpy and TensorFlow, and load as pyfunc and in Keras' safe mode."""
    tracker, model, run_id, uri = logged
    assert uri.startswith("models:/")
    mlflow.set_tracking_uri(tracker.uri)  # the test's own choice, for `models:/` URIs: searchlab never sets it
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path),
                                                     tracking_uri=tracker.uri))
    requirements = (local / "requirements.txt").read_text().split()
    assert {f"{name}=={version(name)}" for name in ("keras", "numpy", "mlflow")} <= set(requirements)
    assert any(r.startswith(("tensorflow==", "tensorflow-cpu==")) for r in requirements), requirements
    x = np.ones((4, 3), dtype="float32")
    expected = np.asarray(model.predict(x, verbose=0))
    files = list(local.rglob("*.keras"))
    assert len(files) == 1  # a plain .keras file, loadable without pickled code
    np.testing.assert_allclose(keras.saving.load_model(files[0], safe_mode=True).predict(x, verbose=0), expected,
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(mlflow.pyfunc.load_model(uri).predict(x)), expected, rtol=1e-5)
    assert registry.INPUT_EXAMPLE in {a.path for a in tracker.client.list_artifacts(run_id)}
    assert [o.model_id for o in tracker.client.get_run(run_id).outputs.model_outputs] == [uri.removeprefix("models:/")]


def test_logging_a_model_leaves_no_global_mlflow_state(tmp_path: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}")
    tracker = Tracker(empty_store_uri(tmp_path), "models")
    registry.log_model(tracker, tracker.start_run("search", {}), _tiny_model(), np.ones((2, 3)))
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'other.db'}"
    assert mlflow.active_run() is None


def test_the_champion_moves_only_on_a_better_score(logged: tuple[Tracker, keras.Model, str, str]) -> None:
    tracker, _, _, uri = logged
    scores = {}
    for name, accuracy in (("first", 0.80), ("worse", 0.75), ("better", 0.90)):
        run_id = tracker.start_run(name, {})
        tracker.log(run_id, metrics={"test_accuracy": accuracy})
        scores[name] = run_id
    said = [registry.register(tracker, uri, "tiny", scores[name], "test_accuracy", True)
            for name in ("first", "worse", "better")]
    assert said[0] == "registered tiny version 1; it is now the champion"
    assert said[1] == ("registered tiny version 2 (test_accuracy 0.75); the champion stays version 1 "
                       "(test_accuracy 0.8)")
    assert said[2] == "registered tiny version 3; it is now the champion (was version 1, test_accuracy 0.8)"
    champion = tracker.client.get_model_version_by_alias("tiny", registry.CHAMPION)
    assert str(champion.version) == "3" and champion.run_id == scores["better"]


def test_keras_input_example_trap_still_there(tmp_path: Path) -> None:
    """MLflow 3.17's Keras flavor fails when `save_model` is given `input_example` (it writes the example before
    it creates the model folder), so `registry.log_model` logs the example as a run artifact instead. When this
    test fails, MLflow fixed it: pass `input_example=` to `save_model` there."""
    with pytest.raises(FileNotFoundError):
        mlflow.keras.save_model(_tiny_model(), str(tmp_path / "model"), input_example=np.zeros((2, 3), "float32"))
