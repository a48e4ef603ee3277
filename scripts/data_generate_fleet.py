"""Rule generate_fleet: the synthetic resources table and the ground truth of what was injected."""

import json

from capforecast.config import validated_config
from capforecast.data import synth
from capforecast.rulekit import LOG, ensure_parent, run_rule


def main(smk) -> None:
    cfg = validated_config(
        {
            "synthetic": smk.params.synthetic,
            "catalogue": smk.params.catalogue,
            **smk.params.plan_settings,
        }
    )
    plan = synth.plan_fleet(cfg)
    ensure_parent(smk.output.resources, smk.output.ground_truth)
    synth.resources_table(plan).to_parquet(smk.output.resources, index=False)
    truth = synth.ground_truth(plan, cfg)
    with open(smk.output.ground_truth, "w") as fh:
        json.dump(truth, fh, indent=2, sort_keys=True)
    LOG.info("planned %d instances in %d services", len(plan), plan["service"].nunique())


run_rule(main, snakemake)
