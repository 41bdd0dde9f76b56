"""Typed configuration: dataclass schemas for every config group and their validation.

Hydra composes `conf/` on top of these schemas, so unknown keys, wrong types and choices outside an
enum fail at composition. `Config.__post_init__` then checks the numeric limits each field declares
(`_bounded(default, Interval(...))`) in one loop, plus the few rules that span fields, and raises
`ConfigError` naming the dotted key, the value and what is allowed. Nothing outside this module and
the CLI sees a `DictConfig`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Literal, NoReturn

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import MISSING, DictConfig, OmegaConf

from searchlab.errors import ConfigError
from searchlab.space import CHOICES, HYPERPARAMETERS, Param, allowed, check_value

#: The shipped Hydra configuration. `searchlab/conf` is a symlink to the top-level `conf/` in the
#: source tree; a built wheel holds the files themselves, so an installed package finds them here too.
CONF_DIR = Path(__file__).resolve().parent / "conf"


# Choices are enums so OmegaConf rejects a bad value at composition, listing the allowed ones. They are
# `StrEnum`s: members are `str`, compare equal to their value and format as it (`f"{kind}"` is "grid").
class DatasetName(StrEnum):
    digits = "digits"
    csv = "csv"
    synthetic = "synthetic"
    mnist = "mnist"
    imdb = "imdb"
    arrays = "arrays"  # X and y given to `searchlab.search` in Python


class Task(StrEnum):
    auto = "auto"
    binary = "binary"
    multiclass = "multiclass"
    regression = "regression"


class SyntheticGenerator(StrEnum):
    moons = "moons"
    circles = "circles"
    classification = "classification"
    regression = "regression"


class FineKind(StrEnum):
    grid = "grid"
    hyperband = "hyperband"


class ClassWeight(StrEnum):
    none = "none"
    balanced = "balanced"  # each class weighted by n_rows / (n_classes * its rows), on the rows a fit trains on


class Backend(StrEnum):
    local = "local"
    dask = "dask"


class ModelKind(StrEnum):
    mlp = "mlp"  # searchlab's own network (searchlab.model.build_model)
    custom = "custom"  # the user's function, named by `model.builder`


@dataclass(frozen=True)
class Interval:
    """The numbers between `low` and `high` (None: unbounded); `closed` names the ends that are included."""

    low: float | None = None
    high: float | None = None
    closed: Literal["left", "right", "both", "neither"] = "left"

    def __contains__(self, value: float) -> bool:
        low_in, high_in = self.closed in ("left", "both"), self.closed in ("right", "both")
        if self.low is not None and (value < self.low if low_in else value <= self.low):
            return False
        return self.high is None or (value <= self.high if high_in else value < self.high)

    def __str__(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>=' if self.closed in ('left', 'both') else '>'} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<=' if self.closed in ('right', 'both') else '<'} {self.high:g}")
        return " and ".join(parts)


def _bounded(default: Any, interval: Interval) -> Any:
    """A dataclass field whose value must lie in `interval` (None, where the field allows it, always passes)."""
    return field(default=default, metadata={"range": interval})


# --- data sets: one schema per option of the `dataset` group ---------------------------------------


@dataclass
class DatasetConfig:
    """What every data set has; each `conf/dataset/*.yaml` extends one subclass (its `/<name>_dataset_schema`)."""

    name: DatasetName = MISSING
    task: Task = Task.auto
    test_size: float = _bounded(0.2, Interval(0.0, 1.0, "neither"))


@dataclass
class DigitsConfig(DatasetConfig):
    name: DatasetName = DatasetName.digits


#: `dataset.sep` and `dataset.decimal` by name: a `;` or `,` on a command line needs quoting (shell, Hydra).
CHARACTERS = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|", "space": " ", "point": "."}


@dataclass
class CsvConfig(DatasetConfig):
    name: DatasetName = DatasetName.csv
    path: str | None = None
    target: str | None = None  # a column name; with header=false the column's position (0 first, -1 last)
    target_path: str | None = None  # a one-column target file beside a features-only `path`
    sep: str = "auto"  # auto (sniffed), a name of CHARACTERS or one character
    header: bool = True  # false: the first row is data; columns are then named col0, col1, ...
    decimal: str = "point"  # point or comma (e.g. 3,14), or the character
    drop: list[str] = field(default_factory=list)  # columns left out of the features, as `target` names them

    def separator(self) -> str | None:
        """The column separator, or None to sniff it."""
        return None if self.sep == "auto" else CHARACTERS.get(self.sep, self.sep)

    def decimal_mark(self) -> str:
        return CHARACTERS.get(self.decimal, self.decimal)


@dataclass
class SyntheticConfig(DatasetConfig):
    name: DatasetName = DatasetName.synthetic
    generator: SyntheticGenerator = SyntheticGenerator.classification
    n_samples: int = _bounded(1000, Interval(20))
    n_features: int = _bounded(20, Interval(2))
    n_classes: int = _bounded(2, Interval(2))
    noise: float = _bounded(0.1, Interval(0.0))


@dataclass
class MnistConfig(DatasetConfig):
    name: DatasetName = DatasetName.mnist
    max_rows: int | None = _bounded(None, Interval(20))


@dataclass
class ImdbConfig(DatasetConfig):
    name: DatasetName = DatasetName.imdb
    num_words: int = _bounded(1000, Interval(10))
    max_rows: int | None = _bounded(None, Interval(20))


@dataclass
class ArraysConfig(DatasetConfig):
    """The X and y a Python caller hands to `searchlab.search`: nothing to load, only the task and the split."""

    name: DatasetName = DatasetName.arrays


#: The schema of each data set; registered in Hydra's ConfigStore as `<name>_dataset_schema`, outside the `dataset`
#: group so that neither `dataset=<option>` nor `searchlab --help` offers it as a data set.
DATASET_SCHEMAS: dict[DatasetName, type[DatasetConfig]] = {
    DatasetName.digits: DigitsConfig,
    DatasetName.csv: CsvConfig,
    DatasetName.synthetic: SyntheticConfig,
    DatasetName.mnist: MnistConfig,
    DatasetName.imdb: ImdbConfig,
    DatasetName.arrays: ArraysConfig,
}


# --- model, search, tracking --------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Default hyperparameters (used where a stage does not search them) and training settings.

    The hyperparameters (`HYPERPARAMETERS`) are checked by `searchlab.space.check_value`. With `name: custom`,
    `builder` names the user's model-building function as `module:function` (see `searchlab.builders`).
    """

    name: ModelKind = ModelKind.mlp
    builder: str | None = None
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
    patience: int = _bounded(15, Interval(1))
    reduce_lr: float = _bounded(0.3, Interval(0.0, 1.0, "right"))
    reduce_lr_patience: int = _bounded(5, Interval(1))
    validation_fraction: float = _bounded(0.1, Interval(0.0, 0.5, "right"))
    steps_per_execution: int = _bounded(16, Interval(1))
    scaling: str = "standard"
    class_weight: ClassWeight = ClassWeight.none  # classification: weight the loss by inverse class frequency

    def hyperparameters(self) -> dict[str, Any]:
        """The default value of every hyperparameter, by name."""
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
    n_iter: int = _bounded(20, Interval(1))
    cv: int = _bounded(3, Interval(2))
    scoring: str | None = None
    n_jobs: int = -1
    random_state: int | None = None
    epochs: int | None = _bounded(None, Interval(1))  # cap on a sampled candidate's fit; null: model.epochs
    promote: float = _bounded(0.5, Interval(0.0, 1.0, "both"))  # share of the capped candidates run again in full
    # name -> ParamSpec fields; untyped here so `+search.coarse.space.NAME={...}` can add entries
    space: dict[str, Any] = field(default_factory=dict)
    # name -> values (or null: not compared): choices decided on the coarse winner by a paired comparison
    paired: dict[str, Any] = field(default_factory=dict)

    def epochs_per_fit(self, model_epochs: int) -> int:
        """The most epochs a sampled candidate's fit trains: the cap, never above `model.epochs`."""
        return min(self.epochs or model_epochs, model_epochs)

    def n_promoted(self, model_epochs: int) -> int:
        """How many of the sampled candidates are cross-validated again up to `model.epochs`: the `promote` share
        of `n_iter` (rounded up) when the cap trains less, else none."""
        return math.ceil(self.promote * self.n_iter) if self.epochs_per_fit(model_epochs) < model_epochs else 0


