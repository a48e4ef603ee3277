"""Rules backtest_sagemaker / forecast_sagemaker: one model's backtest or refit of one shard as
a SageMaker training job; its outputs are the files the local rule writes, plus a receipt JSON.

Where it runs (training.*, aws.*) is read from the config, not from params: moving a fit to
another instance type or bucket does not change what it computes.
"""

import json
import tempfile
from pathlib import Path

from capforecast.aws import sagemaker_backend as backend
from capforecast.config import validated_config
from capforecast.forecast import shards
from capforecast.rulekit import LOG, run_rule


def main(smk) -> None:
    model, task = smk.wildcards.model, smk.params.task
    wc = smk.wildcards
    panel = shards.load_shard(smk.input.features, wc.shard, smk.params.n_shards)
    outputs = dict(smk.output.items())
    output = Path(outputs.get("predictions") or outputs["forecast"])
    if shards.write_if_empty(panel, output, outputs.get("models")):
        # Nothing to train: no job is paid for, the receipt says so.
        Path(outputs["receipt"]).write_text(json.dumps({"job_name": None, "series": 0}))
        return
    cfg = validated_config(dict(smk.config))
    with tempfile.TemporaryDirectory() as staging:
        # The job trains on this shard's series only (of one partition, or of a pack's):
        # its panel is the job's feature file.
        features = Path(staging) / f"{wc.group}.parquet"
        panel.to_parquet(features, index=False)
        request = backend.TrainingRequest(
            model=model,
            task=task,
            feature_files=(features,),
            job_config=backend.job_config(dict(smk.params.items())),
            output=output,
            receipt=Path(outputs["receipt"]),
            models_dir=Path(outputs["models"]) if "models" in outputs else None,
            shard=f"{wc.group}/{wc.shard}",
        )
        receipt = backend.run_training_job(
            request,
            backend.sagemaker_settings(cfg["training"], cfg["aws"]),
            cfg["aws"],
            progress=LOG.info,
        )
    LOG.info(
        "%s of %s (shard %s/%s) ran as SageMaker training job %s (%s, %s billable seconds)",
        task,
        model,
        smk.wildcards.group,
        smk.wildcards.shard,
        receipt["job_name"],
        receipt["instance_type"],
        receipt["billable_seconds"],
    )


run_rule(main, snakemake)
