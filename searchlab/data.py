"""Data sets: every loader ends in one `Dataset` with a held-out test split.

The test split is made here, once, and no search stage sees it. Features are
returned unscaled: scaling is fitted inside each fit on its training rows only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn import datasets as skd
from sklearn.model_selection import train_test_split

from searchlab.config import (
    ArraysConfig,
    CsvConfig,
    DatasetConfig,
    DigitsConfig,
    ImdbConfig,
    MnistConfig,
    SyntheticConfig,
    SyntheticGenerator,
    Task,
)
from searchlab.csv_table import column, read_table, refuse_featureless, refuse_non_numeric
from searchlab.errors import DataError

_MAX_CLASSES = 50  # an integer target with more distinct values than this is taken as regression


@dataclass(frozen=True)
class Dataset:
    """Train and test splits of one data set, its task and names."""

    name: str
    task: str  # binary | multiclass | regression
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...] = ()  # label of class i; empty for regression
    reading: str = ""  # how a file was read, e.g. "sep ';' (sniffed), no header row"
    test_rows: str = ""  # which rows were held out: `fingerprint_rows`
    notes: tuple[str, ...] = ()  # what the user may want to know about how the data was read

    @property
    def is_classification(self) -> bool:
        return self.task != "regression"

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    def describe(self) -> str:
        kind = f"{self.task}, {self.n_classes} classes" if self.is_classification else self.task
        return (f"{self.name}: {len(self.y_train)} train / {len(self.y_test)} test rows, "
                f"{self.n_features} features ({kind})" + (f"; read with {self.reading}" if self.reading else ""))


def load_dataset(cfg: DatasetConfig, seed: int) -> Dataset:
    """Load the configured data set and split off its test rows (stratified for classification).

    Raises:
        DataError: the data is missing, malformed or too small; the message says what and where.
    """
    X, y, feature_names, name, reading = _load(cfg, seed)
    return _split(X, y, feature_names, name, cfg, seed, reading)


def dataset_from_arrays(X: Any, y: Any, cfg: DatasetConfig, seed: int) -> Dataset:
    """A `Dataset` from features `X` (a 2-D array or a pandas DataFrame, whose column names it keeps) and
    targets `y` (a 1-D array, list or pandas Series), split and checked as `load_dataset` splits a loaded data
    set: `cfg.task` (auto: inferred) and `cfg.test_size`, by `seed`.

    Raises:
        DataError: the data is malformed or too small; the message says what.
    """
    if isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns]
    else:
        X = np.asarray(X)
        if X.ndim != 2:
            raise DataError(f"X must be a 2-D table of rows and features, got an array of shape {X.shape}.")
        names = [f"x{i}" for i in range(X.shape[1])]
    y = y.to_numpy() if isinstance(y, pd.Series | pd.DataFrame) else np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise DataError(f"y must hold one target per row (1-D), got an array of shape {y.shape}.")
    return _split(X, y, names, cfg.name.value, cfg, seed)


def _split(X: np.ndarray | pd.DataFrame, y: np.ndarray, feature_names: list[str], name: str,
           cfg: DatasetConfig, seed: int, reading: str = "") -> Dataset:
    """Check features and target, infer the task, and split off the test rows (stratified for classification).
    `reading`: how a file was read, for the data summary."""
    X = _as_features(X, feature_names)
    if len(X) != len(y):
        raise DataError(f"{name}: {len(X)} feature rows but {len(y)} target values; they must match.")
    task = _infer_task(y) if cfg.task is Task.auto else cfg.task.value
    # the built-in data sets' integer targets are classes (digits); a user's table may hold counts or ratings
    inferred = cfg.task is Task.auto and task == "multiclass" and isinstance(cfg, CsvConfig | ArraysConfig)
    notes = tuple(note for note in [_count_note(y, name) if inferred else ""] if note)
    class_names: tuple[str, ...] = ()
    if task == "regression":
        y = _numeric_target(y, name)
    else:
        y, class_names = _encode_labels(y, name, task)
    stratify = y if task != "regression" else None
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=cfg.test_size, random_state=seed, shuffle=True, stratify=stratify
        )
    except ValueError as exc:
        raise DataError(f"{name}: cannot split {len(y)} rows with dataset.test_size={cfg.test_size}: {exc}") from None
    return Dataset(name, task, X_train, y_train, X_test, y_test, tuple(feature_names), class_names, reading,
                   fingerprint_rows(name, seed, cfg.test_size, X_test, y_test), notes)


def fingerprint_rows(name: str, seed: int, test_size: float, X_test: np.ndarray, y_test: np.ndarray) -> str:
    """Names the test rows of a split: the data set, the split's seed and size, and a hash of the rows' features
    and targets. Two searches scored on the same rows have the same fingerprint; promotion compares only those."""
    digest = hashlib.sha256()
    for array in (X_test, y_test):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return f"{name} seed={seed} test_size={test_size:g} rows={len(y_test)} sha256={digest.hexdigest()[:16]}"


def check_cv_feasible(data: Dataset, cv: int) -> None:
    """Raise `DataError` unless every CV fold can hold every class (and enough rows)."""
    if len(data.y_train) < 2 * cv:
        raise DataError(f"{data.name}: {len(data.y_train)} training rows are too few for "
                        f"search.coarse.cv={cv} folds; need at least {2 * cv}.")
    if data.is_classification:
        counts = np.bincount(data.y_train, minlength=data.n_classes)
        small = [f"{data.class_names[i]!r} ({c})" for i, c in enumerate(counts) if c < cv]
        if small:
            raise DataError(f"{data.name}: classes with fewer training rows than search.coarse.cv={cv} "
                            f"folds: {', '.join(small)}. Lower search.coarse.cv or add data.")


class Loaded(NamedTuple):
    X: np.ndarray | pd.DataFrame
    y: np.ndarray
    feature_names: list[str]
    name: str
    reading: str = ""


def _load(cfg: DatasetConfig, seed: int) -> Loaded:
    # dispatch on the schema's type: each loader sees only its own data set's fields, and mypy checks them
    match cfg:
        case DigitsConfig():
            return _load_digits()
        case CsvConfig():
            return _load_csv(cfg)
        case SyntheticConfig():
            return _load_synthetic(cfg, seed)
        case MnistConfig():
            return _load_mnist(cfg, seed)
        case ImdbConfig():
            return _load_imdb(cfg, seed)
        case ArraysConfig():
            raise DataError("dataset=arrays is the data a Python caller passes to searchlab.search(X, y); there is "
                            "nothing to load here. Pass X and y, or choose a data set (dataset=digits, csv, ...).")
    raise TypeError(f"no loader for {type(cfg).__name__}")  # a schema added to config.py without a loader


def _load_digits() -> Loaded:
    bunch = skd.load_digits()
    return Loaded(bunch.data, bunch.target, list(bunch.feature_names), "digits")


def _load_synthetic(cfg: SyntheticConfig, seed: int) -> Loaded:
    n, rng = cfg.n_samples, seed
    if cfg.generator is SyntheticGenerator.moons:
        X, y = skd.make_moons(n, noise=cfg.noise, random_state=rng)
    elif cfg.generator is SyntheticGenerator.circles:
        X, y = skd.make_circles(n, noise=cfg.noise, factor=0.5, random_state=rng)
    elif cfg.generator is SyntheticGenerator.regression:
        X, y = skd.make_regression(n, cfg.n_features, n_informative=max(2, cfg.n_features // 2),
                                   noise=cfg.noise * 100, random_state=rng)
    else:
        X, y = skd.make_classification(n, cfg.n_features, n_informative=max(2, cfg.n_features // 2),
                                       n_classes=cfg.n_classes, flip_y=cfg.noise / 10, random_state=rng)
    return Loaded(X, y, [f"x{i}" for i in range(X.shape[1])], f"synthetic-{cfg.generator.value}")


def _load_csv(cfg: CsvConfig) -> Loaded:
    assert cfg.path is not None  # Config's rules require it
    path = Path(cfg.path).expanduser().resolve()
    table = read_table(path, "dataset.path", cfg)
    reading = table.reading
    if cfg.target_path:
        target_path = Path(cfg.target_path).expanduser().resolve()
        targets = read_table(target_path, "dataset.target_path", cfg)
        name = column(targets, cfg.target, "dataset.target", target_path, cfg.header) if cfg.target \
            else str(targets.frame.columns[0])
        if len(targets.frame) != len(table.frame):
            raise DataError(f"{path} has {len(table.frame)} rows but {target_path} has {len(targets.frame)}; "
                            "they must match.")
        y = targets.frame[name].to_numpy()
        features = table.frame
        if targets.reading != table.reading:
            reading = f"{table.reading}; target file {targets.reading}"
    else:
        assert cfg.target is not None  # Config's rules require a target or a target file
        name = column(table, cfg.target, "dataset.target", path, cfg.header)
        y = table.frame[name].to_numpy()
        features = table.frame.drop(columns=[name])
    dropped = [column(table, c, f"dataset.drop[{i}]", path, cfg.header) for i, c in enumerate(cfg.drop)]
    features = features.drop(columns=[c for c in dropped if c in features.columns])
    refuse_featureless(table, features, path)
    refuse_non_numeric(features, cfg.header)
    return Loaded(features, y, [str(c) for c in features.columns], path.stem, reading)


def _load_mnist(cfg: MnistConfig, seed: int) -> Loaded:
    import keras

    (x_a, y_a), (x_b, y_b) = keras.datasets.mnist.load_data()
    keep = _kept_rows(len(y_a) + len(y_b), cfg.max_rows, seed)
    X = np.concatenate([x_a, x_b])[keep].reshape(-1, 28 * 28).astype("float32") / 255.0
    y = np.concatenate([y_a, y_b])[keep]
    return Loaded(X, y, [f"pixel{i}" for i in range(X.shape[1])], "mnist")


def _load_imdb(cfg: ImdbConfig, seed: int) -> Loaded:
    import keras

    (x_a, y_a), (x_b, y_b) = keras.datasets.imdb.load_data(num_words=cfg.num_words)
    sequences = np.concatenate([x_a, x_b])
    keep = _kept_rows(len(sequences), cfg.max_rows, seed)
    # Only the kept reviews become multi-hot rows: all 50,000 over 10,000 words would take 2 GB.
    X = np.zeros((len(keep), cfg.num_words), dtype="float32")
    for row, sequence in enumerate(sequences[keep]):
        X[row, [i for i in sequence if i < cfg.num_words]] = 1.0
    return Loaded(X, np.concatenate([y_a, y_b])[keep], [f"word{i}" for i in range(cfg.num_words)], "imdb")


def _kept_rows(n: int, max_rows: int | None, seed: int) -> np.ndarray:
    """The indices of the rows a `max_rows` subsample keeps (all of them when None or not fewer)."""
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    return np.random.default_rng(seed).permutation(n)[:max_rows]


def _as_features(X: np.ndarray | pd.DataFrame, names: list[str]) -> np.ndarray:
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X, columns=names)
    non_numeric = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise DataError(f"non-numeric feature columns: {', '.join(non_numeric)}. searchlab needs numeric "
                        "features: encode them (e.g. one-hot) or drop them.")
    values = frame.to_numpy(dtype="float64")
    missing = frame.isna().sum()
    if missing.any():
        listed = ", ".join(f"{c} ({n})" for c, n in missing.items() if n)
        raise DataError(f"missing values in feature columns: {listed}. Fill or drop them first.")
    infinite = np.isinf(values).sum(axis=0)
    if infinite.any():
        listed = ", ".join(f"{names[i]} ({n})" for i, n in enumerate(infinite) if n)
        raise DataError(f"infinite values in feature columns: {listed}.")
    return values.astype("float32")


def _infer_task(y: np.ndarray) -> str:
    series = pd.Series(y)
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return "binary" if series.nunique() == 2 else "multiclass"
    values = series.dropna().to_numpy(dtype="float64")
    whole = np.all(np.equal(np.mod(values, 1), 0))
    n_unique = len(np.unique(values))
    if whole and n_unique <= _MAX_CLASSES:
        return "binary" if n_unique == 2 else "multiclass"
    return "regression"


def _count_note(y: np.ndarray, name: str) -> str:
    """A note when a target read as classes may be counts or ratings (whole numbers, 3 or more, no gaps): a
    regression may suit it better, and the task was only inferred."""
    series = pd.Series(y)
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return ""
    values = np.unique(series.dropna().to_numpy(dtype="float64"))
    if len(values) < 3 or not np.array_equal(values, np.arange(values[0], values[0] + len(values))):
        return ""
    return (f"{name}: the target's {len(values)} whole numbers ({values[0]:g} to {values[-1]:g}) are read as "
            f"{len(values)} unordered classes; if they are counts or ratings, set dataset.task=regression.")


def _numeric_target(y: np.ndarray, name: str) -> np.ndarray:
    try:
        values = np.asarray(y, dtype="float64")
    except (TypeError, ValueError):
        raise DataError(f"{name}: a regression target must be numeric.") from None
    if not np.all(np.isfinite(values)):
        raise DataError(f"{name}: the target has {int((~np.isfinite(values)).sum())} missing or infinite values.")
    return values.astype("float32")


def _encode_labels(y: np.ndarray, name: str, task: str) -> tuple[np.ndarray, tuple[str, ...]]:
    series = pd.Series(y)
    if series.isna().any():
        raise DataError(f"{name}: the target has {int(series.isna().sum())} missing values.")
    classes, codes = np.unique(series.astype(str) if series.dtype == object else series, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{name}: the target has a single class ({classes[0]!r}); a classifier needs at least two.")
    if task == "binary" and len(classes) != 2:
        raise DataError(f"{name}: dataset.task=binary but the target has {len(classes)} classes.")
    return codes.astype("int64"), tuple(str(c) for c in classes)
