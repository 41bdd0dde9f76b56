"""Data loading: every loader ends in one `Dataset` with a stratified held-out test split."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from searchlab.config import Config, CsvConfig, DigitsConfig, SyntheticConfig, SyntheticGenerator, Task
from searchlab.data import Dataset, check_cv_feasible, load_dataset
from searchlab.errors import DataError

MakeConfig = Callable[..., Config]


def _load(make_config: MakeConfig, *overrides: str, seed: int = 0) -> Dataset:
    return load_dataset(make_config(*overrides).dataset, seed)


def _csv(make_config: MakeConfig, path: Path, *overrides: str) -> Dataset:
    return _load(make_config, "dataset=csv", f"dataset.path={path}", *overrides)


def _table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.uniform(size=n), "c": rng.integers(0, 5, size=n)})


# --- digits and synthetic ---------------------------------------------------------------------


def test_digits_default(make_config: MakeConfig) -> None:
    """Digits: 10 classes, float32 features, 64 names, a stratified split of all 1,797 rows."""
    data = _load(make_config)
    assert data.name == "digits" and data.task == "multiclass"
    assert data.n_classes == 10 and data.class_names == tuple(str(i) for i in range(10))
    assert data.X_train.dtype == np.float32 and data.X_test.dtype == np.float32
    assert len(data.feature_names) == 64 and data.n_features == 64
    assert len(data.y_train) + len(data.y_test) == 1797
    assert len(data.X_train) == len(data.y_train) and len(data.X_test) == len(data.y_test)
    assert len(data.y_test) == pytest.approx(0.2 * 1797, abs=1)
    train = np.bincount(data.y_train, minlength=10) / len(data.y_train)
    test = np.bincount(data.y_test, minlength=10) / len(data.y_test)
    assert np.abs(train - test).max() < 0.01
    assert "1437 train / 360 test" in data.describe()


def test_digits_test_size_and_seed(make_config: MakeConfig) -> None:
    """`dataset.test_size` sets the split; the seed makes it repeatable and varies it."""
    data = _load(make_config, "dataset.test_size=0.5")
    assert abs(len(data.y_test) - len(data.y_train)) <= 1
    again = _load(make_config, "dataset.test_size=0.5")
    other = _load(make_config, "dataset.test_size=0.5", seed=1)
    np.testing.assert_array_equal(data.y_test, again.y_test)
    assert not np.array_equal(data.X_test, other.X_test)
    # the test rows' fingerprint: the same split gives the same, another seed or size another
    assert data.test_rows == again.test_rows and data.test_rows.startswith("digits seed=0 test_size=0.5 rows=899 ")
    assert other.test_rows != data.test_rows != _load(make_config).test_rows


@pytest.mark.parametrize(
    ("generator", "task", "n_classes"),
    [("moons", "binary", 2), ("circles", "binary", 2), ("classification", "binary", 2), ("regression", "regression", 0)],
)
def test_synthetic_task_inferred(make_config: MakeConfig, generator: str, task: str, n_classes: int) -> None:
    """Each generator's task is inferred from its target."""
    data = _load(make_config, "dataset=synthetic", f"dataset.generator={generator}", "dataset.n_samples=200")
    assert data.task == task and data.n_classes == n_classes
    assert data.name == f"synthetic-{generator}"
    assert len(data.y_train) + len(data.y_test) == 200
    assert data.X_train.dtype == np.float32
    if task == "regression":
        assert data.y_train.dtype == np.float32 and data.class_names == ()


def test_synthetic_multiclass(make_config: MakeConfig) -> None:
    """`dataset.n_classes` above two gives a multiclass task."""
    data = _load(make_config, "dataset=synthetic", "dataset.n_classes=4", "dataset.n_samples=200")
    assert data.task == "multiclass" and data.n_classes == 4


