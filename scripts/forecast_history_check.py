"""Rule history_check: is the fleet's history long enough for the configured backtest? One line
naming the config key when it is not, before anything is scored (the leaderboard waits for it)."""

import json

from capforecast.forecast import history_check
from capforecast.rulekit import LOG, ensure_parent, run_rule


def main(smk) -> None:
    files = dict(zip(smk.params.partitions, smk.input.features, strict=True))
    result = history_check.check_fleet(files, smk.params.backtest, smk.params.freq)
    ensure_parent(smk.output.check)
    with open(smk.output.check, "w") as out:
        json.dump(result, out, indent=1)
    LOG.info(
        "longest series %s spans %d steps, the backtest needs %s",
        result["series"],
        result["steps"],
        result.get("needed"),
    )


run_rule(main, snakemake)
