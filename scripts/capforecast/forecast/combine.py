"""The fleet's final forecasts: the calibrated ``selected`` forecast next to every candidate's,
combined one shard at a time.

Every step is per series (the selection's weights, the calibration factors, the bounds), so a
shard combined alone gives the rows the whole fleet would. Each shard's rows are set aside on
disk as Arrow and written into one Parquet file at the end: the fleet's forecasts (models x
series x horizon, most of them strings in pandas) are never in memory at once.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from capforecast.forecast import no_data, shards
from capforecast.forecast.evaluate import combine_selected
from capforecast.forecast.panel import series_bounds
from capforecast.forecast.selection import SELECTED
from capforecast.settings import ForecastSettings

_KEYS = ["series_id", "resource_id", "metric"]


@dataclass
class CombineSummary:
    """What the combined file holds: series with a ``selected`` forecast, series without data
    (NaN rows), and the models forecast."""

    series: int = 0
    without_data: int = 0
    models: set[str] = field(default_factory=set)


def forecast_files_by_shard(paths: Iterable[str | Path]) -> list[list[Path]]:
    """Final-forecast files (``.../{group}/{shard}/{model}.parquet``) grouped by shard, in a
    stable order."""
    by_shard: dict[tuple[str, int], list[Path]] = {}
    for path in map(Path, paths):
        by_shard.setdefault((path.parent.parent.name, int(path.parent.name)), []).append(path)
    return [sorted(files) for _, files in sorted(by_shard.items())]


def combine_shard(
    forecasts: pd.DataFrame,
    selection_table: pd.DataFrame,
    calibration_table: pd.DataFrame,
    forecast_cfg: ForecastSettings,
    percent_metrics: Sequence[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One shard's ``selected`` rows and its candidates' rows (every model's forecast).

    ``selection_table`` and ``calibration_table`` are the fleet's (a series' rows are its own,
    and the pooled factors and the combination rule are fleet-wide).
    """
    candidates = {
        str(model): frame.reset_index(drop=True)
        for model, frame in forecasts.groupby("model", sort=False)
    }
    keys = forecasts[_KEYS].drop_duplicates("series_id")
    selected = combine_selected(
        candidates,
        selection_table,
        calibration_table,
        forecast_cfg,
        bounds=series_bounds(keys, percent_metrics),
    )
    selected = selected.drop(columns=["resource_id", "metric"], errors="ignore").merge(
        keys, on="series_id", how="left", validate="many_to_one"
    )
    selected["model"] = SELECTED
    return selected, pd.concat(candidates.values(), ignore_index=True)


def combine_forecast_files(
    forecast_files: Iterable[str | Path],
    selection_table: pd.DataFrame,
    calibration_table: pd.DataFrame,
    quality: pd.DataFrame,
    output: str | Path,
    *,
    forecast_cfg: ForecastSettings,
    percent_metrics: Sequence[str],
) -> CombineSummary:
    """Write ``output``: every shard's ``selected`` rows (then NaN ``selected`` rows for the
    series of ``quality`` that kept no row, on the fleet's forecast timestamps), then every
    candidate's rows. One shard in memory at a time."""
    summary = CombineSummary()
    known: list[pd.DataFrame] = []
    latest = no_data.LatestStamps()
    with tempfile.TemporaryDirectory(prefix="capforecast-combine-") as spill:
        selected_parts: list[Path] = []
        candidate_parts: list[Path] = []
        for files in forecast_files_by_shard(forecast_files):
            forecasts = shards.read_shards(files)
            if forecasts.empty:
                continue
            selected, candidates = combine_shard(
                forecasts, selection_table, calibration_table, forecast_cfg, percent_metrics
            )
            del forecasts
            known.append(selected[["resource_id", "metric"]].drop_duplicates())
            latest.add(selected)
            summary.series += selected["series_id"].nunique()
            summary.models.update(candidates["model"].astype(str).unique())
            selected_parts.append(_spill(selected, Path(spill), len(selected_parts), "selected"))
            candidate_parts.append(
                _spill(candidates, Path(spill), len(candidate_parts), "candidates")
            )
        # Without any forecast there are no timestamps to give the series without data.
        if selected_parts:
            schema = pq.read_schema(selected_parts[0])
            empty = no_data.missing_series_rows(
                quality, pd.concat(known, ignore_index=True), latest.stamps(), schema.names
            )
            if len(empty):
                summary.without_data = empty["series_id"].nunique()
                # Typed as the forecasts' rows (a NaN flag column is a null bool, not a float).
                path = Path(spill) / "selected-no-data.parquet"
                pq.write_table(pa.Table.from_pandas(empty, preserve_index=False).cast(schema), path)
                selected_parts.append(path)
        _write_parts([*selected_parts, *candidate_parts], Path(output))
    if summary.series or summary.without_data:
        summary.models.add(SELECTED)
    return summary


def _spill(frame: pd.DataFrame, directory: Path, index: int, kind: str) -> Path:
    path = directory / f"{kind}-{index:05d}.parquet"
    frame.to_parquet(path, index=False)
    return path


def _write_parts(parts: Sequence[Path], output: Path) -> None:
    """Concatenate Parquet parts into ``output`` one part at a time, on their unified schema
    (a column all null in one shard takes its type from the others)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if not parts:
        pd.DataFrame().to_parquet(output, index=False)
        return
    schemas = [pq.read_schema(p) for p in parts]
    schema = pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive")
    with pq.ParquetWriter(output, schema) as writer:
        for part in parts:
            table = pq.read_table(part).replace_schema_metadata(None)
            missing = [f for f in schema if f.name not in table.column_names]
            for column in missing:
                table = table.append_column(column, pa.nulls(len(table), column.type))
            writer.write_table(table.select(schema.names).cast(schema))