@dataclass
class FineConfig:
    kind: FineKind = FineKind.grid
    max_params: int = _bounded(3, Interval(1))
    top_fraction: float = _bounded(0.25, Interval(0.0, 1.0, "right"))
    validation_fraction: float = _bounded(0.2, Interval(0.0, 0.5, "right"))
    executions_per_trial: int = _bounded(1, Interval(1))
    points: int = _bounded(3, Interval(2))  # a range's two ends at least
    beyond_edges: bool = True  # grid: a best value on a narrowed edge gets a second round further out
    revisit: bool = True  # no trial reached the coarse winner's score: the fixed values tried one at a time
    confirm_top: int = _bounded(3, Interval(0))  # best trials re-scored on other splits before choosing; 0: off
    confirm_splits: int = _bounded(2, Interval(1))  # further validation splits each is re-scored on
    max_epochs: int = _bounded(30, Interval(2))
    # Train the trials in a worker process, replaced every 25 trials: it gives back the few MiB TensorFlow keeps per
    # trained model. false: in the search process, with no TensorFlow import to wait for (small searches).
    trial_worker: bool = True
    n_jobs: int = -1  # trials trained at once, each in its own worker process; -1: one per core
    factor: int = _bounded(3, Interval(2))
    hyperband_iterations: int = _bounded(1, Interval(1))
    # KerasTuner's distributed mode: 0 trains the trials one at a time from the search process;
    # N >= 1 makes the search process the chief (it holds the oracle) and trials run on workers.
    workers: int = _bounded(0, Interval(0))
    oracle: str = "127.0.0.1:50051"  # host:port the chief's oracle serves gRPC on
    start_workers: bool = True  # start the `workers` processes here; false: start `searchlab-worker` yourself


