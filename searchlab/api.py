"""searchlab from Python (a notebook, a script): `search` runs the command line's pipeline and returns what it found.

    import searchlab
    found = searchlab.search(X, y, ["experiment=smoke"])
    found.best_params, found.test_metrics, found.model.predict(X_new)

TensorFlow loads when `search` is first called, not when `searchlab` is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from searchlab.config import ArraysConfig, compose
from searchlab.console import quiet_libraries, run_link
from searchlab.data import dataset_from_arrays, load_dataset
from searchlab.errors import ConfigError, SearchInterrupted

if TYPE_CHECKING:
    from searchlab.pipeline import SearchResult


@dataclass(frozen=True)
class Found:
    """What a search found: the chosen values, the final model and its test scores, and where MLflow keeps it."""

    best_params: dict[str, Any]  # every hyperparameter the final model was refit with
    test_metrics: dict[str, float]  # on the held-out test split
    run_id: str  # the search run in MLflow
    url: str  # its page in the MLflow UI (a local store: once `make ui` or `mlflow ui` serves it)
    model_uri: str | None  # the logged `best_model` (models:/<id>); None with tracking.log_model=false
    model: Any = field(repr=False)  # keras.Model on raw features: class probabilities, or values in target units
    summary: str = field(repr=False)  # the Markdown summary the command line prints
    result: SearchResult = field(repr=False)  # every stage's result (`searchlab.pipeline.SearchResult`)

    def _repr_markdown_(self) -> str:
        """Jupyter shows the summary."""
        return f"{self.summary}\n\nMLflow: {self.url}"


def search(X: Any = None, y: Any = None, overrides: Sequence[str] = ()) -> Found:
    """Run a whole search, as the `searchlab` command does, and return what it found.

    Args:
        X, y: the data: features (a 2-D NumPy array or a pandas DataFrame) and targets (1-D array or Series),
            split and checked like a CSV file (`dataset.task`, `dataset.test_size` and `seed` apply). Omitted:
            the configured data set (`dataset=...` in `overrides`; digits by default).
        overrides: the command line's Hydra overrides, e.g. `["experiment=smoke", "search/fine=hyperband"]`;
            `resume=<run id>` continues an interrupted search (pass the same X and y again).

    Returns:
        `Found`: `best_params`, `model`, `test_metrics`, `run_id`, `url`, and the whole `result`.

    Raises:
        ConfigError, DataError: a mistake in `overrides` or the data, before any MLflow run is opened.
        StageFailedError: every trial of a stage failed.
        KeyboardInterrupt: Ctrl-C (a notebook's interrupt): the search's open runs were ended KILLED first;
            the message says how to resume. The interpreter stays usable.
    """
    if isinstance(overrides, str):
        raise TypeError(f"overrides must be a list of strings, e.g. [{overrides!r}], not a string.")
    given = X is not None or y is not None
    if given and (X is None or y is None):
        raise ConfigError("searchlab.search: pass both X and y, or neither (to search the configured data set).")
    if given and any(o.lstrip("+~").partition("=")[0] == "dataset" for o in overrides):
        raise ConfigError("searchlab.search: dataset=... chooses a data set to load, but X and y were given; "
                          "drop one (dataset.task and dataset.test_size still apply to X and y).")
    config = compose(*overrides, *(["dataset=arrays"] if given else []))
    from searchlab import pipeline  # TensorFlow loads here, once the configuration is known good
    from searchlab.model import determinism_as_found
    from searchlab.records import resumed_config

    try:
        with quiet_libraries(config.verbose), determinism_as_found():
            if config.resume:
                config = resumed_config(config)
            if given and not isinstance(config.dataset, ArraysConfig):
                raise ConfigError(f"searchlab.search: search {config.resume} ran on dataset={config.dataset.name}; "
                                  "resume it without X and y.")
            data = dataset_from_arrays(X, y, config.dataset, config.seed) if given \
                else load_dataset(config.dataset, config.seed)
            result = pipeline.run(config, data=data)
    except SearchInterrupted as exc:
        again = "X, y, " if given else ""
        raise KeyboardInterrupt(f"searchlab: search interrupted; its open MLflow runs were ended as KILLED. "
                                f"Resume it with searchlab.search({again}overrides=[..., 'resume={exc.run_id}']).") \
            from None
    return Found(best_params=dict(result.final.params), test_metrics=dict(result.final.test_metrics),
                 run_id=result.run_id, url=run_link(result.tracking_uri, result.experiment_id, result.run_id),
                 model_uri=result.model_uri, model=result.final.model, summary=result.summary(), result=result)
