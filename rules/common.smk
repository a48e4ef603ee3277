# Config validation, partitions and input functions shared by every rule file.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from capforecast.config import validated_config  # noqa: E402
from capforecast.errors import CapForecastError  # noqa: E402
from capforecast import code_digest as cf_code_digest  # noqa: E402
from capforecast import history_check as cf_history_check  # noqa: E402
from capforecast import ingest as cf_ingest  # noqa: E402
from capforecast import partitions as cf_partitions  # noqa: E402
from capforecast.models import MODEL_FAMILY, model_settings  # noqa: E402

try:
    # Validate against config/schema.yaml and fill its defaults before any job is planned.
    config = validated_config(config)
    if config["data"]["source"] == "synthetic":
        # Its history length is known now; local data is checked by the first model jobs.
        cf_history_check.check_synthetic(config)
except CapForecastError as err:
    raise WorkflowError(f"Invalid configuration: {err}")


SCRIPTS_DIR = Path(workflow.basedir) / "scripts"
PACKAGE_DIR = SCRIPTS_DIR / "capforecast"


def script_digest(script, notebook=None):
    """Digest of a script in scripts/ and of every library file it can run, i.e. its import
    closure in capforecast (lazy imports, package __init__ files and data files such as
    metric_names.yaml included), plus a notebook's imports (path relative to the project).

    Snakemake reruns a job when its script changes but not when a module that script imports
    changes; passed as the rule's `code` param, this digest makes exactly the rules that run an
    edited module rerun (capforecast.code_digest; tests/test_rerun_plan.py proves it).
    """
    files = [SCRIPTS_DIR / script]
    if notebook is not None:
        files.append(Path(workflow.basedir) / notebook)
    return cf_code_digest.script_digest(
        *files, package_dir=PACKAGE_DIR, root=workflow.basedir
    )


def config_keys(section, *keys):
    """Only these keys of a config section, for a rule whose script reads no others (editing
    another key must not rerun it)."""
    return {key: config[section][key] for key in keys}


SYNTHETIC_DIR = "results/synthetic"
# Which input file each series comes from; the model rules wait for it (rules/ingest.smk).
SERIES_INDEX = "results/series_index.parquet"


# Entries of data.path that are not read, with the reason (results/quality/skipped_files.csv).
SKIPPED_FILES = []


def _partition_sources():
    """Partition name -> the file it is ingested from (a service or an input file); what
    data.path holds but is not read goes to SKIPPED_FILES."""
    if config["data"]["source"] == "synthetic":
        return {
            svc["name"]: f"{SYNTHETIC_DIR}/{svc['name']}.parquet"
            for svc in config["synthetic"]["services"]
        }
    try:
        # A resources table kept next to the metrics is not a metrics file.
        exclude = [config["data"]["resources"]] if config["data"]["resources"] else []
        listing = cf_ingest.scan_input_files(config["data"]["path"], exclude=exclude)
        SKIPPED_FILES.extend(list(entry) for entry in listing.skipped)
        files = listing.files
        return {
            name: str(path)
            for name, path in cf_partitions.partition_names(files).items()
        }
    except CapForecastError as err:
        raise WorkflowError(f"Cannot list the input files: {err}")


PARTITION_SOURCES = _partition_sources()
PARTITIONS = sorted(PARTITION_SOURCES)
MODELS = list(config["models"]["enabled"])
# family -> its models, from the one registry in the library (one rule per family).
MODEL_FAMILIES = {}
for _model, _family in MODEL_FAMILY.items():
    MODEL_FAMILIES.setdefault(_family, []).append(_model)


wildcard_constraints:
    partition="|".join(PARTITIONS) if PARTITIONS else "[A-Za-z0-9_-]+",
    model="[a-z_]+",


def service_config(name):
    for svc in config["synthetic"]["services"]:
        if svc["name"] == name:
            return svc
    raise WorkflowError(f"unknown synthetic service '{name}'")


def fleet_settings():
    """Synthetic settings shared by all services (everything but the service list)."""
    return {k: v for k, v in config["synthetic"].items() if k != "services"}


def plan_settings():
    """Settings outside `synthetic` that shape the plan: the modelling step (the generator's
    horizon and thresholds are synthetic.* keys, so risk or forecast edits keep the fleet).
    """
    return {"etl": {"freq": config["etl"]["freq"]}}


def partition_source(wildcards):
    return PARTITION_SOURCES[wildcards.partition]


def resources_source(wildcards):
    """The resources table users gave (local) or the generator wrote (synthetic), if any."""
    if config["data"]["source"] == "synthetic":
        return {"table": f"{SYNTHETIC_DIR}/fleet/resources.parquet"}
    if config["data"]["resources"]:
        return {"table": config["data"]["resources"]}
    return {}


def _alternatives(models):
    """Model names as a wildcard constraint (never matches when there are none)."""
    return "|".join(models) if models else "(?!x)x"


def family_models(family):
    """Enabled models of one family that run here (training.backend.<family>: local)."""
    if config["training"]["backend"][family] != "local":
        return _alternatives([])
    return _alternatives([m for m in MODEL_FAMILIES[family] if m in MODELS])


