"""Typed configuration: dataclass schemas for every config group and their validation.

Hydra composes `conf/` on top of these schemas, so unknown keys and wrong types fail at
composition; `Config.__post_init__` then checks ranges and cross-field rules and raises
`ConfigError` naming the dotted key, the value and what is allowed. Nothing outside this
module and the CLI sees a `DictConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from searchlab.errors import ConfigError
from searchlab.space import HYPERPARAMETERS, Param, check_value

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"

DATASETS = ("digits", "csv", "synthetic", "mnist", "imdb")
TASKS = ("auto", "binary", "multiclass", "regression")
GENERATORS = ("moons", "circles", "classification", "regression")
FINE_KINDS = ("grid", "hyperband")
BACKENDS = ("local", "dask")


@dataclass
class DatasetConfig:
    name: str = "digits"
    task: str = "auto"
    test_size: float = 0.2
    # csv
    path: str | None = None
    target: str | None = None
    target_path: str | None = None
    # synthetic
    generator: str = "classification"
    n_samples: int = 1000
    n_features: int = 20
    n_classes: int = 2
    noise: float = 0.1
    # mnist / imdb
    num_words: int = 1000
    max_rows: int | None = None


@dataclass
class ModelConfig:
    """Default hyperparameters (used where a stage does not search them) and training settings."""

    units: int = 64
    layers: int = 2
    dropout: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    noise: float = 0.0
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    activation: str = "relu"
    batch_size: int = 64
    epochs: int = 200
    patience: int = 15
    reduce_lr: float = 0.3
    reduce_lr_patience: int = 5
    validation_fraction: float = 0.1
    steps_per_execution: int = 16
    scaling: str = "standard"

    def hyperparameters(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HYPERPARAMETERS}


@dataclass
class ParamSpec:
    """One entry of `search.coarse.space`: `{type: int|float, low, high, log}` or `{type: choice, values}`."""

    type: str = MISSING
    low: float | None = None
    high: float | None = None
    log: bool = False
    values: list[Any] | None = None


@dataclass
class CoarseConfig:
    n_iter: int = 20
    cv: int = 3
    scoring: str | None = None
    n_jobs: int = -1
    random_state: int | None = None
    # name -> ParamSpec fields; untyped here so `+search.coarse.space.NAME={...}` can add entries
    space: dict[str, Any] = field(default_factory=dict)


@dataclass
class FineConfig:
    kind: str = "grid"
    max_params: int = 3
    top_fraction: float = 0.25
    validation_fraction: float = 0.2
    executions_per_trial: int = 1
    points: int = 3
    max_epochs: int = 30
    factor: int = 3
    hyperband_iterations: int = 1
    # KerasTuner's distributed mode: 0 trains the trials one at a time from the search process;
    # N >= 1 makes the search process the chief (it holds the oracle) and trials run on workers.
    workers: int = 0
    oracle: str = "127.0.0.1:50051"  # host:port the chief's oracle serves gRPC on
    start_workers: bool = True  # start the `workers` processes here; false: start `searchlab-worker` yourself


@dataclass
class DaskConfig:
    address: str | None = None  # a running scheduler, e.g. tcp://host:8786; null: a local cluster
    n_workers: int = 2  # local cluster: single-threaded worker processes


@dataclass
class SearchConfig:
    backend: str = "local"  # coarse stage: joblib worker processes here, or a dask.distributed cluster
    dask: DaskConfig = field(default_factory=DaskConfig)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    fine: FineConfig = field(default_factory=FineConfig)


@dataclass
class TrackingConfig:
    uri: str | None = None
    experiment: str = "searchlab"
    log_model: bool = True
    register_as: str | None = None


@dataclass
class Config:
    seed: int = 0
    verbose: int = 1
    resume: str | None = None  # `last` or a search run id
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        _validate(self)

    def coarse_space(self) -> dict[str, Param]:
        """The coarse stage's search space as typed parameters."""
        return {name: _to_param(name, spec) for name, spec in self.search.coarse.space.items()}


def register_schemas() -> None:
    """Register the schemas so `conf/config.yaml` can build on `base_config`."""
    ConfigStore.instance().store(name="base_config", node=Config)


def from_dictconfig(cfg: DictConfig) -> Config:
    """Turn Hydra's composed config into a validated `Config`; raises `ConfigError`."""
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, Config)
    return config


def config_from_yaml(text: str) -> Config:
    """A validated `Config` from a resolved `config.yaml` (as logged with every search)."""
    merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(text))
    config = OmegaConf.to_object(merged)
    assert isinstance(config, Config)
    return config


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key} must be {allowed}, got {value!r}.")


def _check_range(key: str, value: float, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = True) -> None:
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        left = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        right = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        _fail(key, value, " and ".join(part for part in (left, right) if part))


def _validate(config: Config) -> None:
    _check_range("seed", config.seed, 0)
    _check_range("verbose", config.verbose, 0, 2, high_open=False)
    _validate_dataset(config.dataset)
    _validate_model(config.model)
    _validate_search(config.search)
    if not config.tracking.experiment.strip():
        _fail("tracking.experiment", config.tracking.experiment, "a non-empty name")