@dataclass
class DaskConfig:
    address: str | None = None  # a running scheduler, e.g. tcp://host:8786; null: a local cluster
    n_workers: int = _bounded(2, Interval(1))  # local cluster: single-threaded worker processes


@dataclass
class SearchConfig:
    backend: Backend = Backend.local  # coarse stage: joblib worker processes here, or a dask.distributed cluster
    dask: DaskConfig = field(default_factory=DaskConfig)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    fine: FineConfig = field(default_factory=FineConfig)


@dataclass
class FinalConfig:
    reference: bool = True  # also score gradient-boosted trees (scikit-learn defaults) on the same rows
    resamples: int = _bounded(1000, Interval(100))  # bootstrap resamples of the test rows for every interval


@dataclass
class TrackingConfig:
    uri: str | None = None
    experiment: str = "searchlab"
    log_model: bool = True
    register_as: str | None = None
    # promotion: better by more than this (in the metric's units); 0: better beyond the new score's interval
    promote_margin: float = _bounded(0.0, Interval(0.0))


@dataclass
class Config:
    seed: int = _bounded(0, Interval(0))
    verbose: int = _bounded(1, Interval(0, 2, "both"))
    resume: str | None = None  # `last` or a search run id
    # Typed as the base so any data set's schema fits; composition (and `config_from_yaml`) puts the
    # chosen data set's subclass here. A subclass as default would refuse to be merged with another one.
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        _validate(self)
        _check_rules(self)

    def coarse_space(self) -> dict[str, Param]:
        """The coarse stage's search space as typed parameters."""
        own = self.model.name is ModelKind.custom
        return {name: _to_param(name, spec, own) for name, spec in self.search.coarse.space.items()}

    def paired_choices(self) -> dict[str, Param]:
        """The choices the coarse stage decides by a paired comparison on its winner, in order (those not null)."""
        return {name: Param(name, "choice", values=tuple(values))
                for name, values in self.search.coarse.paired.items() if values is not None}


