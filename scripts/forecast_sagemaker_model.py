"""Rules backtest_sagemaker / forecast_sagemaker: one model's backtest or refit as a SageMaker
training job; its outputs are the files the local rule writes, plus a receipt JSON.

Where it runs (training.*, aws.*) is read from the config, not from params: moving a fit to
another instance type or bucket does not change what it computes.
"""

from pathlib import Path

from capforecast.aws import sagemaker_backend as backend
from capforecast.config import validated_config
from capforecast.forecast import fit, history_check
from capforecast.rulekit import LOG, run_rule


def main(smk) -> None:
    model, task = smk.wildcards.model, smk.params.task
    panel = fit.load_panel(smk.input.features)
    # Before paying for a job: a history too short for the backtest fails here, as locally.
    history_check.check_panel(panel, smk.params.backtest, smk.params.freq)
    cfg = validated_config(dict(smk.config))
    outputs = dict(smk.output.items())
    request = backend.TrainingRequest(
        model=model,
        task=task,
        feature_files=tuple(Path(f) for f in smk.input.features),
        job_config=backend.job_config(dict(smk.params.items())),
        output=Path(outputs.get("predictions") or outputs["forecast"]),
        receipt=Path(outputs["receipt"]),
        models_dir=Path(outputs["models"]) if "models" in outputs else None,
    )
    receipt = backend.run_training_job(
        request,
        backend.sagemaker_settings(cfg["training"], cfg["aws"]),
        cfg["aws"],
        progress=LOG.info,
    )
    LOG.info(
        "%s of %s ran as SageMaker training job %s (%s, %s billable seconds)",
        task,
        model,
        receipt["job_name"],
        receipt["instance_type"],
        receipt["billable_seconds"],
    )


run_rule(main, snakemake)
