"""Reruns: exactly what changed. A finished run of the tiny fleet (decision backtest on), then
every library file perturbed in turn and one setting per config section changed: `snakemake -n`
must plan exactly the expected jobs.

Two things are checked per change: the jobs Snakemake reruns *because their params changed*
(the code digest of rules/common.smk `script_digest`, or a setting the rule reads) equal the
expected direct users, so a digest missing a module fails here even when the rule would rerun
anyway downstream of another one; and the whole plan is those jobs plus everything downstream
of them (the DAG below).
"""

from __future__ import annotations

import csv
import os
import pprint
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake_session import SnakemakeSession

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
TINY = ROOT / "tests" / "configs" / "tiny_synthetic.yaml"
# What the workflow needs from the project (the copy is perturbed, never the project).
COPIED = ("Snakefile", "rules", "scripts", "config", "notebooks", "envs", "profiles", "report")

pytestmark = pytest.mark.slow

# Jobs are named by rule, plus the model or report they make (the three reports import
# different modules); per-partition and per-service jobs are counted under their rule, model
# jobs (one per shard group, shard and model) under their rule and model.
BACKTESTS = {
    "backtest_baseline:seasonal_naive_daily",
    "backtest_baseline:predict_linear",
    "backtest_statsforecast:theta",
}
FORECASTS = {
    "forecast_baseline:seasonal_naive_daily",
    "forecast_baseline:predict_linear",
    "forecast_statsforecast:theta",
}
MODEL_JOBS = BACKTESTS | FORECASTS
DQ, FB, CR = (f"render_report:{r}" for r in ("data_quality", "forecast_backtest", "capacity_risk"))
REPORTS = {DQ, FB, CR}
GENERATE = {"generate_service", "generate_fleet"}
# Jobs per key in a full run: three services / partitions, and one shard of the whole fleet per
# model (forecast.shard_size is larger than the fleet: the three services are one pack,
# capforecast.forecast.shards.shard_groups).
PER_PARTITION = {
    "generate_service",
    "ingest_partition",
    "clean_partition",
    "holdout_partition",
    "features_partition",
}
SHARDS = 1

# Who reads whose outputs (rules/*.smk with data.history_end set).
DOWNSTREAM: dict[str, set[str]] = {
    "generate_service": {"ingest_partition"},
    "generate_fleet": {"ingest_resources"},
    "ingest_partition": {
        "ingest_resources",
        "series_index",
        "holdout_span",
        "holdout_partition",
        "clean_partition",
    },
    "ingest_resources": {"quality", "risk_report", "decision_scores"},
    # Fleet-wide checks: only the leaderboard waits for them (a model job that did would rerun,
    # or with ancient() be masked, whenever any partition changes).
    "series_index": {"leaderboard"},
    "holdout_span": {"clean_partition", "holdout_partition"},
    "holdout_partition": {"decision_scores"},
    "clean_partition": {"quality", "features_partition", "risk_report", "decision_scores"}
    | REPORTS,
    "quality": {"combine_forecasts", "risk_report", DQ},
    "features_partition": MODEL_JOBS | {"history_check", "leaderboard"},
    "history_check": {"leaderboard"},
    **{job: {"leaderboard"} for job in BACKTESTS},
    **{job: {"combine_forecasts"} for job in FORECASTS},
    "leaderboard": {"combine_forecasts", FB},
    "combine_forecasts": {"risk_report", FB, CR},
    "risk_report": {"decision_scores", CR},
    "decision_scores": {CR},
}

EVERYTHING = (
    GENERATE
    | {"ingest_partition", "ingest_resources", "series_index"}
    | {"holdout_span", "holdout_partition", "clean_partition", "quality", "features_partition"}
    | {"history_check"}
    | MODEL_JOBS
    | {"leaderboard", "combine_forecasts", "risk_report", "decision_scores"}
    | REPORTS
)
EVALUATION = BACKTESTS | {"leaderboard", "combine_forecasts"}
TRAINING = MODEL_JOBS | {"leaderboard", "combine_forecasts"}

