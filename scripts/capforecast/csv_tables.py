"""CSV tables the workflow writes, read back without changing an identifier.

With pandas' defaults an id ``NA`` (or ``null``, ``None``, ``nan``, ``N/A``) comes back as
missing and ``0012`` as the number 12: the series would be quarantined, or no longer match its
rows in the parquet files. Identifiers are untrusted text, so every CSV the workflow reads back
goes through :func:`read_csv_table`: text columns stay ``str``, and only an empty cell is
missing (in every column; pandas writes NaN as an empty cell). Text cells the writer
(:func:`capforecast.spreadsheet.write_csv`) prefixed with ``'`` so that a spreadsheet does not
run them as formulas come back exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from capforecast.spreadsheet import formula_restored_frame

# Columns of the workflow's CSV outputs that hold names from the data or the config.
TEXT_COLUMNS: frozenset[str] = frozenset(
    {
        "resource_id",
        "metric",
        "series_id",
        "source_metric",
        "source_file",
        "partition",
        "service",
        "instance_type",
        "recommended_instance_type",
        "region",
        "model",
        "flags",
        "reason",
        "file",
    }
)


def read_csv_table(path: str | Path, text_columns: Iterable[str] = TEXT_COLUMNS) -> pd.DataFrame:
    """A CSV the workflow wrote, with ``text_columns`` (those present) read as ``str`` and no
    missing-value inference beyond the empty cell."""
    dtype = {column: str for column in text_columns}
    table = pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""])
    return formula_restored_frame(table)
