"""Rule holdout_span: check data.history_end against the raw data's span before any cleaning."""

import json
from pathlib import Path

import pandas as pd

from capforecast.data import holdout
from capforecast.rulekit import LOG, ensure_parent, run_rule
from capforecast.settings import etl_settings
from capforecast.timestamps import timestamp_window


def main(smk) -> None:
    cut = holdout.cut_from_config(smk.params.cut)
    etl = etl_settings(smk.params.cut["etl"])
    window = timestamp_window(etl.timestamp_min, etl.timestamp_max)
    # One partition's timestamps at a time: its span and its rows at or after the cut.
    spans, held_back = [], {}
    for path in smk.input.raw:
        raw = pd.read_parquet(path, columns=["timestamp"])
        spans.append(holdout.data_span({Path(path).stem: raw}, window))
        held_back[Path(path).stem] = int(holdout.held_back_mask(raw, cut.history_end).sum())
    span = holdout.merge_spans(spans)
    holdout.check_cut(cut, span)
    record = holdout.span_record(cut, span, held_back)
    ensure_parent(smk.output.span)
    Path(smk.output.span).write_text(json.dumps(record, indent=2))
    LOG.info(
        "history ends %s, actuals until %s; %d raw rows held back",
        record["history_end"],
        record["actuals_end"],
        sum(held_back.values()),
    )


run_rule(main, snakemake)