# Library file -> jobs whose code digest must change when it changes (the scripts, and the
# report notebooks, that import it directly or not). Importing any capforecast.forecast.models
# module runs models/__init__.py, whose model specs name every model's core module (imported
# when that model runs), so every model module counts; config.py imports no stage module (the
# generator validates its config with it, so an ETL or risk edit does not regenerate the fleet).
ETL = {"ingest_partition", "ingest_resources", "series_index"}
CUTTING = {"holdout_span", "holdout_partition", "clean_partition", "decision_scores"}
EXPECTED_CODE: dict[str, set[str]] = {
    **dict.fromkeys(["__init__.py", "errors.py", "process_exit.py", "rulekit.py"], EVERYTHING),
    "contracts.py": EVERYTHING - {"series_index", "history_check"},
    # config.py and what it imports: the generator and the capacity-risk report validate with
    # it, and the backtests through their entry point (train_backtest reads a job's config).
    **dict.fromkeys(
        ["metric_names.py", "metric_names.yaml", "timestamps.py"],
        EVERYTHING - TRAINING - {"series_index", "history_check", "risk_report", DQ, FB}
        | BACKTESTS,
    ),
    "config.py": GENERATE | {CR} | BACKTESTS,
    # A stage package's __init__.py runs with any of its modules.
    "data/__init__.py": GENERATE | ETL | CUTTING | {"quality", "features_partition", "risk_report"},
    "forecast/__init__.py": TRAINING
    | REPORTS
    | {"history_check", "risk_report", "decision_scores"},
    "risk/__init__.py": {"risk_report", "decision_scores"},
    "decision/__init__.py": {"decision_scores", CR},
    "reports/__init__.py": REPORTS,
    # The data stage's rule scripts build their EtlSettings and DataSettings from it too.
    "settings.py": TRAINING
    | REPORTS
    | ETL - {"series_index"}
    | CUTTING
    | {"quality", "features_partition", "risk_report"},
    **dict.fromkeys(
        [
            "forecast/models/__init__.py",
            "forecast/models/autogluon_model.py",
            "forecast/models/base.py",
            "forecast/models/baselines.py",
            "forecast/models/fallback.py",
            "forecast/models/pool.py",
            "forecast/models/specs.py",
            "forecast/models/profiles.py",
            "forecast/models/prophet_model.py",
            "forecast/models/stats.py",
            "forecast/models/transformed.py",
        ],
        TRAINING | REPORTS | {"decision_scores"},
    ),
    "data/capacity.py": ETL - {"series_index"}
    | CUTTING
    | {"quality", "features_partition", "risk_report"},
    **dict.fromkeys(
        ["data/columnar.py", "data/scale.py", "data/validate.py", "data/value_limits.py"],
        ETL - {"series_index"} | CUTTING | {"quality", "features_partition"},
    ),
    "data/resample.py": CUTTING | {"quality", "features_partition"},
    "data/quality.py": CUTTING | {"quality"},
    "data/holdout.py": CUTTING,
    "data/synth.py": GENERATE,
    "data/ingest.py": {"ingest_partition", "ingest_resources", "features_partition"},
    "data/series_index.py": {"series_index", "features_partition"},
    # Planning only (rules/common.smk counts local files' series): no rule script imports it;
    # a count that changes changes the shard groups instead.
    "data/series_count.py": set(),
    "data/features.py": {"features_partition"},
    # The fleet-wide check only: no model job imports it (it sees one shard of one group).
    "forecast/history_check.py": {"history_check"},
    "forecast/panel.py": TRAINING,
    # Which series a model job handles, and reading the shards back (leaderboard, combine).
    "forecast/shards.py": TRAINING,
    "forecast/fit.py": TRAINING,
    # The refit's SageMaker / command-line entry point: no rule runs it, but the backtest's
    # entry point (train_backtest.py) reads its command line with its helpers.
    "train.py": BACKTESTS,
    **dict.fromkeys(
        [
            "forecast/backtest.py",
            "forecast/calibration.py",
            "forecast/evaluate.py",
            "forecast/selection.py",
        ],
        EVALUATION,
    ),
    "forecast/metrics.py": EVALUATION | REPORTS,
    "forecast/no_data.py": {"combine_forecasts", "risk_report", "decision_scores"},
    "forecast/combine.py": {"combine_forecasts"},
    **{
        name: {"risk_report"}
        for name in ("risk/assess.py", "risk/capacity.py", "risk/probability.py")
    },
    "risk/rightsizing.py": {"risk_report", "decision_scores"},
    "csv_tables.py": {"quality", "combine_forecasts", "risk_report", "decision_scores"} | REPORTS,
    "spreadsheet.py": {
        "clean_partition",
        "holdout_partition",
        "quality",
        "leaderboard",
        "combine_forecasts",
        "risk_report",
        "decision_scores",
    }
    | REPORTS,
    "decision/scores.py": {"decision_scores"},
    "decision/tables.py": {"decision_scores", CR},
    "escape.py": {"decision_scores"} | REPORTS,
    **dict.fromkeys(
        [
            "reports/common.py",
            "reports/execute.py",
            "reports/html.py",
            "reports/templates/offline/conf.json",
        ],
        REPORTS,
    ),
    # Each report's own module: its report only.
    "reports/data_quality.py": {DQ},
    "reports/forecast_backtest.py": {FB},
    "reports/capacity_risk.py": {CR},
    # The exploration notebooks (notebooks/0*.ipynb): no rule renders them.
    "reports/exploration.py": set(),
    "reports/templates/offline/index.html.j2": REPORTS,
    # Used by rules/common.smk when the DAG is built, by no job.
    "code_digest.py": set(),
    "data/partitions.py": set(),
    # AWS: config.py checks the s3/cloudwatch settings (so these rerun what config.py does); the
    # rest runs only in the S3 and CloudWatch ingest jobs (or when the DAG is built).
    **dict.fromkeys(["aws/__init__.py", "aws/config_checks.py"], GENERATE | {CR} | BACKTESTS),
    **{
        f"aws/{name}.py": set() for name in ("errors", "session", "s3_source", "cloudwatch", "plan")
    },
    # The benchmark's untouched peers: no rule imports them.
    "forecast/models/peers.py": set(),
    # The backtest's entry point (rules and the SageMaker container); it reads its command line
    # with train.py's helpers.
    "train_backtest.py": BACKTESTS,
    # AWS: every family is local in this run, so no job imports these (a family on SageMaker
    # runs rules/forecast.smk's *_sagemaker rules, whose script imports the backend).
    **{
        name: set()
        for name in (
            "aws/__main__.py",
            "aws/sagemaker_backend.py",
            "aws/training-requirements.txt",
            "aws/requirements.py",
            "aws/ops.py",
        )
    },
}

