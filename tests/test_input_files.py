"""Odd input files: every file is read or listed as skipped with its reason, compressed CSV is
read, NUL bytes stop ingest with a line naming where they are, and identifiers that pandas would
call missing or numbers (NA, null, None, nan, 0012) stay the names they are."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from capforecast.config import validated_config
from capforecast.csv_tables import read_csv_table
from capforecast.data import ingest, quality, resample, validate
from capforecast.errors import InputDataError
from capforecast.settings import data_settings, etl_settings

LONG_HEADER = "timestamp,resource_id,metric,value"
# Identifiers pandas reads as missing or as numbers by default.
NA_LIKE_IDS = ("NA", "null", "None", "nan", "N/A", "NULL", "#N/A", "<NA>")
NUMBER_LIKE_IDS = ("0012", "1e3", "007.50", "TRUE", "-0")


@pytest.fixture(scope="module")
def cfg() -> dict:
    return validated_config({"data": {"source": "local", "path": "unused"}})


def long_text(rows: list[tuple[str, str, str, str]]) -> str:
    return "\n".join([LONG_HEADER, *(",".join(row) for row in rows)]) + "\n"


def hourly_rows(resource: str, metric: str = "cpu_utilization", n: int = 3) -> list[tuple]:
    return [(f"2024-05-01T{h:02d}:00:00Z", resource, metric, f"{10 + h}") for h in range(n)]


def zstd_bytes(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as stream:
        stream.write(data)
    return sink.getvalue().to_pybytes()


# --------------------------------------------------------------------------- listing


def test_every_entry_of_the_folder_is_read_or_listed_with_its_reason(tmp_path):
    names = ["a.csv", "b.CSV.GZ", "c.csv.zst", "d.PARQUET", "e.pq", "README.md", "f.json"]
    for name in [*names, ".hidden.csv", "res.csv", "notes"]:
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    listing = ingest.scan_input_files(tmp_path, exclude=[tmp_path / "res.csv"])
    assert [f.name for f in listing.files] == [
        "a.csv",
        "b.CSV.GZ",
        "c.csv.zst",
        "d.PARQUET",
        "e.pq",
    ]
    reasons = {Path(f).name: reason for f, reason in listing.skipped}
    assert set(reasons) == {".hidden.csv", "README.md", "f.json", "notes", "res.csv", "sub"}
    assert reasons["README.md"].startswith("unsupported extension '.md'")
    assert reasons["notes"].startswith("unsupported extension '(none)'")
    assert reasons["res.csv"].startswith("the resources table")
    assert reasons["sub"].startswith("a directory")
    assert reasons[".hidden.csv"].startswith("hidden file")
    # Nothing read and nothing listed would be the silent drop this listing exists against.
    assert len(listing.files) + len(listing.skipped) == len(list(tmp_path.iterdir()))


def test_a_folder_with_nothing_to_read_names_what_it_skipped(tmp_path):
    (tmp_path / "metrics.xlsx").write_text("x")
    (tmp_path / "old.csv.bak").write_text("x")
    with pytest.raises(InputDataError, match=r"no input files found.*metrics\.xlsx: unsupported"):
        ingest.scan_input_files(tmp_path)


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("host1_cpu.csv.gz", "host1_cpu"),
        ("web.01.CSV.ZST", "web.01"),
        ("x.csv.zstd", "x"),
        ("m.parquet", "m"),
        ("notes.txt", "notes"),
    ],
)
def test_compressed_names_lose_their_whole_data_suffix(name, stem):
    # The stem names the partition and, for series files, the resource: "host1_cpu", never
    # "host1_cpu.csv" (so cpu.csv and cpu.csv.gz are one name, and collide as such).
    assert ingest.data_stem(name) == stem


# --------------------------------------------------------------------------- compressed CSV


@pytest.mark.parametrize(
    ("suffix", "compress"), [(".csv.gz", gzip.compress), (".csv.zst", zstd_bytes)]
)
def test_compressed_csv_reads_like_the_plain_file(tmp_path, cfg, suffix, compress):
    text = long_text(hourly_rows("vm-1") + hourly_rows("vm-2", "memory_utilization"))
    plain = tmp_path / "plain.csv"
    plain.write_text(text)
    packed = tmp_path / f"packed{suffix}"
    packed.write_bytes(compress(text.encode()))
    expected = ingest.read_input_file(plain, data_settings(cfg["data"]), etl_settings(cfg["etl"]))
    got = ingest.read_input_file(packed, data_settings(cfg["data"]), etl_settings(cfg["etl"]))
    pd.testing.assert_frame_equal(got, expected)


def test_compressed_series_file_takes_resource_and_metric_from_the_bare_stem(tmp_path, cfg):
    path = tmp_path / "host7_CPUUtilization.csv.gz"
    path.write_bytes(gzip.compress(b"timestamp,value\n2024-05-01 00:00:00,5\n"))
    result = ingest.ingest_file(path, data_settings(cfg["data"]))
    assert result.raw["resource_id"].tolist() == ["host7_CPUUtilization"]
    assert result.raw["metric"].tolist() == ["cpu_utilization"]


@pytest.mark.parametrize(
    ("suffix", "payload", "problem"),
    [
        # mtime=0: a gzip header holds its creation time, and pytest-xdist workers must collect
        # the same test ids.
        (".csv.gz", gzip.compress(LONG_HEADER.encode(), mtime=0)[:12], "not a readable gzip file"),
        (".csv.gz", b"plain text, not gzip\n", "not a readable gzip file"),
        (".csv.zst", b"\x28\xb5\x2f\xfd garbage", "not a readable zstd file"),
        (".csv.gz", gzip.compress(b"", mtime=0), "empty file"),
    ],
)
def test_corrupt_or_empty_compressed_files_are_one_line_errors(
    tmp_path, cfg, suffix, payload, problem
):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(payload)
    with pytest.raises(InputDataError, match=problem) as err:
        ingest.read_input_file(path, data_settings(cfg["data"]))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- NUL bytes


@pytest.mark.parametrize(
    ("body", "column", "row"),
    [
        (b"2024-05-01T00:00:00Z,vm\x001,cpu_utilization,5\n", "resource_id", 1),
        (
            b"2024-05-01T00:00:00Z,vm1,cpu_utilization,5\n2024-05-01T01:00:00Z,vm1,cpu\x00,6\n",
            "metric",
            2,
        ),
        (b"2024-05-01T00:00:00Z,vm1,cpu_utilization,5\x007\n", "value", 1),
        (b"2024-05-01T00:00:00Z,vm1,cpu_utilization,5\n\x00\x00\x00\x00", "timestamp", 2),
    ],
)
def test_a_nul_byte_stops_ingest_naming_line_and_column(tmp_path, cfg, body, column, row):
    # Without the check, "vm\x001" and "vm\x002" were both read as "vm": one phantom series.
    path = tmp_path / "nul.csv"
    path.write_bytes(LONG_HEADER.encode() + b"\n" + body)
    with pytest.raises(InputDataError, match="NUL byte") as err:
        ingest.read_input_file(path, data_settings(cfg["data"]))
    assert err.value.column == column and err.value.row == row
    assert f"line {row + 1} of the file" in str(err.value)


def test_a_nul_byte_in_a_compressed_file_or_a_parquet_id_is_caught_too(tmp_path, cfg):
    packed = tmp_path / "nul.csv.gz"
    packed.write_bytes(gzip.compress(LONG_HEADER.encode() + b"\n2024-05-01,a\x00b,cpu,1\n"))
    with pytest.raises(InputDataError, match="NUL byte"):
        ingest.read_input_file(packed, data_settings(cfg["data"]))
    table = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(["2024-05-01", "2024-05-01"], utc=True),
            "resource_id": ["vm1", "vm\x002"],
            "metric": ["cpu_utilization"] * 2,
            "value": [1.0, 2.0],
        }
    )
    parquet = tmp_path / "ids.parquet"
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), parquet)
    with pytest.raises(InputDataError, match="contains a NUL byte") as err:
        ingest.read_input_file(parquet, data_settings(cfg["data"]))
    assert err.value.column == "resource_id" and err.value.row == 2


def test_utf16_text_is_named_as_such(tmp_path, cfg):
    path = tmp_path / "utf16.csv"
    path.write_bytes(long_text(hourly_rows("vm1")).encode("utf-16"))
    with pytest.raises(InputDataError, match="UTF-16 text; save the file as UTF-8"):
        ingest.read_input_file(path, data_settings(cfg["data"]))


# --------------------------------------------------------------------------- ids stay text


@pytest.mark.parametrize("resource", [*NA_LIKE_IDS, *NUMBER_LIKE_IDS])
def test_na_and_number_like_ids_are_names_from_csv_to_quality_csv(tmp_path, cfg, resource):
    rows = hourly_rows(resource) + hourly_rows("vm-ok")
    path = tmp_path / "fleet.csv"
    path.write_text(long_text(rows))
    raw = ingest.read_input_file(path, data_settings(cfg["data"]), etl_settings(cfg["etl"]))
    assert set(raw["resource_id"]) == {resource, "vm-ok"}
    result = validate.validate_rows(raw, etl_settings(cfg["etl"]), path.name)
    assert result.counts["rows_quarantined"] == 0
    clean = resample.resample_series(result.kept, etl_settings(cfg["etl"]))
    table = quality.quality_table(result, clean, raw, etl_settings(cfg["etl"]), "fleet", path.name)
    table.to_csv(tmp_path / "quality.csv", index=False)
    back = read_csv_table(tmp_path / "quality.csv")
    assert sorted(back["resource_id"]) == sorted([resource, "vm-ok"])
    assert back.set_index("resource_id").loc[resource, "rows_kept"] == 3


def test_metric_names_spelled_like_missing_values_are_names_too(tmp_path, cfg):
    rows = [("2024-05-01T00:00:00Z", "vm1", name, "1") for name in ("NA", "null", "None")]
    path = tmp_path / "metrics.csv"
    path.write_text(long_text(rows))
    series = ingest.ingest_file(path, data_settings(cfg["data"])).series
    assert sorted(series["source_metric"]) == ["NA", "None", "null"]
    assert series["metric"].str.fullmatch(r"[a-z][a-z0-9_]*").all()
    assert series["metric"].nunique() == 3


@pytest.mark.parametrize("token", ["NA", "null", "NaN", "nan", "None", "N/A", "#N/A", ""])
def test_missing_value_and_timestamp_spellings_are_quarantined_not_errors(tmp_path, cfg, token):
    rows = [
        ("2024-05-01T00:00:00Z", "vm1", "cpu_utilization", "1"),
        ("2024-05-01T01:00:00Z", "vm1", "cpu_utilization", token),
        (token, "vm1", "cpu_utilization", "3"),
    ]
    path = tmp_path / "gaps.csv"
    path.write_text(long_text(rows))
    raw = ingest.read_input_file(path, data_settings(cfg["data"]))
    reasons = (
        validate.validate_rows(raw, etl_settings(cfg["etl"]), path.name)
        .quarantine["reason"]
        .tolist()
    )
    assert reasons == ["missing_value", "missing_timestamp"]


def test_resources_table_keeps_na_like_names_and_reads_na_numbers_as_missing(tmp_path, cfg):
    text = (
        "resource_id,service,instance_type,vcpu,region\n"
        "0012,None,m5.large,NA,NA\n"
        "null,web,N/A,4,eu-west-1\n"
    )
    path = tmp_path / "resources.csv"
    path.write_text(text)
    table = ingest.read_resources_table(path, cfg["catalogue"]).set_index("resource_id")
    assert list(table.index) == ["0012", "null"]
    assert table.loc["0012", "service"] == "None" and table.loc["0012", "region"] == "NA"
    assert table.loc["0012", "vcpu"] == cfg["catalogue"]["m5.large"]["vcpu"]
    assert table.loc["null", "instance_type"] is None
    assert table.loc["null", "vcpu"] == 4.0 and np.isnan(table.loc["null", "memory_gib"])
