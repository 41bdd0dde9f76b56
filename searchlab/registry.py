"""The searched model in MLflow: logged beside its search run, registered, and promoted by a pure rule that
compares like with like (the same test rows, better beyond the interval or a margin).

Models are written through the tracker's `MlflowClient` (a logged model, its files, its link to the run):
MLflow's `log_model` helpers would read the global tracking URI and the fluent active run instead.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from searchlab.records import TEST_ROWS_TAG
from searchlab.tracking import Tracker

MODEL_NAME = "best_model"
CHAMPION = "champion"  # the registry alias of the best version so far
INPUT_EXAMPLE = "best_model_input_example.json"


def log_model(tracker: Tracker, run_id: str, model: Any, example: np.ndarray) -> str:
    """Log a Keras model as `best_model` of run `run_id` (Keras flavor, with signature); returns its model URI
    (`models:/<id>`).

    The model is logged without its training state (optimizer, loss, metrics): the served copy needs none, and
    searchlab's own metrics (regression's RMSE in target units) would not load where searchlab is not imported,
    such as MLflow's model server.

    The input example goes beside it as a run artifact: MLflow 3.17's Keras flavor fails when `save_model` is
    given `input_example` (it writes the example before it creates the model folder). The pip requirements
    are given, not inferred: MLflow's inference loads the model in a subprocess that imports TensorFlow, most
    of a model log's time, to find the same packages.
    """
    import mlflow.keras

    client = tracker.client
    model = _without_training_state(model)
    example = example.astype("float32")
    signature = infer_signature(example, np.asarray(model.predict(example, verbose=0)))
    logged = client.create_logged_model(tracker.experiment_id, name=MODEL_NAME, source_run_id=run_id)
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / MODEL_NAME
            mlflow.keras.save_model(model, str(path), signature=signature, pip_requirements=_requirements())
            client.log_model_artifacts(logged.model_id, str(path))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    client.log_dict(run_id, {"inputs": example.tolist()}, INPUT_EXAMPLE)
    return f"models:/{logged.model_id}"


def _without_training_state(model: Any) -> Any:
    """An uncompiled copy of `model` (its submodels uncompiled too) with the same weights."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def newest_model(uri: str) -> str | None:
    """The `models:/<id>` URI of the newest finished `best_model` in the store at `uri` (any experiment), or None."""
    client = MlflowClient(tracking_uri=uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    if not experiments:
        return None
    found = client.search_logged_models(experiments, filter_string=f"name = '{MODEL_NAME}'",
                                        order_by=[{"field_name": "creation_time", "ascending": False}])
    ready = [model for model in found if model.status == LoggedModelStatus.READY]
    return f"models:/{ready[0].model_id}" if ready else None


@dataclass(frozen=True)
class RecordedScore:
    """A search run's test score on the searched metric, as its run records it: the value, its interval, and
    which test rows it was measured on (`searchlab.data.fingerprint_rows`)."""

    value: float | None
    low: float | None = None
    high: float | None = None
    test_rows: str | None = None


def should_promote(new: RecordedScore, champion: RecordedScore | None, higher_is_better: bool,
                   margin: float = 0.0) -> tuple[bool, str]:
    """Whether a new version takes the champion alias, and why (a clause for a sentence).

    Only like with like: both scored on the same test rows. Then the new score must be better by more than
    `margin` (in the metric's units) or, with no margin, better beyond its own interval (the champion's score
    outside it, on the worse side). With no champion, or a champion without a score, the new version is promoted;
    a new version without a score never is.
    """
    if champion is None:
        return True, "there was none"
    if champion.value is None:
        return True, "the champion has no test score"
    if new.value is None:
        return False, "the new version has no test score"
    if champion.test_rows is None:
        return False, "the champion's test rows are not recorded, so the scores cannot be compared"
    if new.test_rows != champion.test_rows:
        return False, (f"they were scored on different test rows ({new.test_rows} against {champion.test_rows}), "
                       "so the scores cannot be compared")
    gain = (new.value - champion.value) * (1 if higher_is_better else -1)
    if margin > 0:
        if gain > margin:
            return True, f"better by {gain:.4g}, more than the margin {margin:g}"
        return False, f"not better by more than the margin {margin:g} ({gain:+.4g})"
    if new.low is None or new.high is None:
        return False, "the new score has no interval to compare with"
    beyond = new.low > champion.value if higher_is_better else new.high < champion.value
    interval = f"[{new.low:.4g}, {new.high:.4g}]"
    if beyond:
        return True, f"the champion's {champion.value:.4g} lies outside the new 95% interval {interval}"
    return False, (f"the champion's {champion.value:.4g} lies within or beyond the new 95% interval {interval}: "
                   "not clearly better")


def read_score(tracker: Tracker, run_id: str, metric: str) -> RecordedScore:
    """Run `run_id`'s score on `metric` (e.g. test_accuracy), its interval and test rows, as `_record_result`
    logged them."""
    run = tracker.client.get_run(run_id)
    metrics = run.data.metrics
    return RecordedScore(metrics.get(metric), metrics.get(f"{metric}_low"), metrics.get(f"{metric}_high"),
                     run.data.tags.get(TEST_ROWS_TAG))


def register(tracker: Tracker, model_uri: str, name: str, run_id: str, metric: str, higher_is_better: bool,
             margin: float = 0.0) -> str:
    """Register `model_uri` as a new version of `name`; move alias `champion` to it when `should_promote` says so
    on `metric` (a search-run metric such as test_accuracy). Returns a sentence saying what happened and why."""
    client = tracker.client
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    model_id = model_uri.removeprefix("models:/")
    # The logged model's own location, not its `models:/` URI: MLflow's SQL registry would resolve that URI
    # through the global tracking URI, not this store.
    location = client.get_logged_model(model_id).artifact_location
    version_ = client.create_model_version(name, location, run_id=run_id, tags={"searchlab.run_id": run_id},
                                           model_id=model_id).version
    new = read_score(tracker, run_id, metric)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    old = read_score(tracker, champion.run_id, metric) if champion and champion.run_id else None
    promote, why = should_promote(new, old, higher_is_better, margin)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version_)
        before = "" if champion is None else f" (was version {champion.version}, {metric} {_shown(old)})"
        return f"registered {name} version {version_}; it is now the {CHAMPION}{before}: {why}."
    assert champion is not None  # `should_promote` promotes when there is none
    return (f"registered {name} version {version_} ({metric} {_shown(new)}); the {CHAMPION} stays version "
            f"{champion.version} ({metric} {_shown(old)}): {why}.")


def _shown(score: RecordedScore | None) -> str:
    return "none" if score is None or score.value is None else f"{score.value:.4g}"


def _requirements() -> list[str]:
    """What a logged model needs, pinned to the versions that trained it (MLflow adds itself)."""
    backends = []
    for name in ("tensorflow-cpu", "tensorflow"):  # whichever distribution provides TensorFlow here
        try:
            backends.append(f"{name}=={version(name)}")
            break
        except PackageNotFoundError:
            continue
    return [f"keras=={version('keras')}", f"numpy=={version('numpy')}", *backends]