def test_loaders_take_their_typed_config_without_hydra() -> None:
    """Each data set's schema can be built in Python and loaded; the task comes back as a plain string."""
    digits = load_dataset(DigitsConfig(test_size=0.5), 0)
    assert digits.name == "digits" and len(digits.y_test) == 899
    data = load_dataset(SyntheticConfig(generator=SyntheticGenerator.regression, n_samples=100, n_features=4), 0)
    assert data.name == "synthetic-regression" and data.n_features == 4
    assert type(data.task) is str and data.task == "regression"
    explicit = load_dataset(SyntheticConfig(task=Task.binary, n_samples=100), 0)
    assert type(explicit.task) is str and explicit.task == "binary"


def test_csv_config_built_in_python(tmp_path: Path) -> None:
    """A `CsvConfig` needs nothing but its own fields."""
    _labelled().to_csv(tmp_path / "t.csv", index=False)
    data = load_dataset(CsvConfig(path=str(tmp_path / "t.csv"), target="label"), 0)
    assert data.task == "binary" and data.feature_names == ("a", "b", "c")


# --- csv --------------------------------------------------------------------------------------


def test_csv_string_target_is_binary(make_config: MakeConfig, tmp_path: Path) -> None:
    """A yes/no target column gives a binary task with sorted class names; the column is not a feature."""
    table = _table()
    table["label"] = np.where(table["a"] > 0, "yes", "no")
    table.to_csv(tmp_path / "table.csv", index=False)
    data = _csv(make_config, tmp_path / "table.csv", "dataset.target=label")
    assert data.task == "binary" and data.class_names == ("no", "yes")
    assert data.feature_names == ("a", "b", "c")
    assert data.name == "table"
    assert set(np.unique(data.y_train)) == {0, 1}
    # label 1 means "yes": it follows feature a
    X = np.concatenate([data.X_train, data.X_test])
    y = np.concatenate([data.y_train, data.y_test])
    np.testing.assert_array_equal(y, (X[:, 0] > 0).astype(int))


def test_csv_separate_target_file_regression(make_config: MakeConfig, tmp_path: Path) -> None:
    """A features file plus a one-column target file with a continuous target."""
    table = _table(n=80)
    table.columns = ["feature 1", "feature 2", "feature 3"]
    table.to_csv(tmp_path / "x_feats.csv", index=False)
    pd.DataFrame({"Volume": table["feature 1"] * 3.5 + 0.25}).to_csv(tmp_path / "x_target.csv", index=False)
    data = _csv(make_config, tmp_path / "x_feats.csv", f"dataset.target_path={tmp_path / 'x_target.csv'}")
    assert data.task == "regression" and data.class_names == ()
    assert data.feature_names == ("feature 1", "feature 2", "feature 3")
    assert data.y_train.dtype == np.float32
    np.testing.assert_allclose(data.y_train, data.X_train[:, 0] * 3.5 + 0.25, rtol=1e-5, atol=1e-5)


def test_csv_integer_target_is_multiclass(make_config: MakeConfig, tmp_path: Path) -> None:
    """An integer target with three values is multiclass with codes 0..2."""
    table = _table(n=90)
    table["y"] = np.arange(90) % 3 + 1
    table.to_csv(tmp_path / "t.csv", index=False)
    data = _csv(make_config, tmp_path / "t.csv", "dataset.target=y")
    assert data.task == "multiclass" and data.class_names == ("1", "2", "3")
    assert set(np.unique(data.y_test)) == {0, 1, 2}
    assert "c" in data.feature_names and "y" not in data.feature_names
    # whole numbers without gaps may be ratings: one note on the inferred task and how to override it
    assert data.notes == ("t: the target's 3 whole numbers (1 to 3) are read as 3 unordered classes; if they are "
                          "counts or ratings, set dataset.task=regression.",)
    assert not _csv(make_config, tmp_path / "t.csv", "dataset.target=y", "dataset.task=multiclass").notes
    table["y"] = (np.arange(90) % 3) * 10  # codes with gaps: labels, no note
    table.to_csv(tmp_path / "t.csv", index=False)
    assert not _csv(make_config, tmp_path / "t.csv", "dataset.target=y").notes


