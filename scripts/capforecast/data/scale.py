"""Percentages given on a 0-1 scale: decide per series, convert x100, say so.

A series that stays within 0-1 is either a fraction or a genuinely idle resource: an idle VM
reads 0.3 % CPU for weeks (CPU stays <= 1 % in 8-11 % of the one- to four-week windows of the
real Bitbrains VMs, some at 0.9 % nearly all the time; idle NAB EC2 instances sit at 0.1 %).
No statistic of one series can tell the two apart: fraction data is percent data / 100, and
every shape statistic is the same after a rescale. So a series is converted only on evidence
from outside its own values (``etl.fraction_scale``):

* ``never``: nothing is converted. ``always``: every percentage series is (values above 1.05
  then fail validation's 0-100 check, loudly).
* ``auto``, in this order:
  1. the source name declares the scale (``scale: fraction`` in the metric-name map, e.g.
     Prometheus ``instance:node_cpu_utilisation:rate5m``; or ``scale: percent``): converted
     when the values fit the 0-1 scale (at most 0.1 % of them above 1.1; a "fraction" reading
     45 was exported as percent already);
  2. otherwise the resource's percentage series in the same file decide together (one exporter,
     one convention). Converted only when all of these hold: at least two different percentage
     metrics (CPU and memory, say) have non-zero values; every one of them fits the 0-1 scale
     (as in 1); their samples span at least a day; and one of them is clearly running on that
     scale (median above 0, 90th percentile >= 0.05 and range >= 0.05: a tenth of the time at
     5 % load or more). One series off the 0-1 scale puts all of them on the percent scale;
  3. anything else that fits 0-1 with non-zero values (a lone CPU series, a VM that is mostly
     off) is read as percent and flagged ``ambiguous``: set ``etl.fraction_scale`` or a
     ``scale`` in ``data.metric_names`` if it is a fraction.

Measured on the Bitbrains development set (60 real VMs, CPU and memory in percent, 3 months),
each VM cut into windows of 2, 3, 7, 14, 28 and 91 days (5,925 resource-windows): rule 2
converts none of the real windows, and 66-80 % of the same windows divided by 100 (73 % of the
week windows). The ones it leaves are idle or mostly-off VMs (whose small values read about as
idle either way), VMs with one non-zero percentage metric (bb-vm274 reports memory 0) and
windows with more than 0.1 % of readings above 110 %; 11 of the 754 week windows among them
had a true P90 of 20 % or more. tests/test_scale.py replays this.

Missing an idle fraction series costs little (0.003 read as 0.003 % is as idle as 0.3 %); the
rules are built never to turn an idle VM's 0.9 % into a busy 90 %. The 1.1 ceiling leaves room
for VMware's CPU readings slightly above 100 %; validation then clips or quarantines those.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capforecast.data import columnar
from capforecast.data.validate import PERCENT_CEILING, SeriesCodes, series_codes, timestamps_ns
from capforecast.metric_names import SCALE_FRACTION, SCALE_PERCENT
from capforecast.settings import EtlSettings
from capforecast.timestamps import timestamp_window

MODE_AUTO = "auto"
MODE_NEVER = "never"
MODE_ALWAYS = "always"

# Decisions (contracts.INGEST_SERIES_COLUMNS "scale" / "scale_evidence").
AMBIGUOUS = "ambiguous"
EVIDENCE_NAME = "name"
EVIDENCE_VALUES = "values"
EVIDENCE_CONFIG = "config"

# Largest value of a 0-1 series: 1 plus room for readings slightly above 100 %
# (Bitbrains VMware CPUs reach 107 %; with 1.05, 7 % of the divided-by-100 week windows of busy
# VMs stayed unconverted, with 1.1 under 2 %, and still no real window was converted).
FRACTION_CEILING = 1.1
# Share of a series' values allowed above the ceiling while it still "fits" the 0-1 scale:
# glitches. Real Bitbrains memory series carry 1-16 readings of up to 4,600 % in 17-33 k
# samples; one such row must not keep a whole fraction series unconverted (converted, it is
# quarantined as percent_above_range, visibly).
GLITCH_SHARE = 0.001
# "Clearly running on the 0-1 scale" (rule 2). A median above 0 excludes a VM that is off most
# of the time (Bitbrains bb-vm238: memory 0 three quarters of the time, else up to 1.03 %);
# the range excludes a stuck constant reading; the span ("for long") excludes fragments (a
# 2-hour piece of an idle VM, CPU 0.37 % and memory 0-1 %, passed the other tests).
BUSY_QUANTILE = 0.9
BUSY_LEVEL = 0.05
BUSY_RANGE = 0.05
MIN_EVIDENCE_HOURS = 24.0
_NS_PER_HOUR = 3_600 * 10**9
SCALE_COLUMNS: tuple[str, ...] = (
    "resource_id",
    "metric",
    "scale",
    "scale_evidence",
    "rows_rescaled",
)


def _series_stats(
    code: np.ndarray,
    values: np.ndarray,
    raw: pd.DataFrame,
    n_series: int,
    window: tuple[pd.Timestamp, pd.Timestamp],
) -> pd.DataFrame:
    """Per series code: usable samples (finite, >= 0), how many are above 0 and how many above
    FRACTION_CEILING; for series that fit the 0-1 scale (see ``decide_scales``) also the median,
    BUSY_QUANTILE ("upper"), min and max ("top") of their values up to the ceiling and their
    first/last timestamp in ns inside ``window`` (etl.timestamp_min/max: a stray 1970 sample,
    which validation quarantines, must not make two hours of data span decades). Only the
    fitting series' rows go through pandas: usually none."""
    with np.errstate(invalid="ignore"):
        usable = (code >= 0) & np.isfinite(values) & (values >= 0)
        above = usable & (values > FRACTION_CEILING)
        positive = usable & (values > 0)
    stats = pd.DataFrame(
        {
            "size": np.bincount(code[usable], minlength=n_series),
            "positive": np.bincount(code[positive], minlength=n_series),
            "above": np.bincount(code[above], minlength=n_series),
        }
    )
    fits = (stats["size"] > 0) & (stats["above"] <= GLITCH_SHARE * stats["size"])
    rows = np.flatnonzero(usable & ~above & fits.to_numpy()[np.clip(code, 0, None)])
    stamps, missing = timestamps_ns(raw.iloc[rows])
    small = pd.DataFrame({"code": code[rows], "value": values[rows]})
    grouped = small.groupby("code")["value"]
    spread = grouped.agg(median="median", min="min", top="max")
    spread["upper"] = grouped.quantile(BUSY_QUANTILE)
    dated = ~missing & (stamps >= window[0].value) & (stamps <= window[1].value)
    dated = pd.DataFrame({"code": code[rows][dated], "ts": stamps[dated]})
    span = dated.groupby("code")["ts"].agg(first="min", last="max")
    return stats.join(spread).join(span)