CUT = "2026-08-11T00:00:00Z"
# One setting per config section -> (changes merged into the tiny config, jobs whose params
# change, {job: count} where not every job of a key reruns).
EXPECTED_CONFIG: dict[str, tuple[dict, set[str], dict[str, int]]] = {
    # The cut is made when cleaning: ingest and the generator do not read it.
    "data.history_end": (
        {"data": {"history_end": "2026-08-10T12:00:00Z"}},
        {"holdout_span", "holdout_partition", "clean_partition", "decision_scores"},
        {},
    ),
    # One service's settings regenerate that service only (and the fleet-wide tables). With a
    # cut every partition's cleaning waits for the span check, which reads every partition, so
    # every partition's jobs and shards rerun here; without one only the changed partition's
    # group's shards do (its own, or its pack's: tests/test_shards_workflow.py).
    "synthetic.services.gamma": (
        {"synthetic": {"services": "gamma base_level 36"}},
        {"generate_service", "generate_fleet"},
        {"generate_service": 1, "ingest_partition": 1},
    ),
    # Ingest reads only the 0-1 scale and timestamp window settings of etl.
    "etl.max_fill_gap": (
        {"etl": {"max_fill_gap": 4}},
        {"clean_partition", "holdout_partition"},
        {},
    ),
    # The backtest and the fleet-wide check of its windows against the history.
    "backtest.step": ({"backtest": {"step": 12}}, MODEL_JOBS | {"history_check"}, {}),
    # Prophet is not enabled in the tiny run: its settings rerun nothing.
    "models.prophet": ({"models": {"prophet": {"n_changepoints": 10}}}, set(), {}),
    # The predict_linear window: that model's jobs and the decision backtest's alert rule.
    "models.predict_linear_window_hours": (
        {"models": {"predict_linear_window_hours": 12}},
        {
            "backtest_baseline:predict_linear",
            "forecast_baseline:predict_linear",
            "decision_scores",
        },
        {},
    ),
    # The statsforecast models' intervals: theta's jobs only.
    "models.intervals": (
        {"models": {"intervals": "normal"}},
        {"backtest_statsforecast:theta", "forecast_statsforecast:theta"},
        {},
    ),
    "selection.top_k": ({"selection": {"top_k": 2}}, {"leaderboard"}, {}),
    # Smaller shards: no service is smaller than a shard any more, so the pack of the fleet
    # becomes each partition's own hash shards (alpha and beta 10 series -> 4 shards, gamma 5 ->
    # 2): 10 new model jobs per model (new outputs: no params changed) and what reads them (the
    # leaderboard's shard_groups param changes too, but its new inputs already rerun it).
    "forecast.shard_size": (
        {"forecast": {"shard_size": 3}},
        set(),
        {
            **dict.fromkeys(MODEL_JOBS, 10),
            **dict.fromkeys(
                ["leaderboard", "combine_forecasts", "risk_report", "decision_scores", FB, CR], 1
            ),
        },
    ),
    # A shard size that still packs the fleet (25 series) into one pack plans the same groups:
    # nothing reruns.
    "forecast.shard_size.same_pack": ({"forecast": {"shard_size": 30}}, set(), {}),
    "forecast.calibrate": (
        {"forecast": {"calibrate": False}},
        {"leaderboard", "combine_forecasts"},
        {},
    ),
    "risk.lead_time_days": ({"risk": {"lead_time_days": 3}}, {"risk_report"}, {}),
    "report.top_n": ({"report": {"top_n": 4}}, REPORTS, {}),
    # Read by no rule of a synthetic run (the SageMaker backend; AWS reaches S3 and CloudWatch
    # ingest only).
    "training.instance_type": ({"training": {"instance_type": "ml.m5.2xlarge"}}, set(), {}),
    "aws.region": ({"aws": {"region": "eu-west-1"}}, set(), {}),
    "aws.retry_mode": ({"aws": {"retry_mode": "adaptive"}}, set(), {}),
}