def test_csv_explicit_binary_task_with_three_classes(make_config: MakeConfig, tmp_path: Path) -> None:
    """`dataset.task=binary` on a three-class target is refused."""
    table = _table(n=90)
    table["y"] = np.arange(90) % 3
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="task=binary.*3 classes"):
        _csv(make_config, tmp_path / "t.csv", "dataset.target=y", "dataset.task=binary")


def _write(tmp_path: Path, table: pd.DataFrame, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    table.to_csv(path, index=False)
    return path


def _text(path: Path, content: str) -> Path:
    path.write_text(content)
    return path


def _labelled(n: int = 60) -> pd.DataFrame:
    table = _table(n)
    table["label"] = np.arange(n) % 2
    return table


@pytest.mark.parametrize(
    ("make_file", "overrides", "expected"),
    [
        pytest.param(lambda d: d / "absent.csv", ["dataset.target=label"], ["dataset.path", "no file", "absent.csv"],
                     id="missing-file"),
        pytest.param(lambda d: _text(d / "empty.csv", ""), ["dataset.target=label"],
                     ["empty.csv", "empty"], id="empty-file"),
        pytest.param(lambda d: _text(d / "head.csv", "a,b,label\n"), ["dataset.target=label"],
                     ["head.csv", "no rows"], id="header-only"),
        pytest.param(lambda d: _write(d, _labelled()), ["dataset.target=Label"],
                     ["dataset.target", "'Label'", "a, b, c, label"], id="target-absent"),
        pytest.param(lambda d: _write(d, _labelled().assign(color=["red", "blue"] * 30)), ["dataset.target=label"],
                     ["non-numeric", "color"], id="non-numeric-feature"),
        pytest.param(lambda d: _write(d, _labelled().assign(b=[np.nan, np.nan] + [1.0] * 58)), ["dataset.target=label"],
                     ["missing values", "b (2)"], id="missing-values"),
        pytest.param(lambda d: _write(d, _labelled().assign(c=[np.inf] + [1.0] * 59)), ["dataset.target=label"],
                     ["infinite", "c (1)"], id="infinite-values"),
        pytest.param(lambda d: _write(d, _labelled().assign(label="yes")), ["dataset.target=label"],
                     ["single class", "'yes'"], id="single-class"),
        pytest.param(lambda d: _write(d, _labelled().assign(label=[None] + ["x", "y"] * 29 + ["x"])),
                     ["dataset.target=label"], ["target", "1 missing"], id="missing-label"),
    ],
)
def test_csv_errors(make_config: MakeConfig, tmp_path: Path, make_file: Callable[[Path], Any],
                    overrides: list[str], expected: list[str]) -> None:
    """Each malformed table fails with a `DataError` saying what is wrong and where."""
    path = make_file(tmp_path)
    with pytest.raises(DataError) as info:
        _csv(make_config, path, *overrides)
    for part in expected:
        assert part in str(info.value), f"{part!r} not in {str(info.value)!r}"


def test_csv_target_file_length_mismatch(make_config: MakeConfig, tmp_path: Path) -> None:
    """Features and target files with different row counts are refused, naming both."""
    _table(n=30).to_csv(tmp_path / "f.csv", index=False)
    pd.DataFrame({"Class": np.arange(25) % 2}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError) as info:
        _csv(make_config, tmp_path / "f.csv", f"dataset.target_path={tmp_path / 't.csv'}")
    message = str(info.value)
    assert "f.csv" in message and "t.csv" in message and "30" in message and "25" in message


def test_csv_target_file_missing(make_config: MakeConfig, tmp_path: Path) -> None:
    """A missing target file is named with its config key."""
    _table().to_csv(tmp_path / "f.csv", index=False)
    with pytest.raises(DataError, match=r"dataset\.target_path.*nowhere\.csv"):
        _csv(make_config, tmp_path / "f.csv", f"dataset.target_path={tmp_path / 'nowhere.csv'}")


def test_csv_regression_target_with_missing_value(make_config: MakeConfig, tmp_path: Path) -> None:
    """A continuous target with a gap is refused rather than trained on."""
    target = np.linspace(0.0, 1.0, 80) * 7.3
    target[5] = np.nan
    _table(n=80).assign(y=target).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="1 missing"):
        _csv(make_config, tmp_path / "t.csv", "dataset.target=y")


