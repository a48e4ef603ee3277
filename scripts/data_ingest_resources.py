"""Rule ingest_resources: the resources table, completed for every resource seen in the data."""

import pandas as pd

from capforecast.data import columnar, ingest
from capforecast.rulekit import LOG, ensure_parent, run_rule


def main(smk) -> None:
    table = smk.input.get("table")
    resources = ingest.read_resources_table(table, smk.params.catalogue) if table else None
    if smk.input.get("tables"):
        # data.source cloudwatch: EC2's description of each service's instances.
        resources = pd.concat([pd.read_parquet(path) for path in smk.input.tables])
    # The distinct ids of each partition (its dictionary), one partition at a time: never a
    # string per raw row of the whole fleet.
    seen: set[str] = set()
    for path in smk.input.raw:
        ids = columnar.read_parquet(path, columns=["resource_id"])["resource_id"]
        seen.update(columnar.present_categories(ids) if columnar.is_categorical(ids) else ids)
    completed = ingest.complete_resources(resources, seen)
    ensure_parent(smk.output.resources)
    completed.to_parquet(smk.output.resources, index=False)
    LOG.info(
        "%d resources (%d without an entry in a resources table: service 'unassigned')",
        len(completed),
        int((completed["service"] == "unassigned").sum()),
    )


run_rule(main, snakemake)
