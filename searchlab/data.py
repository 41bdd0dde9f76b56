"""Data sets: every loader ends in one `Dataset` with a held-out test split.

The test split is made here, once, and no search stage sees it. Features are
returned unscaled: scaling is fitted inside each fit on its training rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
                f"{self.n_features} features ({kind})")


def load_dataset(cfg: DatasetConfig, seed: int) -> Dataset:
    """Load the configured data set and split off its test rows (stratified for classification).

    Raises:
        DataError: the data is missing, malformed or too small; the message says what and where.
    """
    X, y, feature_names, name = _load(cfg, seed)
    return _split(X, y, feature_names, name, cfg, seed)


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
           cfg: DatasetConfig, seed: int) -> Dataset:
    """Check features and target, infer the task, and split off the test rows (stratified for classification)."""
    X = _as_features(X, feature_names)
    if len(X) != len(y):
        raise DataError(f"{name}: {len(X)} feature rows but {len(y)} target values; they must match.")
    task = _infer_task(y) if cfg.task is Task.auto else cfg.task.value
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
    return Dataset(name, task, X_train, y_train, X_test, y_test, tuple(feature_names), class_names)


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


Loaded = tuple[np.ndarray | pd.DataFrame, np.ndarray, list[str], str]


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
    return bunch.data, bunch.target, list(bunch.feature_names), "digits"


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
    return X, y, [f"x{i}" for i in range(X.shape[1])], f"synthetic-{cfg.generator.value}"


def _load_csv(cfg: CsvConfig) -> Loaded:
    assert cfg.path is not None  # Config's rules require it
    path = Path(cfg.path).expanduser().resolve()
    table = _read_table(path, "dataset.path")
    if cfg.target_path:
        target_path = Path(cfg.target_path).expanduser().resolve()
        targets = _read_table(target_path, "dataset.target_path")
        column = cfg.target or targets.columns[0]
        if column not in targets.columns:
            raise DataError(f"dataset.target: column {column!r} is not in {target_path}; "
                            f"its columns are {', '.join(map(str, targets.columns))}.")
        if len(targets) != len(table):
            raise DataError(f"{path} has {len(table)} rows but {target_path} has {len(targets)}; they must match.")
        y = targets[column].to_numpy()
        features = table
    else:
        if cfg.target not in table.columns:
            raise DataError(f"dataset.target: column {cfg.target!r} is not in {path}; "
                            f"its columns are {', '.join(map(str, table.columns))}.")
        y = table[cfg.target].to_numpy()
        features = table.drop(columns=[cfg.target])
    return features, y, [str(c) for c in features.columns], path.stem


def _load_mnist(cfg: MnistConfig, seed: int) -> Loaded:
    import keras

    (x_a, y_a), (x_b, y_b) = keras.datasets.mnist.load_data()
    X = np.concatenate([x_a, x_b]).reshape(-1, 28 * 28).astype("float32") / 255.0
    y = np.concatenate([y_a, y_b])
    X, y = _subsample(X, y, cfg.max_rows, seed)
    return X, y, [f"pixel{i}" for i in range(X.shape[1])], "mnist"


def _load_imdb(cfg: ImdbConfig, seed: int) -> Loaded:
    import keras

    (x_a, y_a), (x_b, y_b) = keras.datasets.imdb.load_data(num_words=cfg.num_words)
    sequences = list(x_a) + list(x_b)
    y = np.concatenate([y_a, y_b])
    X = np.zeros((len(sequences), cfg.num_words), dtype="float32")
    for row, sequence in enumerate(sequences):
        X[row, [i for i in sequence if i < cfg.num_words]] = 1.0
    X, y = _subsample(X, y, cfg.max_rows, seed)
    return X, y, [f"word{i}" for i in range(cfg.num_words)], "imdb"


def _subsample(X: np.ndarray, y: np.ndarray, max_rows: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if max_rows is None or len(y) <= max_rows:
        return X, y
    keep = np.random.default_rng(seed).permutation(len(y))[:max_rows]
    return X[keep], y[keep]


def _read_table(path: Path, key: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{key}: no file at {path}.")
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{key}: {path} is empty.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{key}: {path} is not a readable CSV table: {exc}") from None
    if table.empty:
        raise DataError(f"{key}: {path} has a header but no rows.")
    return table


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