def test_cv_feasibility(make_config: MakeConfig, tmp_path: Path) -> None:
    """A class with fewer training rows than folds is named; enough rows pass."""
    table = _table(n=60)
    table["label"] = ["common"] * 56 + ["rare"] * 4
    table.to_csv(tmp_path / "t.csv", index=False)
    data = _csv(make_config, tmp_path / "t.csv", "dataset.target=label", "dataset.test_size=0.25")
    rare = int((data.y_train == data.class_names.index("rare")).sum())
    assert rare == 3
    check_cv_feasible(data, cv=3)
    with pytest.raises(DataError) as info:
        check_cv_feasible(data, cv=5)
    message = str(info.value)
    assert "'rare' (3)" in message and "search.coarse.cv=5" in message and "common" not in message
    with pytest.raises(DataError, match="too few"):
        check_cv_feasible(data, cv=30)


# --- mnist and imdb, with the download replaced -----------------------------------------------


def _fake_mnist(n_a: int = 120, n_b: int = 30) -> Callable[[], Any]:
    rng = np.random.default_rng(0)

    def load_data() -> Any:
        images = rng.integers(0, 256, size=(n_a + n_b, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[1, 0, 0] = 0, 255
        labels = (np.arange(n_a + n_b) % 10).astype(np.uint8)
        return (images[:n_a], labels[:n_a]), (images[n_a:], labels[n_a:])

    return load_data


def _fake_imdb(n_a: int = 60, n_b: int = 40) -> Callable[..., Any]:
    rng = np.random.default_rng(0)

    def load_data(num_words: int | None = None, **_: Any) -> Any:
        # keras returns object arrays of word-index lists; indices above num_words must be ignored
        sequences = [list(rng.integers(1, 60, size=rng.integers(3, 40))) for _ in range(n_a + n_b)]
        x = np.empty(len(sequences), dtype=object)
        x[:] = sequences
        y = (np.arange(n_a + n_b) % 2).astype(np.int64)
        return (x[:n_a], y[:n_a]), (x[n_a:], y[n_a:])

    return load_data


def test_mnist_without_download(make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """MNIST becomes 784 features in [0, 1] over ten classes; max_rows subsamples."""
    import keras

    monkeypatch.setattr(keras.datasets.mnist, "load_data", _fake_mnist())
    data = _load(make_config, "dataset=mnist", "dataset.max_rows=100")
    assert data.task == "multiclass" and data.n_classes == 10
    assert data.n_features == 784 and data.feature_names[0] == "pixel0"
    assert len(data.y_train) + len(data.y_test) == 100
    X = np.concatenate([data.X_train, data.X_test])
    assert X.dtype == np.float32 and X.min() >= 0.0 and X.max() <= 1.0 and X.max() > 0.9
    full = _load(make_config, "dataset=mnist", "dataset.max_rows=null")
    assert len(full.y_train) + len(full.y_test) == 150


def test_imdb_without_download(make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """IMDB becomes a 0/1 multi-hot matrix of num_words columns; max_rows subsamples."""
    import keras

    monkeypatch.setattr(keras.datasets.imdb, "load_data", _fake_imdb())
    data = _load(make_config, "dataset=imdb", "dataset.num_words=20", "dataset.max_rows=50")
    assert data.task == "binary" and data.class_names == ("0", "1")
    assert data.n_features == 20 and data.feature_names[-1] == "word19"
    assert len(data.y_train) + len(data.y_test) == 50
    X = np.concatenate([data.X_train, data.X_test])
    assert set(np.unique(X)) <= {0.0, 1.0} and X.sum() > 0
    full = _load(make_config, "dataset=imdb", "dataset.num_words=20", "dataset.max_rows=null")
    assert len(full.y_train) + len(full.y_test) == 100
