"""Series whose rows were all quarantined stay visible after the quality table: NaN forecast
rows flagged none (no_data) and a risk row saying no_data, never scored, sized or planned."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_risk import CPU, MEM, config, fan, flat, history, resources, row

from capforecast.contracts import series_id
from capforecast.errors import ForecastInputError
from capforecast.forecast import no_data
from capforecast.risk.assess import assess_risk


def quality(*rows: tuple[str, str, int]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["resource_id", "metric", "rows_kept"])


def with_ids(forecasts: pd.DataFrame) -> pd.DataFrame:
    keys = zip(forecasts["resource_id"], forecasts["metric"], strict=True)
    ids = [series_id(r, m) for r, m in keys]
    return forecasts.assign(series_id=ids, model_used="seasonal_naive_daily")


def fleet() -> pd.DataFrame:
    """r1 (CPU, memory) forecast from START; r2's CPU ends 3 hours earlier."""
    late = pd.Timestamp("2026-09-12", tz="UTC")
    return with_ids(
        pd.concat(
            [
                fan("r1", CPU, flat(40, 24), start=late),
                fan("r1", MEM, flat(50, 24), start=late),
                fan("r2", CPU, flat(30, 24), start=late - pd.Timedelta(hours=3)),
            ],
            ignore_index=True,
        )
    )


def test_forecast_rows_for_series_that_kept_no_row_on_the_fleet_timestamps():
    selected = fleet()
    table = quality(
        ("r1", CPU, 90),
        ("r1", "disk_used_percent", 0),  # r1 has other series
        ("NA", CPU, 0),  # a resource of its own, named like a missing value
        ("r2", CPU, 0),  # kept nothing in one file but has a forecast: left alone
    )
    rows = no_data.forecast_rows(table, selected)
    assert list(rows.columns) == list(selected.columns)
    assert sorted(set(rows["series_id"])) == ["NA|cpu_utilization", "r1|disk_used_percent"]
    assert rows.groupby("series_id").size().eq(24).all()
    r1 = list(selected.loc[selected["series_id"] == "r1|cpu_utilization", "timestamp"])
    for _, stamps in rows.groupby("series_id")["timestamp"]:
        assert list(stamps) == r1  # the latest-starting series' hours, not r2's earlier ones
    quantiles = [c for c in rows.columns if c.startswith("q")] + ["mean"]
    assert rows[quantiles].isna().all().all()
    assert set(rows["model_used"]) == {"none (no_data)"}
    assert set(rows["model"]) == {"selected"}


@pytest.mark.parametrize("kept", [1, 5000])
def test_no_rows_when_every_series_kept_data(kept):
    table = quality(("r1", CPU, kept), ("r1", MEM, kept))
    assert no_data.forecast_rows(table, fleet()).empty


def risk_inputs():
    selected = fleet()
    table = quality(("r1", CPU, 90), ("r1", MEM, 90), ("r2", CPU, 90))
    table = pd.concat([table, quality(("r1", "disk_used_percent", 0), ("r3", CPU, 0))])
    forecasts = pd.concat([selected, no_data.forecast_rows(table, selected)], ignore_index=True)
    past = pd.concat(
        [
            history("r1", CPU, [40.0], hours=336),
            history("r1", MEM, [50.0], hours=336),
            history("r2", CPU, [30.0], hours=336, lag_hours=3),
        ]
    )
    inventory = resources(("r1", "web", "mid.2x"), ("r2", "web", "mid.2x"), ("r3", "web", "mid.2x"))
    return forecasts, past, inventory


def test_risk_rows_say_no_data_and_are_never_scored_sized_or_planned():
    forecasts, past, inventory = risk_inputs()
    result = assess_risk(forecasts, past, inventory, config())
    report = result.risk_report
    assert len(report) == 5  # every series has its row
    alone = row(report, "r3", CPU)
    assert alone["finding"] == alone["metric_finding"] == "no_data"
    assert alone["risk_score"] == 0 and alone["sizing"] == "unsized"
    assert alone["reason_codes"] == "cpu_no_data"
    assert pd.isna(alone["last_observed"]) and np.isnan(alone["p_breach_critical"])
    assert alone["critical_threshold"] == 80  # the thresholds that would apply
    # A resource with live series keeps its own finding; every row names the missing dimension.
    disk = row(report, "r1", "disk_used_percent")
    cpu = row(report, "r1", CPU)
    assert disk["metric_finding"] == "no_data" and cpu["metric_finding"] != "no_data"
    assert disk["finding"] == cpu["finding"] != "no_data"
    assert disk["sizing"] == cpu["sizing"]
    for line in (disk, cpu, row(report, "r1", MEM)):
        assert line["reason_codes"].endswith(";disk_no_data")
    assert "no_data" not in row(report, "r2", CPU)["reason_codes"]
    # Not in the heatmap, nor counted as scored.
    assert set(result.daily_breach["resource_id"]) == {"r1", "r2"}
    summary = result.summary
    assert summary["findings"]["no_data"] == 1 and summary["scored_resources"] == 2
    assert summary["no_data_series"] == 2 and summary["stopped_series"] == 0
    assert summary["no_data"] == [
        {"resource_id": "r1", "metric": "disk_used_percent"},
        {"resource_id": "r3", "metric": CPU},
    ]
    plan = result.service_capacity.iloc[0]
    assert plan["instances_with_forecasts"] == 2  # r3's NaN rows carry no demand


def test_a_fleet_of_only_nan_forecasts_is_a_one_line_error():
    selected = fleet()
    nan = selected.assign(**{c: np.nan for c in selected.columns if c.startswith("q")})
    inventory = resources(("r1", "web", "mid.2x"), ("r2", "web", None))
    with pytest.raises(ForecastInputError, match="every selected forecast is NaN"):
        assess_risk(nan, history("r1", CPU, [1.0]), inventory, config())


@pytest.mark.parametrize("resource", ["vm-b", "vm-e"])  # with and without actuals after the cut
def test_the_decision_backtest_counts_a_series_without_data_as_not_scored(resource):
    import test_decision as case

    from capforecast.decision import scores as decision

    report = case.risk_report()
    empty = report["resource_id"] == resource
    report.loc[empty, ["metric_finding", "p_breach_critical", "eta_p50"]] = [
        "no_data",
        np.nan,
        pd.NaT,
    ]
    table = decision.series_scores(
        report,
        case.history(),
        case.actuals(),
        case.CUT,
        percent_metrics=[CPU, MEM],
        statistic="mean",
        predict_linear_window_hours=24,
    ).set_index("resource_id")
    assert table.loc[resource, "not_scored_reason"] == "no_data"
    assert not table.loc[resource, "scored"]
    assert table["scored"].sum() == (3 if resource == "vm-b" else 4)
