"""CSV tables read as they come (`dataset=csv`): the separator sniffed or given, header-less files with the target
by position, decimal commas, text columns refused by name, and a likely fix when the target is not found."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from searchlab.config import Config
from searchlab.csv_table import sniff_separator
from searchlab.data import Dataset, load_dataset
from searchlab.errors import ConfigError, DataError

MakeConfig = Callable[..., Config]
ROWS = 60


def _rows(decimal: str = ".") -> list[list[str]]:
    """6 numeric features (two of them small integers) and a continuous target, as text."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(ROWS, 6)).round(3)
    X[:, 3], X[:, 4] = rng.integers(0, 3, ROWS), rng.integers(0, 2, ROWS)
    y = X @ [0.5, 1.0, -0.3, 0.2, 0.1, 0.7] + 4
    return [[f"{v:g}".replace(".", decimal) for v in row] + [f"{t:.3f}".replace(".", decimal)] for row, t in zip(X, y, strict=True)]


def _write(path: Path, rows: list[list[str]], sep: str, header: list[str] | None = None) -> Path:
    lines = ([sep.join(header)] if header else []) + [sep.join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _load(make_config: MakeConfig, path: Path, *overrides: str) -> Dataset:
    return load_dataset(make_config("dataset=csv", f"dataset.path={path}", *overrides).dataset, 0)


def test_a_semicolon_separated_headerless_file(make_config: MakeConfig, tmp_path: Path) -> None:
    """The issue's file: `;`, no header row, target in the last column. The separator is sniffed and reported."""
    path = _write(tmp_path / "fish.csv", _rows(), ";")
    data = _load(make_config, path, "dataset.header=false", "dataset.target=-1")
    assert data.task == "regression" and data.n_features == 6
    assert data.feature_names == ("col0", "col1", "col2", "col3", "col4", "col5")
    assert len(data.y_train) + len(data.y_test) == ROWS  # the first row is data
    assert data.reading == "sep ';' (sniffed), no header row" and "read with sep ';' (sniffed)" in data.describe()
    by_index = _load(make_config, path, "dataset.header=false", "dataset.target=6")
    np.testing.assert_array_equal(by_index.y_test, data.y_test)


@pytest.mark.parametrize(("sep", "overrides"), [
    ("\t", []), ("|", []), (",", []), ("\t", ["dataset.sep=tab"]), ("|", ["dataset.sep=pipe"]), (" ", ["dataset.sep=space"]),
    (":", ["dataset.sep=:"]),
])
def test_separators_sniffed_or_given(make_config: MakeConfig, tmp_path: Path, sep: str, overrides: list[str]) -> None:
    path = _write(tmp_path / "t.txt", _rows(), sep, header=[f"x{i}" for i in range(6)] + ["y"])
    data = _load(make_config, path, "dataset.target=y", *overrides)
    assert data.n_features == 6 and data.feature_names[0] == "x0"
    assert data.reading == f"sep {sep!r}" + ("" if overrides else " (sniffed)")


def test_decimal_commas(make_config: MakeConfig, tmp_path: Path) -> None:
    """`3,26;0,829;...`: the semicolon is sniffed although every line holds commas too; dataset.decimal=comma reads
    the numbers, and without it the message says so."""
    path = _write(tmp_path / "eu.csv", _rows(decimal=","), ";")
    assert sniff_separator(path) == ";"
    reference = _load(make_config, _write(tmp_path / "us.csv", _rows(), ";"), "dataset.header=false", "dataset.target=-1")
    data = _load(make_config, path, "dataset.header=false", "dataset.target=-1", "dataset.decimal=comma")
    np.testing.assert_allclose(data.X_train, reference.X_train)
    with pytest.raises(DataError, match=r"col0 \(e\.g\. '.*,.*'\).*set dataset\.decimal=comma"):
        _load(make_config, path, "dataset.header=false", "dataset.target=-1")


def test_sniffing_respects_quotes_and_falls_back_to_a_comma(tmp_path: Path) -> None:
    quoted = tmp_path / "q.csv"
    quoted.write_text('name,note,y\n"a","x;y",1\n"b","z;w",0\n')
    assert sniff_separator(quoted) == ","
    single = tmp_path / "one.csv"
    single.write_text("y\n1\n0\n")
    assert sniff_separator(single) == ","


def _headerless(tmp_path: Path) -> Path:
    return _write(tmp_path / "fish.csv", _rows(), ";")


def _with_header(tmp_path: Path) -> Path:
    return _write(tmp_path / "t.csv", _rows(), ";", header=[f"x{i}" for i in range(6)] + ["LC50"])


@pytest.mark.parametrize(("make_file", "overrides", "expected"), [
    pytest.param(_headerless, ["dataset.target=-1"],
                 ["column '-1' is not in", "0.126", "column names look like numbers", "dataset.header=false",
                  "dataset.target=-1"], id="header-row-of-data"),
    pytest.param(_headerless, ["dataset.target=LC50", "dataset.sep=comma"],
                 ["'LC50' is not in", "read with sep ','", "separated by ';'", "dataset.sep=semicolon"], id="wrong-separator"),
    pytest.param(_headerless, ["dataset.header=false", "dataset.target=-1", "dataset.sep=comma"],
                 ["no feature columns", "dataset.sep=semicolon"], id="wrong-separator-headerless"),
    pytest.param(_with_header, ["dataset.target=lc50"], ["'lc50' is not in", "Did you mean 'LC50'?"], id="near-miss"),
    pytest.param(_headerless, ["dataset.header=false", "dataset.target=7"],
                 ["dataset.target: position 7 is outside the 7 columns", "0 to 6"], id="position-out-of-range"),
    pytest.param(_with_header, ["dataset.header=false", "dataset.target=-1"],
                 ["col0 (e.g. 'x0')", "first row looks like column names", "dataset.header=true"], id="header-read-as-data"),
    pytest.param(_with_header, ["dataset.target=LC50", "dataset.drop=[x9]"], ["dataset.drop[0]", "'x9'"], id="drop-absent"),
])
def test_a_column_not_found_names_the_likely_fix(make_config: MakeConfig, tmp_path: Path,
                                                 make_file: Callable[[Path], Path], overrides: list[str],
                                                 expected: list[str]) -> None:
    with pytest.raises(DataError) as caught:
        _load(make_config, make_file(tmp_path), *overrides)
    for fragment in expected:
        assert fragment in str(caught.value), str(caught.value)


def test_text_columns_are_refused_by_name_and_can_be_left_out(make_config: MakeConfig, tmp_path: Path) -> None:
    """A categorical column is refused, not one-hot encoded: the exported model takes the file's numeric columns."""
    rows = [[*row[:6], ["red", "green", "blue"][i % 3], row[6]] for i, row in enumerate(_rows())]
    path = _write(tmp_path / "t.csv", rows, ",", header=[f"x{i}" for i in range(6)] + ["colour", "y"])
    with pytest.raises(DataError, match=r"non-numeric feature columns: colour \(e\.g\. 'red'\).*dataset\.drop=\[colour\]"):
        _load(make_config, path, "dataset.target=y")
    data = _load(make_config, path, "dataset.target=y", "dataset.drop=[colour,x5]")
    assert data.feature_names == ("x0", "x1", "x2", "x3", "x4")
    headerless = _write(tmp_path / "n.csv", rows, ",")
    with pytest.raises(DataError, match=r"col6 \(e\.g\. 'red'\).*dataset\.drop=\[6\]"):
        _load(make_config, headerless, "dataset.header=false", "dataset.target=-1")
    assert _load(make_config, headerless, "dataset.header=false", "dataset.target=-1", "dataset.drop=[6]").n_features == 6


@pytest.mark.parametrize(("overrides", "expected"), [
    (["dataset.sep=semi"], "dataset.sep must be auto (sniffed), one of comma, semicolon, tab, pipe, space, or a single character, got 'semi'."),
    (["dataset.decimal=x"], "dataset.decimal must be point (3.14) or comma (3,14), got 'x'."),
    (["dataset.header=false", "dataset.target=LC50"], "dataset.target must be a column position (0 first, -1 last) with dataset.header=false, got 'LC50'."),
    (["dataset.header=false", "dataset.target=-1", "dataset.drop=[a]"], "dataset.drop[0] must be a column position"),
])
def test_reading_options_are_checked_before_reading(make_config: MakeConfig, overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config("dataset=csv", "dataset.path=any.csv", "dataset.target=y", *overrides)
    assert expected in str(caught.value)
