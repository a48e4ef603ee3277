# Config validation, partitions and input functions shared by every rule file.
# The capforecast package is installed in the environment (`pip install -e .`, see Makefile).
import os
import re
from pathlib import Path

from capforecast.config import validated_config
from capforecast.errors import CapForecastError
from capforecast import code_digest as cf_code_digest
from capforecast.forecast import history_check as cf_history_check
from capforecast.forecast import shards as cf_shards
from capforecast.data import ingest as cf_ingest
from capforecast.data import partitions as cf_partitions
from capforecast.data import series_count as cf_series_count
from capforecast.forecast.models import model_settings
from capforecast.forecast.models import specs as cf_model_specs
from capforecast.aws import plan as cf_aws_plan

try:
    # Validate against config/schema.yaml and fill its defaults before any job is planned.
    config = validated_config(config)
    if config["data"]["source"] == "synthetic":
        # Its history length is known now; local data is checked by the first model jobs.
        cf_history_check.check_synthetic(config)
except CapForecastError as err:
    raise WorkflowError(f"Invalid configuration: {err}")


# The project: the per-rule conda envs (envs/*.yaml) install the package from it, the report
# notebooks find its results/ through it (the working directory may be elsewhere).
os.environ.update(CAPFORECAST_ROOT=str(workflow.basedir))

# Results on S3 (profiles/aws): the prefix must name a bucket, or every output would be read
# as a bucket of its own (results/...).
try:
    cf_aws_plan.check_storage_prefix(workflow.storage_settings)
except CapForecastError as err:
    raise WorkflowError(str(err))

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
# Which input file each series comes from (rules/data.smk), and the fleet's history against the
# backtest (rules/forecast.smk history_check): fleet-wide checks the leaderboard waits for.
SERIES_INDEX = "results/series_index.parquet"
HISTORY_CHECK = "results/backtest/history_check.json"


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
    if config["data"]["source"] in ("s3", "cloudwatch"):
        # Objects under an s3:// prefix, or CloudWatch services (capforecast/aws/plan.py).
        try:
            return cf_aws_plan.partition_sources(config, SKIPPED_FILES)
        except CapForecastError as err:
            raise WorkflowError(f"Cannot list the input files: {err}")
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
# A wildcard constraint nothing matches: routes a partition to one ingest rule, a model to its
# local or its SageMaker rules, and stands for the shard groups of a plan without any.
NO_MATCH = "(?!x)x"


# Job resources (threads, mem_mb, runtime in minutes) for every rule: what a scheduler (SLURM,
# AWS Batch, Kubernetes) reserves per job. Costs per family were measured by `make bench-speed`
# (1,000 series x 90 days hourly on 2 cores: baseline models 15-30 s, statsforecast 45-116 s,
# Prophet 400 s, each ~1.1-1.3 GiB peak), then doubled for slower nodes. A job that runs out of
# memory or time gets more on each retry (`retries:` in the cluster profiles): both scale with
# the attempt. Profiles can still override any rule (`set-resources`, `set-threads`).
DEFAULT_JOB_SERIES = 1000  # sizing when the number of series a job handles is not known
# kind: (threads, base MiB, MiB per 1,000 series, base minutes, minutes per 1,000 series).
# light: small tables (resources, series index, span); etl: per partition (generate, ingest,
# clean, features, holdout); aggregate: fleet-wide tables (quality, leaderboard, combine,
# risk, decision), each streamed a shard, partition or chunk at a time (2.6 GiB at most at
# 10,000 series, README "Scaling"); report: papermill + nbconvert; the others are the model
# families.
JOB_COSTS = {
    "light": (1, 2048, 0, 10, 0),
    "etl": (1, 2048, 2048, 10, 5),
    "aggregate": (1, 2048, 256, 10, 2),
    "report": (1, 3072, 1024, 15, 5),
    "baseline": (1, 2048, 1024, 10, 2),
    "statsforecast": (2, 2048, 1024, 10, 10),
    "prophet": (2, 2048, 1024, 10, 30),
    "autogluon": (2, 6144, 2048, 30, 30),
}