def downstream(jobs: set[str]) -> set[str]:
    """The jobs and everything that reads their outputs, directly or not."""
    out, todo = set(), list(jobs)
    while todo:
        job = todo.pop()
        if job not in out:
            out.add(job)
            todo.extend(DOWNSTREAM.get(job, ()))
    return out


def base_config() -> dict:
    cfg = yaml.safe_load(TINY.read_text())
    cfg["data"] = {"history_end": CUT}
    return cfg


def merged(base: dict, change: dict) -> dict:
    out = {**base}
    for key, value in change.items():
        if key == "synthetic":
            services = [dict(s) for s in base["synthetic"]["services"]]
            services[2]["base_level"] = 36.0  # gamma
            out["synthetic"] = {**base["synthetic"], "services": services}
        elif isinstance(value, dict):
            out[key] = {**base.get(key, {}), **value}
        else:
            out[key] = value
    return out


ENV = {"HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}


def snakemake_args(project: Path, config: Path) -> list[str]:
    return [
        "-s",
        str(project / "Snakefile"),
        "--directory",
        str(project / "work"),
        f"--configfile={config}",
    ]


def snakemake(project: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, *snakemake_args(project, config), *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **ENV}, timeout=1200
    )
    assert proc.returncode == 0, f"snakemake {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc


def job_key(rule: str, output: str) -> str:
    if rule.startswith(("backtest_", "forecast_", "render_report")):
        return f"{rule}:{Path(output).name.split('.')[0]}"
    return rule