def decide_scales(
    raw: pd.DataFrame,
    declared: pd.DataFrame,
    etl: EtlSettings,
    codes: SeriesCodes | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Decide the scale of every series of ``raw`` (contracts.RAW_COLUMNS, one file).

    ``declared``: resource_id, metric, declared_scale (SCALE_* or None) per series, from the
    source names. ``etl`` needs percent_metrics, fraction_scale, timestamp_min and
    timestamp_max.
    Returns the per-series table (SCALE_COLUMNS; every keyed series, non-percentage ones with an
    empty scale) and a boolean mask of the raw rows to multiply by 100. ``codes``: the rows'
    series codes when the caller has them (ingest does), else they are computed.
    """
    codes = series_codes(raw) if codes is None else codes
    n_met = max(len(codes.metric_names), 1)
    n_series = len(codes.resource_names) * n_met
    keyed = codes.code >= 0
    present = columnar.distinct(codes.code[keyed], n_series)
    rid, met = codes.names(present)
    table = pd.DataFrame({"resource_id": rid, "metric": met}, index=present)
    table = table.merge(declared, on=["resource_id", "metric"], how="left").set_index(present)

    percent = table["metric"].isin(list(etl.percent_metrics)).to_numpy()
    values = raw["value"].to_numpy(dtype="float64")
    # Only percentage rows are judged: the others get code -1 here.
    percent_names = np.isin(codes.metric_names, list(etl.percent_metrics))
    judged_rows = np.append(percent_names, False)[codes.row_metric]
    judged_code = np.where(judged_rows, codes.code, -1)
    window = timestamp_window(etl.timestamp_min, etl.timestamp_max)
    stats = _series_stats(judged_code, values, raw, n_series, window).reindex(present)
    # All zeros read the same on either scale: nothing to decide.
    has_values = (stats["positive"] > 0).to_numpy()
    fits = has_values & (stats["above"] <= GLITCH_SHARE * stats["size"]).to_numpy()
    busy = fits & (stats["median"] > 0).to_numpy() & (stats["upper"] >= BUSY_LEVEL).to_numpy()
    busy &= ((stats["top"] - stats["min"]) >= BUSY_RANGE).to_numpy()

    scale = np.where(percent, SCALE_PERCENT, "").astype(object)
    evidence = np.full(len(table), "", dtype=object)
    mode = str(etl.fraction_scale)
    if mode != MODE_AUTO:
        scale[percent] = SCALE_FRACTION if mode == MODE_ALWAYS else SCALE_PERCENT
        evidence[percent] = EVIDENCE_CONFIG
    else:
        said = table["declared_scale"].to_numpy(dtype=object)
        named = percent & pd.notna(said)
        scale[named] = np.where(
            (said[named] == SCALE_FRACTION) & fits[named], SCALE_FRACTION, SCALE_PERCENT
        )
        evidence[named] = np.where(
            (said[named] == SCALE_FRACTION) & ~fits[named], EVIDENCE_VALUES, EVIDENCE_NAME
        )
        judged = percent & ~named & has_values
        groups = pd.DataFrame(
            {
                "resource_id": table["resource_id"].to_numpy()[judged],
                "metric": table["metric"].to_numpy()[judged],
                "fits": fits[judged],
                "busy": busy[judged],
                "first": stats["first"].to_numpy()[judged],
                "last": stats["last"].to_numpy()[judged],
            }
        ).groupby("resource_id")
        all_fit = groups["fits"].transform("all").to_numpy(dtype=bool)
        any_busy = groups["busy"].transform("any").to_numpy(dtype=bool)
        metrics = groups["metric"].transform("nunique").to_numpy()
        span = groups["last"].transform("max") - groups["first"].transform("min")
        long_enough = span.to_numpy(dtype="float64") >= MIN_EVIDENCE_HOURS * _NS_PER_HOUR
        converted = all_fit & any_busy & (metrics >= 2) & long_enough
        scale[judged] = np.where(
            converted, SCALE_FRACTION, np.where(all_fit, AMBIGUOUS, SCALE_PERCENT)
        )
        evidence[judged] = EVIDENCE_VALUES

    table["scale"] = scale
    table["scale_evidence"] = evidence
    to_convert = np.zeros(n_series, dtype=bool)
    to_convert[present[scale == SCALE_FRACTION]] = True
    rows = np.zeros(len(raw), dtype=bool)
    rows[keyed] = to_convert[codes.code[keyed]]
    counted = rows & ~np.isnan(values)
    table["rows_rescaled"] = (
        pd.Series(codes.code[counted]).value_counts().reindex(present, fill_value=0).to_numpy()
    ).astype("int64")
    return table.loc[:, list(SCALE_COLUMNS)].reset_index(drop=True), rows


def rescale(raw: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """``raw`` with the values of ``rows`` multiplied by 100 (0-1 scale -> percent)."""
    if not rows.any():
        return raw
    values = raw["value"].to_numpy(dtype="float64").copy()
    values[rows] *= PERCENT_CEILING
    return raw.assign(value=values)