def job_threads(kind):
    """Threads of a job of this kind (a model family or light, etl, aggregate, report)."""
    return JOB_COSTS[kind][0]


def job_resources(kind, n_series=None):
    """mem_mb and runtime (minutes) of one job of this kind that handles `n_series` series
    (None: the whole fleet, sized for FLEET_SERIES or DEFAULT_JOB_SERIES; model jobs pass
    SHARD_SERIES). Memory is a whole number of GiB (AWS
    Batch accepts only its listed memory sizes) and both grow with the retry attempt."""
    _, base_mb, mb_per_k, base_min, min_per_k = JOB_COSTS[kind]
    series = n_series if n_series is not None else FLEET_SERIES or DEFAULT_JOB_SERIES
    mem_mb = max(base_mb, round((base_mb + mb_per_k * series / 1000) / 1024) * 1024)
    runtime = int(base_min + min_per_k * series / 1000)
    return {
        "mem_mb": lambda wildcards, attempt: mem_mb * attempt,
        "runtime": lambda wildcards, attempt: runtime * attempt,
    }


# len(capforecast.synth.METRICS), not imported: scipy would add 0.7 s to every DAG build
# (tests/test_profiles.py keeps them equal).
SYNTHETIC_METRICS_PER_INSTANCE = 5
# Local files' series counts, per working directory (capforecast.data.series_count).
SERIES_COUNT_CACHE = ".snakemake/capforecast/series_counts.json"


def _partition_series():
    """Partition -> the series it is planned for (None: not known, one shard): a synthetic
    service's instances x metrics, a local file's series counted now (cached), a CloudWatch
    service's instance_ids x metrics, else forecast.series_per_partition."""
    source = config["data"]["source"]
    if source == "synthetic":
        return {
            svc["name"]: svc["instances"] * SYNTHETIC_METRICS_PER_INSTANCE
            for svc in config["synthetic"]["services"]
        }
    if source == "local":
        return cf_series_count.file_series(
            PARTITION_SOURCES, config["data"], SERIES_COUNT_CACHE
        )
    return cf_aws_plan.planned_series(config, PARTITION_SOURCES)


PARTITION_SERIES = _partition_series()
# Series in the fleet when every partition's are known when planning, else None.
FLEET_SERIES = (
    sum(PARTITION_SERIES.values())
    if PARTITION_SERIES and None not in PARTITION_SERIES.values()
    else None
)


# The forecast stage's shard groups (capforecast.forecast.shards.shard_groups), fixed at plan
# time from each partition's planned series and forecast.shard_size: group -> its partitions
# and shard count. A partition of a shard or more (or of unknown size) is a group of its own,
# named after it, split into hash shards; partitions smaller than a shard are packed into
# groups "pack.<k>" of one shard each (k: a digest of the partition's name, so adding or
# removing a partition moves no other unless the number of packs changes). A model job
# handles the series of one group's features whose id hashes to its shard.
SHARD_GROUPS = cf_shards.shard_groups(
    PARTITION_SERIES, config["forecast"]["shard_size"]
)
# Series one model job is sized for (job_resources): the largest group's shard (a pack's
# series, a partition's shard up to shard_size), a shard when a group's size is not known.
SHARD_SERIES = cf_shards.job_series(
    SHARD_GROUPS, PARTITION_SERIES, config["forecast"]["shard_size"], DEFAULT_JOB_SERIES
)


def group_features(wildcards):
    """The feature files a model job of this group reads: its partition's, or every partition
    of its pack."""
    return [
        f"results/features/{partition}.parquet"
        for partition in SHARD_GROUPS[wildcards.group].partitions
    ]


def expand_shards(pattern):
    """`pattern` ({group}, {shard}, {model}) for every shard of every group and every enabled
    model."""
    return [
        pattern.format(group=group, shard=shard, model=model)
        for group, plan in SHARD_GROUPS.items()
        for shard in range(plan.n_shards)
        for model in MODELS
    ]


wildcard_constraints:
    partition="|".join(PARTITIONS) if PARTITIONS else "[A-Za-z0-9_-]+",
    # Exact group names ("pack.<k>" has a dot: escaped).
    group="|".join(re.escape(group) for group in SHARD_GROUPS) or NO_MATCH,
    model="[a-z_]+",
    shard="[0-9]+",


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