# --- building a Config ----------------------------------------------------------------------------


def register_schemas() -> None:
    """Register the schemas in Hydra's ConfigStore: `base_config` and `<name>_dataset_schema` (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    for name, schema in DATASET_SCHEMAS.items():
        store.store(name=f"{name.value}_dataset_schema", node=schema)


def compose(*overrides: str) -> Config:
    """Compose the shipped `conf/` with Hydra command-line overrides and return the validated `Config`.

    Works in-process any number of times (tests, benchmarks, notebooks) and leaves Hydra's global state as
    it found it, so a later `@hydra.main` (or a call from inside one) is unaffected.

    Raises:
        hydra.errors.HydraException: unknown group options or keys, wrong types, choices outside an enum.
        ConfigError: a value out of its range or a broken cross-field rule.
    """
    register_schemas()
    global_hydra = GlobalHydra.instance()
    outer = global_hydra.hydra  # set when called from inside a running @hydra.main job
    global_hydra.clear()
    try:
        with hydra.initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra.compose(config_name="config", overrides=list(overrides))
    finally:
        # initialize_config_dir restores a copy of the (cleared) singleton; put the outer Hydra back on it
        GlobalHydra.instance().hydra = outer
    return from_dictconfig(cfg)


def from_dictconfig(cfg: DictConfig) -> Config:
    """Turn Hydra's composed config into a validated `Config`; raises `ConfigError`."""
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, Config)
    _reject_added_keys(config)
    return config


def config_from_yaml(text: str) -> Config:
    """A validated `Config` from a resolved `config.yaml` (as logged with every search).

    The data set's schema is chosen by `dataset.name`. Keys of other data sets' schemas are dropped: logs
    written before each data set had its own schema carried every loader's fields.
    """
    loaded = OmegaConf.create(text)
    assert isinstance(loaded, DictConfig)
    name = OmegaConf.select(loaded, "dataset.name")
    try:
        schema = DATASET_SCHEMAS[DatasetName(name)]
    except ValueError:
        _fail("dataset.name", name, "one of " + ", ".join(DATASET_SCHEMAS))
    own = {f.name for f in dataclasses.fields(schema)}
    others = {f.name for s in DATASET_SCHEMAS.values() for f in dataclasses.fields(s)} - own
    for key in others & set(loaded.dataset):
        del loaded.dataset[key]
    base = OmegaConf.structured(Config)
    base.dataset = OmegaConf.structured(schema)
    config = OmegaConf.to_object(OmegaConf.merge(base, loaded))
    assert isinstance(config, Config)
    return config


def shipped_space_entries() -> dict[str, list[Any]]:
    """Every range searchlab's own files declare for each hyperparameter (`search/coarse/*.yaml` and the
    experiment presets), as plain values comparable with `search.coarse.space` entries."""
    found: dict[str, list[Any]] = {}
    files = [*(CONF_DIR / "search" / "coarse").glob("*.yaml"), *(CONF_DIR / "experiment").glob("*.yaml")]
    for path in sorted(files):
        loaded = OmegaConf.load(path)
        key = "space" if path.parent.name == "coarse" else "search.coarse.space"
        space = OmegaConf.select(loaded, key)
        for name, entry in (OmegaConf.to_container(space) if space is not None else {}).items():  # type: ignore[union-attr]
            found.setdefault(str(name), []).append(entry)
    return found


# --- validation -----------------------------------------------------------------------------------


def _fail(key: str, value: Any, allowed: str) -> NoReturn:
    shown = value.value if isinstance(value, Enum) else value  # 'csv', not <DatasetName.csv: 'csv'>
    raise ConfigError(f"{key} must be {allowed}, got {shown!r}.")


