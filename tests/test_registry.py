"""Logging the searched model and registering it: the champion moves only on a better score."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from searchlab import registry
from searchlab.records import TEST_ROWS_TAG
from searchlab.registry import RecordedScore
from searchlab.tracking import Tracker
from tests.conftest import empty_store_uri

ROWS = "digits seed=0 test_size=0.2 rows=360 sha256=0123456789abcdef"
OTHER_ROWS = "digits seed=1 test_size=0.2 rows=360 sha256=fedcba9876543210"


def _score(value: float | None, low: float | None = None, high: float | None = None,
           rows: str | None = ROWS) -> RecordedScore:
    return RecordedScore(value, low, high, rows)


@pytest.mark.parametrize(("new", "champion", "higher_is_better", "margin", "promote", "why"), [
    (_score(0.9, 0.88, 0.92), None, True, 0.0, True, "there was none"),
    (_score(None), _score(None), True, 0.0, True, "the champion has no test score"),
    (_score(None), _score(0.9), True, 0.0, False, "the new version has no test score"),
    (_score(0.95, 0.93, 0.97), _score(0.90), True, 0.0, True, "lies outside"),
    (_score(0.91, 0.88, 0.94), _score(0.90), True, 0.0, False, "not clearly better"),  # better, within the interval
    (_score(0.89, 0.86, 0.92), _score(0.90), True, 0.0, False, "not clearly better"),
    (_score(0.20, 0.17, 0.23), _score(0.25), False, 0.0, True, "lies outside"),  # lower is better (log loss)
    (_score(0.24, 0.21, 0.27), _score(0.25), False, 0.0, False, "not clearly better"),
    (_score(0.93), _score(0.90), True, 0.02, True, "more than the margin 0.02"),  # a stated margin instead
    (_score(0.91, 0.80, 0.99), _score(0.90), True, 0.02, False, "not better by more than the margin 0.02"),
    (_score(0.99, 0.98, 1.0, OTHER_ROWS), _score(0.5), True, 0.0, False, "different test rows"),
    (_score(0.99, 0.98, 1.0), _score(0.5, rows=None), True, 0.0, False, "test rows are not recorded"),
    (_score(0.99), _score(0.5), True, 0.0, False, "no interval"),
])
def test_promotion_rule(new: RecordedScore, champion: RecordedScore | None, higher_is_better: bool, margin: float,
                        promote: bool, why: str) -> None:
    decided, reason = registry.should_promote(new, champion, higher_is_better, margin)
    assert decided is promote and why in reason


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


def test_the_champion_moves_only_on_a_clearly_better_score_on_the_same_rows(
        logged: tuple[Tracker, keras.Model, str, str]) -> None:
    tracker, _, _, uri = logged
    runs = {}
    for name, (accuracy, low, high, rows) in {"first": (0.80, 0.76, 0.84, ROWS), "close": (0.82, 0.78, 0.86, ROWS),
                                               "other split": (0.95, 0.93, 0.97, OTHER_ROWS),
                                               "better": (0.90, 0.87, 0.93, ROWS)}.items():
        run_id = tracker.start_run(name, {})
        tracker.log(run_id, metrics={"test_accuracy": accuracy, "test_accuracy_low": low, "test_accuracy_high": high},
                    tags={TEST_ROWS_TAG: rows})
        runs[name] = run_id
    said = [registry.register(tracker, uri, "tiny", runs[name], "test_accuracy", True)
            for name in ("first", "close", "other split", "better")]
    assert said[0] == "registered tiny version 1; it is now the champion: there was none."
    assert said[1] == ("registered tiny version 2 (test_accuracy 0.82); the champion stays version 1 "
                       "(test_accuracy 0.8): the champion's 0.8 lies within or beyond the new 95% interval "
                       "[0.78, 0.86]: not clearly better.")
    assert said[2] == ("registered tiny version 3 (test_accuracy 0.95); the champion stays version 1 "
                       f"(test_accuracy 0.8): they were scored on different test rows ({OTHER_ROWS} against "
                       f"{ROWS}), so the scores cannot be compared.")
    assert said[3] == ("registered tiny version 4; it is now the champion (was version 1, test_accuracy 0.8): "
                       "the champion's 0.8 lies outside the new 95% interval [0.87, 0.93].")
    champion = tracker.client.get_model_version_by_alias("tiny", registry.CHAMPION)
    assert str(champion.version) == "4" and champion.run_id == runs["better"]


def test_keras_input_example_trap_still_there(tmp_path: Path) -> None:
    """MLflow 3.17's Keras flavor fails when `save_model` is given `input_example` (it writes the example before
    it creates the model folder), so `registry.log_model` logs the example as a run artifact instead. When this
    test fails, MLflow fixed it: pass `input_example=` to `save_model` there."""
    with pytest.raises(FileNotFoundError):
        mlflow.keras.save_model(_tiny_model(), str(tmp_path / "model"), input_example=np.zeros((2, 3), "float32"))
