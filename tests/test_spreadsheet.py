"""CSV files people open: a text cell a spreadsheet would evaluate is written with a leading
``'`` (OWASP), numbers stay numbers, and the workflow reads every id back exactly."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from hostile_payloads import DISPLAY_PAYLOADS, FORMULA_PAYLOADS, HARMLESS_LOOKALIKES

from capforecast.csv_tables import read_csv_table
from capforecast.spreadsheet import (
    FORMULA_STARTERS,
    formula_restored,
    formula_safe,
    write_csv,
)


def raw_cells(path: Path) -> list[list[str]]:
    """The cells as a spreadsheet's CSV import sees them (quotes removed, nothing converted)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def starts_a_formula(cell: str) -> bool:
    return cell.startswith(FORMULA_STARTERS)


@pytest.mark.parametrize("payload", FORMULA_PAYLOADS)
def test_formula_cells_get_one_quote_and_come_back_exact(payload: str) -> None:
    safe = formula_safe(payload)
    assert safe == "'" + payload
    assert not starts_a_formula(safe)
    assert formula_restored(safe) == payload


@pytest.mark.parametrize("payload", HARMLESS_LOOKALIKES + DISPLAY_PAYLOADS)
def test_other_text_is_written_as_it_is(payload: str) -> None:
    assert formula_safe(payload) == payload
    assert formula_restored(payload) == payload


@pytest.mark.parametrize("value", [-40.0, -1, 0.5, None, True])
def test_values_that_are_not_text_are_left_alone(value: object) -> None:
    assert formula_safe(value) is value or formula_safe(value) == value


def test_written_csv_has_no_formula_cell_and_reads_back_exactly(tmp_path: Path) -> None:
    # Line breaks inside an id must not split its row (CRLF line ends make the writer quote).
    ids = [*FORMULA_PAYLOADS, *HARMLESS_LOOKALIKES, "in\rside", "in\nside", "NA", "0012"]
    frame = pd.DataFrame(
        {
            "resource_id": ids,
            "service": pd.Categorical(["=cmd|'/c calc'!A0"] * len(ids)),
            "monthly_cost_delta_usd": [-40.0] * len(ids),
            "reason_codes": ["-cpu_low;+memory"] * len(ids),
        }
    ).rename(columns={"reason_codes": "=header"})
    path = tmp_path / "risk_report.csv"
    write_csv(frame, path)

    header, *rows = raw_cells(path)
    assert header == ["resource_id", "service", "monthly_cost_delta_usd", "'=header"]
    for row, rid in zip(rows, ids, strict=True):
        assert not any(starts_a_formula(cell) for cell in row[:2] + row[3:]), row
        assert row[0] == ("'" + rid if formula_safe(rid) != rid else rid)
        assert row[2] == "-40.0"  # a number, not text: spreadsheets read it as -40
    back = read_csv_table(path)
    assert back.columns.tolist() == frame.columns.tolist()
    assert back["resource_id"].fillna("").tolist() == ids  # "" is the only missing cell
    assert (back["service"] == "=cmd|'/c calc'!A0").all()
    assert (back["=header"] == "-cpu_low;+memory").all()
    assert back["monthly_cost_delta_usd"].tolist() == [-40.0] * len(ids)


def test_written_csv_keeps_the_caller_s_options(tmp_path: Path) -> None:
    stamp = pd.Timestamp("2026-09-14 06:00", tz="UTC")
    path = tmp_path / "scores.csv"
    write_csv(pd.DataFrame({"id": ["@x"], "t": [stamp]}), path, date_format="%Y-%m-%dT%H:%MZ")
    assert raw_cells(path) == [["id", "t"], ["'@x", "2026-09-14T06:00Z"]]
