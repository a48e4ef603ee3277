"""CSV files people open in a spreadsheet: no cell from the data runs as a formula.

Excel, LibreOffice and Google Sheets evaluate a cell that starts with ``=``, ``+``, ``-`` or
``@`` (and, after a tab or carriage return, what follows), so an id such as
``=HYPERLINK("http://evil","x")`` in ``risk_report.csv`` would run when an SRE opens the file.
Following the OWASP rule (CSV injection), :func:`write_csv` writes such a text cell with a
leading ``'``, which spreadsheets show as text. Numbers (a negative cost delta) are numbers,
not text, and stay as they are; parquet files keep every value exact.

The prefix is reversible: a text cell that starts with any number of ``'`` followed by one of
those characters gets one more ``'``, so :func:`formula_restored` (used by every reader of the
workflow's CSVs, :func:`capforecast.csv_tables.read_csv_table`) gives back the exact text, also
for an id that itself starts with ``'=``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

# OWASP's list: formula starters and the control characters that make a cell start over.
FORMULA_STARTERS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"
_NEEDS_QUOTE = re.compile("^'*[" + re.escape("".join(FORMULA_STARTERS)) + "]")
_QUOTED = re.compile("^'+[" + re.escape("".join(FORMULA_STARTERS)) + "]")


def formula_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would evaluate, prefixed with ``'``; anything else as is."""
    if isinstance(value, str) and _NEEDS_QUOTE.match(value):
        return QUOTE + value
    return value


def formula_restored(value: Any) -> Any:
    """The exact text of a cell written by :func:`formula_safe` (inverse of it)."""
    if isinstance(value, str) and _QUOTED.match(value):
        return value[1:]
    return value


def _text_columns(frame: pd.DataFrame) -> list[Any]:
    return [
        c
        for c in frame.columns
        if frame[c].dtype == object
        or pd.api.types.is_string_dtype(frame[c])
        or isinstance(frame[c].dtype, pd.CategoricalDtype)
    ]


def _mapped(frame: pd.DataFrame, cell: Any) -> pd.DataFrame:
    out = frame.rename(columns=cell)
    for column in _text_columns(out):
        out[column] = out[column].astype(object).map(cell)
    return out


def formula_safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``frame`` with :func:`formula_safe` applied to its text cells and column names."""
    return _mapped(frame, formula_safe)


def formula_restored_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``frame`` read from such a CSV, with its text cells and column names exact."""
    return _mapped(frame, formula_restored)


def write_csv(frame: pd.DataFrame, path: str | Path, **to_csv: Any) -> None:
    """Write ``frame`` as CSV (no index unless asked) with formula-like text neutralised; every
    CSV the workflow writes goes through here.

    Lines end in CRLF (RFC 4180): Python's CSV writer quotes a cell only for the characters of
    the line terminator, so with a bare LF an id holding a carriage return would be written
    unquoted and read back as two rows.
    """
    to_csv.setdefault("index", False)
    to_csv.setdefault("lineterminator", "\r\n")
    formula_safe_frame(frame).to_csv(path, **to_csv)
