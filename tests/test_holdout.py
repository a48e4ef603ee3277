"""The history cut of the decision backtest (capforecast.data.holdout): config key, row accounting,
held-back actuals and the one-line errors of a cut outside the data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from capforecast.config import validated_config
from capforecast.data import holdout
from capforecast.data.quality import file_reconciliation
from capforecast.errors import ConfigError
from capforecast.settings import etl_settings
from capforecast.timestamps import timestamp_window

ETL = etl_settings(validated_config({})["etl"])
START = pd.Timestamp("2026-03-01", tz="UTC")
CUT = pd.Timestamp("2026-03-04", tz="UTC")


def raw_frame() -> pd.DataFrame:
    """5-minute CPU samples of one VM over 5 days, plus rows validation must quarantine."""
    stamps = pd.date_range(START, periods=5 * 288, freq="5min")
    values = 40 + 10 * np.sin(np.arange(len(stamps)) / 50.0)
    raw = pd.DataFrame(
        {"timestamp": stamps, "resource_id": "vm-1", "metric": "cpu_utilization", "value": values}
    )
    bad = pd.DataFrame(
        {
            "timestamp": [pd.NaT, CUT - pd.Timedelta(hours=1), CUT + pd.Timedelta(hours=2)],
            "resource_id": ["vm-1", "vm-1", "vm-1"],
            "metric": ["cpu_utilization"] * 3,
            "value": [50.0, np.nan, -1.0],
        }
    )
    # The bad rows sit in the middle of the file: quarantine rows must point at raw positions.
    return pd.concat([raw.iloc[:500], bad, raw.iloc[500:]], ignore_index=True)


def test_history_end_is_parsed_as_utc_and_must_sit_on_a_bin_boundary():
    assert holdout.parse_history_end(None, "1h") is None
    assert holdout.parse_history_end("2026-03-04", "1h") == CUT
    assert holdout.parse_history_end("2026-03-04T02:00:00+02:00", "1h") == CUT
    with pytest.raises(ConfigError, match=r"data\.history_end.*not on an etl\.freq \(1h\) bin"):
        holdout.parse_history_end("2026-03-04T00:30:00Z", "1h")
    with pytest.raises(ConfigError, match=r"data\.history_end.*not an ISO 8601 timestamp"):
        holdout.parse_history_end("next tuesday", "1h")


def test_config_accepts_an_unquoted_yaml_timestamp_and_rejects_a_bad_one():
    loaded = yaml.safe_load("data:\n  history_end: 2026-03-04T00:00:00Z\n")
    assert validated_config(loaded)["data"]["history_end"] == "2026-03-04T00:00:00+00:00"
    assert validated_config({})["data"]["history_end"] is None
    with pytest.raises(ConfigError, match=r"^config key 'data\.history_end': .*bin boundary"):
        validated_config({"data": {"history_end": "2026-03-04T00:10:00Z"}})


def test_every_row_is_kept_quarantined_or_held_back():
    raw = raw_frame()
    result, history, held_back = holdout.validate_history(raw, ETL, "vm-1.parquet", CUT)
    after_cut = (raw["timestamp"] >= CUT).sum()
    assert held_back == after_cut == 2 * 288 + 1
    assert len(history) == len(raw) - held_back
    assert result.kept["timestamp"].max() < CUT
    # The NaT row stays in the history and is quarantined there; the NaN one too.
    assert sorted(result.quarantine["reason"]) == ["missing_timestamp", "missing_value"]
    assert list(result.quarantine["row"]) == [500, 501]
    recon = holdout.reconciliation_with_held_back(
        file_reconciliation(result, "vm-1.parquet", "vm-1"), held_back
    )
    row = recon.iloc[0]
    assert row["rows_in"] == len(raw)
    assert row["rows_in"] == row["rows_kept"] + row["rows_quarantined"] + row["rows_held_back"]
    assert bool(row["balanced"])
    assert list(recon.columns).index("rows_held_back") == (
        list(recon.columns).index("rows_quarantined") + 1
    )


def test_without_a_cut_nothing_is_held_back():
    raw = raw_frame()
    result, history, held_back = holdout.validate_history(raw, ETL, "vm-1.parquet", None)
    assert held_back == 0 and len(history) == len(raw)
    assert result.counts["rows_quarantined"] == 3


def test_holdout_actuals_are_the_window_cleaned_like_the_history():
    raw = raw_frame()
    cut = holdout.Cut(history_end=CUT, freq=pd.Timedelta("1h"), horizon=24)
    actuals, result, accounting = holdout.holdout_actuals(raw, ETL, "vm-1.parquet", "vm-1", cut)
    assert actuals["timestamp"].min() == CUT
    assert actuals["timestamp"].max() == CUT + pd.Timedelta(hours=23)
    # Hourly means of the raw samples, computed independently.
    window = raw[(raw["timestamp"] >= CUT) & (raw["timestamp"] < cut.actuals_end)]
    window = window[window["value"] >= 0]
    expected = window.set_index("timestamp")["value"].resample("1h").mean()
    np.testing.assert_allclose(actuals["value"].to_numpy(), expected.to_numpy())
    row = accounting.iloc[0]
    assert row["rows_in"] == len(window) + 1  # + the negative value, quarantined
    assert row["rows_quarantined"] == 1
    assert list(result.quarantine["row"]) == [
        int(np.flatnonzero(raw["value"].to_numpy() == -1.0)[0])
    ]
    assert row["rows_beyond_horizon"] == (raw["timestamp"] >= cut.actuals_end).sum()
    assert row["rows_in"] + row["rows_beyond_horizon"] == (raw["timestamp"] >= CUT).sum()


def test_a_cut_outside_the_data_is_one_line_naming_the_key():
    span = holdout.data_span({"vm-1": raw_frame()})
    assert span.start == START
    freq = pd.Timedelta("1h")
    before = holdout.Cut(history_end=START, freq=freq, horizon=24)
    with pytest.raises(ConfigError) as err:
        holdout.check_cut(before, span)
    message = str(err.value)
    assert message.startswith("config key 'data.history_end': ")
    assert "no history" in message and "\n" not in message
    too_late = holdout.Cut(history_end=START + pd.Timedelta(days=4, hours=1), freq=freq, horizon=24)
    with pytest.raises(ConfigError, match=r"leaves 23 h of data after it, fewer than forecast"):
        holdout.check_cut(too_late, span)
    # The latest usable cut leaves exactly the horizon: accepted.
    holdout.check_cut(holdout.Cut(START + pd.Timedelta(days=4), freq, 24), span)


def test_a_raw_table_without_timestamps_cannot_be_cut():
    raw = raw_frame()
    empty = raw.assign(timestamp=pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]"))
    with pytest.raises(ConfigError, match="no timestamps"):
        holdout.check_cut(
            holdout.Cut(CUT, pd.Timedelta("1h"), 24), holdout.data_span({"vm-1": empty})
        )


@pytest.mark.parametrize(
    "strays",
    [
        ["2262-04-11 23:47:16"],  # how ingest reads 9999-12-31
        ["1970-01-01", "2100-01-02"],
        ["1677-09-21 00:12:44", "2262-04-11 23:47:16", "1999-12-31 23:59:00"],
    ],
)
def test_timestamps_outside_the_window_do_not_move_the_span_the_cut_is_checked_on(strays):
    """Validation quarantines them, so they must not look like history or actuals either."""
    raw = raw_frame()
    stray_rows = raw.iloc[: len(strays)].assign(
        timestamp=pd.to_datetime(strays).tz_localize("UTC").astype("datetime64[ns, UTC]")
    )
    with_strays = pd.concat([raw, stray_rows], ignore_index=True)
    window = timestamp_window(ETL.timestamp_min, ETL.timestamp_max)
    assert holdout.data_span({"vm-1": with_strays}, window) == holdout.data_span({"vm-1": raw})
    assert holdout.data_span({"vm-1": with_strays}) != holdout.data_span({"vm-1": raw})
    too_late = holdout.Cut(START + pd.Timedelta(days=4, hours=1), pd.Timedelta("1h"), 24)
    with pytest.raises(ConfigError, match=r"leaves 23 h of data after it"):
        holdout.check_cut(too_late, holdout.data_span({"vm-1": with_strays}, window))
