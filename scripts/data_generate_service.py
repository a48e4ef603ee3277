"""Rule generate_service: raw metrics of one synthetic service."""

from capforecast.config import validated_config
from capforecast.data import synth
from capforecast.rulekit import LOG, ensure_parent, run_rule, timed


def main(smk) -> None:
    cfg = validated_config(
        {
            "synthetic": {**smk.params.fleet, "services": [smk.params.service]},
            "catalogue": smk.params.catalogue,
            **smk.params.plan_settings,
        }
    )
    plan = synth.plan_fleet(cfg)
    with timed(f"generate {smk.wildcards.service}"):
        raw = synth.generate_service(plan, smk.wildcards.service, cfg)
    ensure_parent(smk.output.raw)
    raw.to_parquet(smk.output.raw, index=False)
    LOG.info("wrote %d rows for %d resources", len(raw), raw["resource_id"].nunique())


run_rule(main, snakemake)
