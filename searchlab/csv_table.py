"""Reading a user's CSV table as it comes: the separator sniffed (and reported) unless given, an optional header row,
columns named or (header-less) numbered, and when a column is not found, the likely reason.

pandas' `read_csv` does the reading; this module only chooses its `sep`, `header` and `decimal`.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from searchlab.config import CHARACTERS, CsvConfig
from searchlab.errors import DataError

#: Separators sniffed, in order of preference when several split every sampled line alike: a comma last, because
#: semicolon- and tab-separated files often hold decimal commas (3,26;0,829).
_SNIFFED = ("\t", ";", "|", ",")
_SAMPLE_BYTES = 64 * 1024
_SAMPLE_LINES = 50


@dataclass(frozen=True)
class Table:
    """A CSV file read into a frame, and how it was read (for the user: `sep ';' (sniffed), no header row`)."""

    frame: pd.DataFrame
    reading: str


def read_table(path: Path, key: str, cfg: CsvConfig) -> Table:
    """Read the CSV file at `path` (the value of config key `key`) with `cfg`'s reading options.

    Without a header row the columns are named `col0`, `col1`, ...

    Raises:
        DataError: no such file, empty, not a table pandas can read, or no data rows.
    """
    if not path.is_file():
        raise DataError(f"{key}: no file at {path}.")
    sep, sniffed = cfg.separator(), False
    if sep is None:
        sep, sniffed = sniff_separator(path), True
    try:
        frame = pd.read_csv(path, sep=sep, header=0 if cfg.header else None, decimal=cfg.decimal_mark())
    except pd.errors.EmptyDataError:
        raise DataError(f"{key}: {path} is empty.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{key}: {path} is not a readable CSV table with sep {sep!r}: {exc}") from None
    if frame.empty:
        raise DataError(f"{key}: {path} has a header but no rows.")
    if not cfg.header:
        frame.columns = [f"col{i}" for i in range(frame.shape[1])]
    reading = f"sep {sep!r}{' (sniffed)' if sniffed else ''}" + ("" if cfg.header else ", no header row")
    return Table(frame, reading)


def sniff_separator(path: Path) -> str:
    """The first of tab, semicolon, pipe and comma that splits every line of the file's start into the same number
    (two or more) of fields, quotes respected; a comma when none does (a one-column file, or a ragged one)."""
    with path.open("rb") as file:
        sample = file.read(_SAMPLE_BYTES).decode("utf-8", errors="replace")
    lines = sample.splitlines()
    if len(sample) == _SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut short
    lines = [line for line in lines[:_SAMPLE_LINES] if line.strip()]
    for sep in _SNIFFED:
        widths = {len(row) for row in csv.reader(lines, delimiter=sep)}
        if len(widths) == 1 and widths.pop() > 1:
            return sep
    return ","


def column(table: Table, name: str, key: str, path: Path, header: bool) -> str:
    """The column `name` of `table` names (with a header row), or the column at position `name` (without one: `0`
    first, `-1` last), for config key `key`.

    Raises:
        DataError: no such column, with the file's columns and the likely fix.
    """
    columns = [str(c) for c in table.frame.columns]
    if not header:
        position = int(name)
        if not -len(columns) <= position < len(columns):
            raise DataError(f"{key}: position {position} is outside the {len(columns)} columns of {path} "
                            f"(0 to {len(columns) - 1}, or -1 to -{len(columns)} from the end; read with "
                            f"{table.reading}).")
        return columns[position]
    if name in columns:
        return name
    raise DataError(f"{key}: column {name!r} is not in {path}; its columns are {', '.join(columns)} (read with "
                    f"{table.reading}).{_hint(table, name)}")


def refuse_non_numeric(features: pd.DataFrame, header: bool) -> None:
    """Refuse text (categorical) feature columns, naming each with a value and the likely fix.

    They are refused rather than one-hot encoded here: the model searchlab exports takes the file's numeric
    columns as they are (its scaling inside), so an encoding made here would be one every caller of the served
    model had to repeat. Encoding in the file keeps the columns the model takes the columns of the file.

    Raises:
        DataError: some feature column is not numeric.
    """
    text = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if not text:
        return
    values = {c: features[c].dropna().astype(str) for c in text}
    listed = ", ".join(f"{c} (e.g. {values[c].iloc[0]!r})" for c in text)
    if not header and all(values[c].iloc[1:].map(_is_number).all() for c in text) \
            and not any(_is_number(values[c].iloc[0]) for c in text):
        fix = "The first row looks like column names: set dataset.header=true."
    elif all(values[c].map(_is_number).all() for c in text):
        fix = "They look like numbers written with a decimal comma: set dataset.decimal=comma."
    else:
        drop = ",".join(str(c) if header else str(c).removeprefix("col") for c in text)
        fix = ("searchlab trains on numbers, and the model it exports takes the file's numeric columns: encode "
               f"these in the file (e.g. one-hot, pandas.get_dummies) or leave them out with dataset.drop=[{drop}].")
    raise DataError(f"non-numeric feature columns: {listed}. {fix}")


def refuse_featureless(table: Table, features: pd.DataFrame, path: Path) -> None:
    """Refuse a table with no feature column left (besides the target and the dropped ones).

    Raises:
        DataError: no feature column, with the likely fix.
    """
    if features.shape[1] == 0:
        raise DataError(f"dataset.path: {path} has no feature columns besides the target (read with "
                        f"{table.reading}).{_separator_hint(table.frame)}")


def _separator_hint(frame: pd.DataFrame) -> str:
    """A one-column table whose first line holds a separator was probably read with the wrong one."""
    if frame.shape[1] != 1:
        return ""
    first = f"{frame.columns[0]} {frame.iloc[0, 0]}"
    found = [sep for sep in (*_SNIFFED, " ") if sep in first.strip()]
    if not found:
        return ""
    named = next(name for name, char in CHARACTERS.items() if char == found[0])
    return (f" It read as one column holding {found[0]!r}: the file is probably separated by {found[0]!r}; "
            f"set dataset.sep={named}.")


def _hint(table: Table, name: str) -> str:
    """Why a column may be missing: the wrong separator, a first row of data taken as names, or a near miss."""
    columns = [str(c) for c in table.frame.columns]
    separator = _separator_hint(table.frame)
    if separator:
        return separator
    if all(_is_number(c) for c in columns):
        return (" The column names look like numbers: if the first row is data, set dataset.header=false and name "
                "the target by position (dataset.target=-1 for the last column).")
    close = difflib.get_close_matches(name.lower(), [c.lower() for c in columns], n=1)
    if close:
        match = next(c for c in columns if c.lower() == close[0])
        return f" Did you mean {match!r}?"
    return ""


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "."))
    except ValueError:
        return False
    return True