def plan(session: SnakemakeSession, project: Path, config: Path) -> tuple[dict[str, int], set[str]]:
    """Jobs per key that would run, and the keys whose params changed.

    `--detailed-summary` gives both per output file: `status` says why the file itself is out of
    date ("params changed": its job's code digest or settings), even when its job reruns anyway
    because an input is rebuilt (the `reason:` lines of `-n` then name the input only), and
    `plan` says whether it is rebuilt. The plans run in one Snakemake session (a hundred of
    them, each 0.3 s instead of the 2.8 s of a new process, tests/snakemake_session.py).
    """
    args = snakemake_args(project, config)
    reply = session(*args, "--detailed-summary")
    assert reply["code"] == 0, (
        f"snakemake --detailed-summary failed:\n{reply['stdout']}{reply['stderr']}"
    )
    out = reply["stdout"]
    lines = out[out.index("output_file\t") :].splitlines()
    instances: dict[str, set[str]] = {}
    direct: set[str] = set()
    for row in csv.DictReader(lines, delimiter="\t"):
        key = job_key(row["rule"], row["output_file"])
        if row["plan"] != "no update":
            # Per-partition jobs are told apart by the partition their outputs are named after,
            # model jobs by their group and shard (results/<stage>/shards/<group>/<s>/<model>).
            output = Path(row["output_file"])
            name = output.name.split(".")[0]
            if key in MODEL_JOBS:
                name = "/".join(output.parts[-3:-1])
            instances.setdefault(key, set()).add(name if key in PER_PARTITION | MODEL_JOBS else "")
        if "params changed" in row["status"]:
            direct.add(key)
    return {key: len(names) for key, names in instances.items()}, direct


def nothing_to_do(project: Path, config: Path) -> bool:
    proc = snakemake(project, config, "-n")
    return "Nothing to be done" in proc.stdout + proc.stderr


def full_counts(keys: set[str]) -> dict[str, int]:
    return {key: 3 if key in PER_PARTITION else SHARDS if key in MODEL_JOBS else 1 for key in keys}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project and a finished run of the tiny fleet in project/work."""
    project = tmp_path_factory.mktemp("rerun_plan")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, project / name)
    config = project / "tiny.yaml"
    config.write_text(yaml.safe_dump(base_config()))
    snakemake(project, config, "--cores", "2")
    assert nothing_to_do(project, config)
    return project


@pytest.fixture(scope="module")
def session(project):
    with SnakemakeSession(ENV) as session:
        assert plan(session, project, project / "tiny.yaml") == ({}, set())
        yield session


def perturbed(path: Path) -> bytes:
    """The file with a change that keeps it valid (a comment, or trailing white space)."""
    original = path.read_bytes()
    if path.suffix in (".py", ".yaml"):
        return original + b"\n# perturbed\n"
    if path.suffix == ".j2":
        return original + b"{# perturbed #}\n"
    return original + b"\n"


def test_the_table_lists_every_library_file(project):
    package = project / "scripts" / "capforecast"
    files = {
        p.relative_to(package).as_posix()
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert files == set(EXPECTED_CODE)


def test_editing_a_library_file_reruns_exactly_its_users(project, session):
    config = project / "tiny.yaml"
    package = project / "scripts" / "capforecast"
    wrong = {}
    for name, expected in EXPECTED_CODE.items():
        path = package / name
        original = path.read_bytes()
        path.write_bytes(perturbed(path))
        try:
            jobs, direct = plan(session, project, config)
        finally:
            path.write_bytes(original)
        want = full_counts(downstream(expected))
        if direct != expected or jobs != want:
            wrong[name] = {
                "digest misses": sorted(expected - direct),
                "digest has too": sorted(direct - expected),
                "planned, not expected": sorted(set(jobs) - set(want)),
                "expected, not planned": sorted(set(want) - set(jobs)),
                "counts": {k: (jobs[k], n) for k, n in want.items() if jobs.get(k, n) != n},
            }
    if wrong:
        pytest.fail(pprint.pformat(wrong, width=100))
    assert nothing_to_do(project, config)


@pytest.mark.parametrize("setting", list(EXPECTED_CONFIG))
def test_changing_one_setting_reruns_exactly_its_readers(project, session, setting):
    change, expected, counts = EXPECTED_CONFIG[setting]
    config = project / f"{setting}.yaml"
    config.write_text(yaml.safe_dump(merged(base_config(), change)))
    jobs, direct = plan(session, project, config)
    assert direct == expected
    assert jobs == {**full_counts(downstream(expected)), **counts}