def _validate(obj: Any, prefix: str = "") -> None:
    """Check every field's declared `Interval`, depth first through the nested schemas."""
    for spec in dataclasses.fields(obj):
        value = getattr(obj, spec.name)
        key = prefix + spec.name
        if dataclasses.is_dataclass(value):
            _validate(value, key + ".")
        elif value is not None and "range" in spec.metadata and value not in spec.metadata["range"]:
            _fail(key, value, str(spec.metadata["range"]))


def _reject_added_keys(obj: Any, prefix: str = "") -> None:
    """Refuse keys added with `+key=value` that no schema field holds (OmegaConf would set them as stray attributes)."""
    own = [spec.name for spec in dataclasses.fields(obj)]
    for extra in sorted(set(vars(obj)) - set(own)):
        where = prefix.rstrip(".") or "the config"
        _fail(prefix + extra, getattr(obj, extra), f"removed: {where} has no such key (its keys: {', '.join(own)})")
    for name in own:
        if dataclasses.is_dataclass(getattr(obj, name)):
            _reject_added_keys(getattr(obj, name), f"{prefix}{name}.")


def _check_rules(config: Config) -> None:
    """The rules a single field's range cannot express."""
    _check_dataset(config.dataset)
    _check_builder(config.model)
    for name, value in config.model.hyperparameters().items():
        problem = check_value(name, value)
        if problem:
            raise ConfigError(f"model.{name} {problem}.")
    if not config.tracking.experiment.strip():
        _fail("tracking.experiment", config.tracking.experiment, "a non-empty name")
    search = config.search
    if search.dask.address is not None and not search.dask.address.strip():
        _fail("search.dask.address", search.dask.address, "a scheduler address such as tcp://host:8786, or null")
    for stage in ("coarse", "fine"):
        n_jobs = getattr(search, stage).n_jobs
        if n_jobs == 0 or n_jobs < -1:
            _fail(f"search.{stage}.n_jobs", n_jobs, "a positive number of processes, or -1 for one per core")
    if not search.coarse.space:
        _fail("search.coarse.space", {}, "a mapping of at least one hyperparameter to its range")
    for name, spec in search.coarse.space.items():
        _to_param(name, spec, config.model.name is ModelKind.custom)
    for name, values in search.coarse.paired.items():
        _check_paired(name, values, search.coarse.space)
    host, _, port = search.fine.oracle.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        _fail("search.fine.oracle", search.fine.oracle, "host:port with a port from 1 to 65535")


_BUILDER_CONTEXT = ("n_features", "n_outputs", "task")  # what a custom builder is called with besides hyperparameters
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def _check_builder(model: ModelConfig) -> None:
    """`model.builder` is set with model=custom only, and reads `module:function` (importing it is
    `searchlab.builders.load_builder`'s job, when the search starts)."""
    if model.name is ModelKind.mlp and model.builder is not None:
        _fail("model.builder", model.builder, "null with model=mlp; choose model=custom to use your own builder")
    if model.name is ModelKind.custom and not (model.builder and _IMPORT_PATH.fullmatch(model.builder)):
        _fail("model.builder", model.builder, "the import path of your model-building function, module:function "
              "(e.g. model.builder=examples.residual_mlp:build_residual_mlp), with model=custom")


