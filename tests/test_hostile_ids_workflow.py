"""A tiny fleet whose resource ids and file names are payloads, run through the whole workflow:
the reports open in headless Chromium with nothing injected live and every id shown literally,
the CSVs people open start no cell with a formula while the workflow reads every id back exactly,
and file names that are non-Latin, too long or periodic get safe, distinct partitions.

One cheap model, one week of hourly data, three partitions: a long-format parquet file whose ids
and name are payloads, and two series files (the resource id is the name without ".csv").
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hostile_payloads import (
    FORMULA_PAYLOADS,
    HTML_PAYLOADS,
    MARKDOWN_PAYLOADS,
    TEX_PAYLOADS,
    as_shown,
    live_injections,
    shown_text,
)
from snakemake.io import PeriodicityDetector
from test_report_browser import chromium, rendered_dom  # noqa: F401  (chromium: fixture)
from test_workflow import CONFIGS, snakemake

from capforecast.csv_tables import read_csv_table
from capforecast.data import partitions
from capforecast.spreadsheet import FORMULA_STARTERS

pytestmark = pytest.mark.slow

# Ids of the long-format file. Leading/trailing whitespace is left out: ingest strips ids, so
# "\t=1+1" arrives as "=1+1" (the CSV unit tests cover those cells).
FLEET_IDS: tuple[str, ...] = (
    *HTML_PAYLOADS,
    *MARKDOWN_PAYLOADS,
    *TEX_PAYLOADS[:4],
    *(p for p in FORMULA_PAYLOADS if p == p.strip()),
)
# A file name holds anything but "/": formula, markup and TeX at once.
FLEET_FILE = (
    "=SUM(1+1)<img src=\"x\" onerror=\"document.body.setAttribute('data-xss','f')\">$\\bar$.parquet"
)
# Non-Latin stems that sanitise to the same characters; 245-byte file names (their partition
# files would pass the 255-byte limit) ending in a part Snakemake finds periodic.
FILE_STEMS: tuple[str, ...] = ("日本_cpu_" + "ab" * 115, "中国_cpu_" + "ab" * 115)
REPORTS = ("data_quality", "forecast_backtest", "capacity_risk")
HOURS = 7 * 24


def cpu_series(rng: np.random.Generator, offset: float) -> pd.DataFrame:
    """Hourly CPU rising towards the critical level (so every series is ranked at risk), with a
    6-hour gap (so every series is flagged in the data-quality report)."""
    stamps = pd.date_range("2024-05-01", periods=HOURS, freq="h", tz="UTC")
    trend = np.linspace(45.0, 86.0, HOURS) + offset
    daily = 3.0 * np.sin(np.arange(HOURS) / 24 * 2 * np.pi)
    values = trend + daily + rng.normal(0.0, 0.5, HOURS)
    frame = pd.DataFrame({"timestamp": stamps, "value": values.round(3)})
    return frame.drop(index=range(60, 66)).reset_index(drop=True)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("hostile")
    data = workdir / "input"
    data.mkdir()
    rng = np.random.default_rng(11)
    fleet = [
        cpu_series(rng, i * 0.2).assign(resource_id=rid, metric="cpu_utilization")
        for i, rid in enumerate(FLEET_IDS)
    ]
    pd.concat(fleet, ignore_index=True).to_parquet(data / FLEET_FILE, index=False)
    for i, stem in enumerate(FILE_STEMS):
        series = cpu_series(rng, -i)
        series.assign(timestamp=series["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(
            data / f"{stem}.csv", index=False
        )
    cfg = yaml.safe_load((CONFIGS / "tiny_local.yaml").read_text())
    cfg["data"]["path"] = str(data)
    cfg["report"] = {"top_n": 40, "sample_series": 2}
    cfg["models"] = {"enabled": ["predict_linear"]}
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    snakemake(workdir, "--cores", "2", "--configfile", str(config))
    return workdir


def all_ids() -> list[str]:
    return [*FLEET_IDS, *FILE_STEMS]


def test_reports_in_chromium_have_no_live_injection_and_show_ids_literally(
    hostile_run: Path,
    chromium: str,  # noqa: F811
) -> None:
    shown = {}
    for name in REPORTS:
        page = hostile_run / "results" / "reports" / f"{name}.html"
        dom = rendered_dom(chromium, page, hostile_run / "chromium-profile")
        assert live_injections(dom) == [], name
        # The offline template has no script at all: any script element would be injected.
        assert re.search(r"<script\b", dom, flags=re.IGNORECASE) is None, name
        shown[name] = shown_text(dom)
    quality, risk = shown["data_quality"], shown["capacity_risk"]
    for rid in all_ids():
        # Flagged (every series has a long gap) and ranked (every series rises): both pages
        # list every id, as its characters.
        assert as_shown(rid) in quality, rid
        assert as_shown(rid) in risk, rid
    for file in (FLEET_FILE, *(f"{stem}.csv" for stem in FILE_STEMS)):
        assert as_shown(file) in quality  # the reconciliation table names each source file
    # The Markdown headline names a hostile id as text.
    headline = risk[risk.index("First action") :][:600]
    assert any(as_shown(rid) in headline for rid in all_ids()), headline


def raw_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def text_cells_starting_a_formula(path: Path) -> list[str]:
    """Cells a spreadsheet would evaluate: text (not a number) starting with = + - @ tab CR."""
    header, *rows = raw_rows(path)
    found = []
    for cell in [*header, *(c for row in rows for c in row)]:
        if not cell.startswith(FORMULA_STARTERS):
            continue
        try:
            float(cell)
        except ValueError:
            found.append(cell)
    return found


def test_csvs_people_open_start_no_formula_and_read_back_exactly(hostile_run: Path) -> None:
    results = hostile_run / "results"
    csvs = [
        results / "risk" / "risk_report.csv",
        results / "risk" / "service_capacity.csv",
        results / "quality" / "data_quality.csv",
        results / "quality" / "reconciliation.csv",
        results / "backtest" / "leaderboard.csv",
    ]
    for path in csvs:
        assert text_cells_starting_a_formula(path) == [], path
    risk_csv = read_csv_table(results / "risk" / "risk_report.csv")
    risk_parquet = pd.read_parquet(results / "risk" / "risk_report.parquet")
    assert set(risk_parquet["resource_id"]) == set(all_ids())  # parquet: exact, nothing merged
    assert risk_csv["resource_id"].tolist() == risk_parquet["resource_id"].tolist()
    hyperlink = next(p for p in FLEET_IDS if p.startswith("=HYPERLINK"))
    cells = [row[0] for row in raw_rows(results / "risk" / "risk_report.csv")]
    assert "'" + hyperlink in cells and hyperlink not in cells
    quality = read_csv_table(results / "quality" / "data_quality.csv")
    assert set(quality["resource_id"]) == set(all_ids())
    assert set(quality["source_file"]) == {FLEET_FILE, *(f"{s}.csv" for s in FILE_STEMS)}
    header, *rows = raw_rows(results / "quality" / "reconciliation.csv")
    assert "'" + FLEET_FILE in {row[header.index("source_file")] for row in rows}


def test_hostile_file_names_get_safe_distinct_partitions(hostile_run: Path) -> None:
    results = hostile_run / "results"
    recon = read_csv_table(results / "quality" / "reconciliation.csv")
    assert recon["balanced"].all()
    assert (recon["rows_in"] == recon["rows_kept"] + recon["rows_quarantined"]).all()
    by_file = dict(zip(recon["source_file"], recon["partition"], strict=True))
    assert len(by_file) == len(FILE_STEMS) + 1 and len(set(by_file.values())) == len(by_file)
    detector = PeriodicityDetector()
    for file in (FLEET_FILE, *(f"{stem}.csv" for stem in FILE_STEMS)):
        name = by_file[file]
        assert name == partitions.partition_name(file)
        assert partitions.is_safe_name(name) and detector.is_periodic(name) is None
    assert by_file[f"{FILE_STEMS[0]}.csv"] != by_file[f"{FILE_STEMS[1]}.csv"]
    written = {p.name.split(".")[0] for p in (results / "raw").glob("*.parquet")}
    assert written == set(by_file.values())