def _validate_dataset(d: DatasetConfig) -> None:
    if d.name not in DATASETS:
        _fail("dataset.name", d.name, "one of " + ", ".join(DATASETS))
    if d.task not in TASKS:
        _fail("dataset.task", d.task, "one of " + ", ".join(TASKS))
    _check_range("dataset.test_size", d.test_size, 0.0, 1.0, low_open=True)
    if d.name == "csv":
        if not d.path:
            _fail("dataset.path", d.path, "the path of a CSV file when dataset=csv")
        if not d.target and not d.target_path:
            _fail("dataset.target", d.target, "a column name (or set dataset.target_path) when dataset=csv")
    if d.name == "synthetic":
        if d.generator not in GENERATORS:
            _fail("dataset.generator", d.generator, "one of " + ", ".join(GENERATORS))
        _check_range("dataset.n_samples", d.n_samples, 20)
        _check_range("dataset.n_features", d.n_features, 2)
        _check_range("dataset.n_classes", d.n_classes, 2)
        _check_range("dataset.noise", d.noise, 0.0)
    _check_range("dataset.num_words", d.num_words, 10)
    if d.max_rows is not None:
        _check_range("dataset.max_rows", d.max_rows, 20)


def _validate_model(m: ModelConfig) -> None:
    for name, value in m.hyperparameters().items():
        problem = check_value(name, value)
        if problem:
            raise ConfigError(f"model.{name} {problem}.")
    _check_range("model.patience", m.patience, 1)
    _check_range("model.reduce_lr", m.reduce_lr, 0.0, 1.0, low_open=True, high_open=False)
    _check_range("model.reduce_lr_patience", m.reduce_lr_patience, 1)
    _check_range("model.validation_fraction", m.validation_fraction, 0.0, 0.5, low_open=True, high_open=False)
    _check_range("model.steps_per_execution", m.steps_per_execution, 1)


def _validate_search(s: SearchConfig) -> None:
    if s.backend not in BACKENDS:
        _fail("search.backend", s.backend, "one of " + ", ".join(BACKENDS))
    if s.dask.address is not None and not s.dask.address.strip():
        _fail("search.dask.address", s.dask.address, "a scheduler address such as tcp://host:8786, or null")
    _check_range("search.dask.n_workers", s.dask.n_workers, 1)
    _validate_coarse(s.coarse)
    _validate_fine(s.fine)


def _validate_coarse(c: CoarseConfig) -> None:
    _check_range("search.coarse.n_iter", c.n_iter, 1)
    _check_range("search.coarse.cv", c.cv, 2)
    if c.n_jobs == 0 or c.n_jobs < -1:
        _fail("search.coarse.n_jobs", c.n_jobs, "a positive number of processes, or -1 for one per core")
    if not c.space:
        _fail("search.coarse.space", {}, "a mapping of at least one hyperparameter to its range")
    for name, spec in c.space.items():
        _to_param(name, spec)


def _validate_fine(f: FineConfig) -> None:
    if f.kind not in FINE_KINDS:
        _fail("search.fine.kind", f.kind, "one of " + ", ".join(FINE_KINDS))
    _check_range("search.fine.max_params", f.max_params, 1)
    _check_range("search.fine.top_fraction", f.top_fraction, 0.0, 1.0, low_open=True, high_open=False)
    _check_range("search.fine.validation_fraction", f.validation_fraction, 0.0, 0.5, low_open=True, high_open=False)
    _check_range("search.fine.executions_per_trial", f.executions_per_trial, 1)
    _check_range("search.fine.points", f.points, 1)
    _check_range("search.fine.max_epochs", f.max_epochs, 2)
    _check_range("search.fine.factor", f.factor, 2)
    _check_range("search.fine.hyperband_iterations", f.hyperband_iterations, 1)
    _check_range("search.fine.workers", f.workers, 0)
    host, _, port = f.oracle.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        _fail("search.fine.oracle", f.oracle, "host:port with a port from 1 to 65535")


def _to_param(name: str, entry: Any) -> Param:
    key = f"search.coarse.space.{name}"
    if name not in HYPERPARAMETERS:
        _fail(key, name, "named after a hyperparameter: " + ", ".join(HYPERPARAMETERS))
    fields = ParamSpec.__dataclass_fields__
    if not isinstance(entry, dict) or "type" not in entry or set(entry) - set(fields):
        _fail(key, entry, "a mapping with `type` and only the keys " + ", ".join(fields))
    spec = ParamSpec(**entry)
    if spec.type == "choice":
        if not spec.values:
            _fail(f"{key}.values", spec.values, "a non-empty list of choices")
        assert spec.values is not None
        for value in spec.values:
            problem = check_value(name, value)
            if problem:
                raise ConfigError(f"{key}.values: {name} {problem}.")
        return Param(name, "choice", values=tuple(spec.values))
    if spec.type not in ("int", "float"):
        _fail(f"{key}.type", spec.type, "one of int, float, choice")
    if spec.low is None or spec.high is None:
        _fail(f"{key}.low/high", (spec.low, spec.high), "both set for a numeric range")
    assert spec.low is not None and spec.high is not None
    if spec.low > spec.high:
        _fail(f"{key}.low", spec.low, f"<= {key}.high ({spec.high:g})")
    if spec.log and spec.low <= 0:
        _fail(f"{key}.low", spec.low, "> 0 on a log scale (log: true)")
    for bound, value in (("low", spec.low), ("high", spec.high)):
        problem = check_value(name, value)
        if problem:
            raise ConfigError(f"{key}.{bound}: {name} {problem}.")
    if spec.type == "int" and (spec.low != int(spec.low) or spec.high != int(spec.high)):
        _fail(f"{key}.low/high", (spec.low, spec.high), "whole numbers for an int range")
    return Param(name, spec.type, float(spec.low), float(spec.high), spec.log)  # type: ignore[arg-type]
