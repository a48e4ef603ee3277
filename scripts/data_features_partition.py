"""Rule features_partition: the model-ready panel of one partition."""

import pandas as pd

from capforecast.data import features
from capforecast.rulekit import LOG, ensure_parent, run_rule


def main(smk) -> None:
    clean = pd.read_parquet(smk.input.clean)
    panel = features.build_features(clean, target=smk.params.target)
    ensure_parent(smk.output.features)
    panel.to_parquet(smk.output.features, index=False)
    LOG.info("%d series, %d rows", panel["series_id"].nunique(), len(panel))


run_rule(main, snakemake)
