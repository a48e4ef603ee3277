"""Rule ingest_partition: one source file -> raw long format, every row kept."""

from pathlib import Path

from capforecast import ingest
from capforecast.rulekit import LOG, ensure_parent, run_rule


def main(smk) -> None:
    raw = ingest.read_input_file(Path(smk.input.source), smk.params.data)
    ensure_parent(smk.output.raw)
    raw.to_parquet(smk.output.raw, index=False)
    LOG.info(
        "%s: %d rows, %d series",
        smk.input.source,
        len(raw),
        raw.groupby(["resource_id", "metric"]).ngroups,
    )


run_rule(main, snakemake)