def sagemaker_models(*families):
    """Enabled models whose family runs on SageMaker (training.backend.<family>: sagemaker),
    of the given families (all when none is given)."""
    chosen = families or tuple(MODEL_FAMILIES)
    return _alternatives(
        [
            model
            for model in MODELS
            if MODEL_FAMILY[model] in chosen
            and config["training"]["backend"][MODEL_FAMILY[model]] == "sagemaker"
        ]
    )


def expand_partitions(pattern):
    return expand(pattern, partition=PARTITIONS)


# Decision backtest (rules/decision.smk): data.history_end holds back the data after it.
HAS_CUT = config["data"]["history_end"] is not None
HOLDOUT_SPAN = "results/holdout/span.json"
DECISION_OUTPUTS = {
    "series_scores": "results/decision/series_scores.csv",
    "summary": "results/decision/summary.csv",
    "rightsizing": "results/decision/rightsizing_check.csv",
    "summary_json": "results/decision/summary.json",
}


def cut_settings():
    """The settings that define the cut (capforecast.holdout.cut_from_config reads them) and
    the plausible window the data's span is measured in."""
    etl_keys = ("freq", "timestamp_min", "timestamp_max")
    return {
        "data": {"history_end": config["data"]["history_end"]},
        "etl": {key: config["etl"][key] for key in etl_keys},
        "forecast": {"horizon": config["forecast"]["horizon"]},
    }


def holdout_span_input(wildcards):
    """Cleaning waits for the cut check: a bad data.history_end stops the run before any model."""
    return {"span": HOLDOUT_SPAN} if HAS_CUT else {}


def decision_inputs(wildcards):
    if not HAS_CUT:
        raise WorkflowError(
            "config key 'data.history_end': the decision backtest needs a cut; set it to an "
            "ISO timestamp (see config/schema.yaml) or run `make decision-backtest`"
        )
    return {
        "risk_report": rules.risk_report.output.report_parquet,
        "resources": rules.ingest_resources.output.resources,
        "clean": expand_partitions("results/clean/{partition}.parquet"),
        "actuals": expand_partitions("results/holdout/{partition}.parquet"),
        "holdout_reconciliation": expand_partitions(
            "results/holdout/{partition}.reconciliation.csv"
        ),
        "span": HOLDOUT_SPAN,
    }


def decision_settings():
    models = config["models"]
    return {
        "cut": cut_settings(),
        "percent_metrics": config["etl"]["percent_metrics"],
        "statistic": config["forecast"]["target"],
        # The predict_linear alert uses the project's predict_linear window.
        "predict_linear_window_hours": models["predict_linear_window_hours"],
        "catalogue": config["catalogue"],
    }


def decision_targets():
    return list(DECISION_OUTPUTS.values()) if HAS_CUT else []


def decision_report_inputs():
    if not HAS_CUT:
        return {}
    return {
        "decision_summary": DECISION_OUTPUTS["summary_json"],
        "decision_series_scores": DECISION_OUTPUTS["series_scores"],
        "decision_rightsizing": DECISION_OUTPUTS["rightsizing"],
    }


REPORT_NAMES = ["data_quality", "forecast_backtest", "capacity_risk"]


def report_targets():
    return [f"results/reports/{name}.html" for name in REPORT_NAMES]


def report_sources():
    """Inputs of each report notebook (rules.* exist once the rule files are included)."""
    return {
        "data_quality": {
            "quality": rules.quality.output.quality,
            "quarantine": rules.quality.output.quarantine,
            "reconciliation": rules.quality.output.reconciliation,
            "skipped_files": rules.quality.output.skipped_files,
            "clean": expand_partitions("results/clean/{partition}.parquet"),
        },
        "forecast_backtest": {
            "leaderboard": rules.leaderboard.output.leaderboard,
            "metrics": rules.leaderboard.output.metrics,
            "forecasts": rules.combine_forecasts.output.forecasts,
            "clean": expand_partitions("results/clean/{partition}.parquet"),
        },
        "capacity_risk": {
            "risk_report": rules.risk_report.output.report_parquet,
            "daily_breach": rules.risk_report.output.daily_breach,
            "service_capacity": rules.risk_report.output.service_capacity,
            "summary": rules.risk_report.output.summary,
            "forecasts": rules.combine_forecasts.output.forecasts,
            "clean": expand_partitions("results/clean/{partition}.parquet"),
            # The run's own decision backtest when it has held-back actuals.
            **decision_report_inputs(),
        },
    }


def report_settings(wildcards):
    """Validated settings a report shows (papermill parameters): the risk levels the
    capacity-risk report judged against; the others need none."""
    if wildcards.report != "capacity_risk":
        return {}
    return {key: config["risk"][key] for key in ("thresholds", "service_overrides")}


def report_inputs(wildcards):
    return {
        **report_sources()[wildcards.report],
        # Absolute: the working directory (--directory) need not be the project.
        "notebook": str(
            Path(workflow.basedir) / "notebooks" / f"{wildcards.report}.ipynb"
        ),
    }