def _check_dataset(d: DatasetConfig) -> None:
    expected = next((name for name, schema in DATASET_SCHEMAS.items() if type(d) is schema), None)
    if expected is None:
        _fail("dataset", type(d).__name__, "one of the data sets: " + ", ".join(DATASET_SCHEMAS))
    if d.name != expected:
        _fail("dataset.name", d.name, f"{expected} with dataset={expected} (pick a data set with dataset=<name>)")
    if isinstance(d, CsvConfig):
        if not d.path:
            _fail("dataset.path", d.path, "the path of a CSV file when dataset=csv")
        if not d.target and not d.target_path:
            _fail("dataset.target", d.target, "a column name (or set dataset.target_path) when dataset=csv")
        names = ", ".join(name for name in CHARACTERS if name != "point")
        if d.sep != "auto" and d.sep not in CHARACTERS and len(d.sep) != 1:
            _fail("dataset.sep", d.sep, f"auto (sniffed), one of {names}, or a single character")
        if d.decimal_mark() not in (".", ","):
            _fail("dataset.decimal", d.decimal, "point (3.14) or comma (3,14)")
        if not d.header:
            named = [("dataset.target", d.target), *((f"dataset.drop[{i}]", v) for i, v in enumerate(d.drop))]
            for key, value in named:
                if value is not None and not _is_position(value):
                    _fail(key, value, "a column position (0 first, -1 last) with dataset.header=false")


def _check_paired(name: str, values: Any, space: dict[str, Any]) -> None:
    """A `search.coarse.paired` entry: a choice hyperparameter with two or more of its values, or null (off)."""
    key = f"search.coarse.paired.{name}"
    if name not in CHOICES:
        _fail(key, name, "named after a choice hyperparameter: " + ", ".join(CHOICES))
    if values is None:
        return
    if not isinstance(values, list) or len(set(map(str, values))) != len(values) or len(values) < 2:
        _fail(key, values, f"a list of two or more different values ({allowed(name)}), or null to not compare them")
    for value in values:
        problem = check_value(name, value)
        if problem:
            raise ConfigError(f"{key}: {name} {problem}.")
    if name in space:
        raise ConfigError(f"{key}: {name} is both sampled (search.coarse.space.{name}) and compared on the coarse "
                          f"winner (search.coarse.paired.{name}); drop one: '~search.coarse.space.{name}' or "
                          f"'search.coarse.paired.{name}=null'.")


def _is_position(value: str) -> bool:
    return value.removeprefix("-").isdigit()


def _to_param(name: str, entry: Any, own_names: bool = False) -> Param:
    """The `Param` of coarse-space entry `name`. With `own_names` (model=custom) a name outside `HYPERPARAMETERS` is
    a keyword of the user's builder: its range is checked for shape only (the builder knows its limits)."""
    key = f"search.coarse.space.{name}"
    if name not in HYPERPARAMETERS and not (own_names and name.isidentifier() and name not in _BUILDER_CONTEXT):
        also = "; or, with model=custom, a keyword of your builder" if not own_names else \
            " or a keyword of your builder other than " + ", ".join(_BUILDER_CONTEXT)
        _fail(key, name, "named after a hyperparameter: " + ", ".join(HYPERPARAMETERS) + also)
    if name == "epochs":  # early stopping picks each fit's epochs, the fine stages theirs (max_epochs, Hyperband)
        raise ConfigError(f"{key}: epochs is not searched: model.epochs caps every fit and early stopping "
                          "(model.patience) ends it; set those instead.")
    fields = ParamSpec.__dataclass_fields__
    if not isinstance(entry, dict) or "type" not in entry or set(entry) - set(fields):
        _fail(key, entry, "a mapping with `type` and only the keys " + ", ".join(fields))
    spec = ParamSpec(**entry)
    checked = name in HYPERPARAMETERS
    if spec.type == "choice":
        if not spec.values:
            _fail(f"{key}.values", spec.values, "a non-empty list of choices")
        assert spec.values is not None
        for value in spec.values if checked else ():
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
    for bound, value in (("low", spec.low), ("high", spec.high)) if checked else ():
        problem = check_value(name, value)
        if problem:
            raise ConfigError(f"{key}.{bound}: {name} {problem}.")
    if spec.type == "int" and (spec.low != int(spec.low) or spec.high != int(spec.high)):
        _fail(f"{key}.low/high", (spec.low, spec.high), "whole numbers for an int range")
    return Param(name, spec.type, float(spec.low), float(spec.high), spec.log)  # type: ignore[arg-type]