# data.source s3: every object is an input through the S3 storage plugin, so Snakemake
# compares its Last-Modified time with the outputs and downloads only what a job needs.
# Credentials: the standard AWS chain only (never a plugin setting).
if config["data"]["source"] == "s3":

    storage s3input:
        provider="s3",
        region=cf_aws_plan.region(config),
        endpoint_url=config["aws"]["endpoint_url"],
        retries=config["aws"]["max_attempts"],


def data_input(path):
    """An input users give: an s3:// object (data.source s3) through the plugin, else a
    local file, also when the results are in a default storage (profiles/aws)."""
    return storage.s3input(path) if str(path).startswith("s3://") else local(path)


def partition_source(wildcards):
    source = PARTITION_SOURCES[wildcards.partition]
    # The generator's outputs live where every output does.
    return source if config["data"]["source"] == "synthetic" else data_input(source)


# How a partition is ingested: a file (synthetic, local), an S3 object (errors name its URI)
# or a CloudWatch service (rules/data.smk: ingest_cloudwatch, not ingest_partition).
INGEST_SCRIPT = (
    "data_ingest_s3_object.py"
    if config["data"]["source"] == "s3"
    else "data_ingest_partition.py"
)
# Wildcard constraints that leave each partition to one ingest rule.
FILE_PARTITIONS = (
    NO_MATCH if config["data"]["source"] == "cloudwatch" else "|".join(PARTITIONS)
)
CLOUDWATCH_PARTITIONS = (
    "|".join(PARTITIONS) if config["data"]["source"] == "cloudwatch" else NO_MATCH
)
# data.source cloudwatch (rules/data.smk, ingest_cloudwatch): partition -> service, and the instant fetched
# up to (data.cloudwatch.end, else now rounded down to etl.freq).
CLOUDWATCH_SERVICES = cf_aws_plan.cloudwatch_services(PARTITION_SOURCES)
CLOUDWATCH_UNTIL = cf_aws_plan.cloudwatch_until(config)


def cloudwatch_service_settings(service):
    """data.cloudwatch with only this service in its list."""
    section = config["data"]["cloudwatch"]
    chosen = [svc for svc in section["services"] if svc["name"] == service]
    return {**section, "services": chosen}


def resources_source(wildcards):
    """The resources table users gave (local, s3), the generator wrote (synthetic) or
    EC2 described per CloudWatch service, if any."""
    if config["data"]["source"] == "synthetic":
        return {"table": f"{SYNTHETIC_DIR}/fleet/resources.parquet"}
    if config["data"]["source"] == "cloudwatch":
        return {
            "tables": expand_partitions("results/raw/{partition}.resources.parquet")
        }
    if config["data"]["resources"]:
        return {"table": data_input(config["data"]["resources"])}
    return {}


def family_models(family):
    """The models one family's local rules run (rules/forecast.smk), as a wildcard constraint:
    every model whose spec names the family (capforecast.forecast.models.specs; only the
    enabled ones are requested), none when training.backend.<family> is sagemaker (its
    SageMaker rules run them)."""
    if config["training"]["backend"][family] != "local":
        return NO_MATCH
    return "|".join(cf_model_specs.family_models(family))


def sagemaker_models(*families):
    """The models whose family runs on SageMaker (training.backend.<family>: sagemaker), of
    the given families (all when none is given), as a wildcard constraint."""
    chosen = families or cf_model_specs.FAMILIES
    models = [
        model
        for family in chosen
        if config["training"]["backend"][family] == "sagemaker"
        for model in cf_model_specs.family_models(family)
    ]
    return "|".join(models) if models else NO_MATCH


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
    """The settings that define the cut (capforecast.data.holdout.cut_from_config reads them) and
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
        # Absolute: the working directory (--directory) need not be the project. A source
        # file, never in the default storage (S3 in the cloud profiles).
        "notebook": local(
            str(Path(workflow.basedir) / "notebooks" / f"{wildcards.report}.ipynb")
        ),
    }
