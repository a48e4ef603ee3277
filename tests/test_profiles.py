"""Every profile parses with its executor plugin installed and plans the workflow (a typo in a
profile fails here, not on a cluster), and every rule that does work asks for threads, memory
and time."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from snakemake_cli import snakemake_cmd

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "configs" / "tiny_synthetic.yaml"
PROFILES = sorted(p.name for p in (ROOT / "profiles").iterdir() if p.is_dir())
CLUSTER_PROFILES = ["slurm", "aws-batch", "kubernetes"]
# Resources the executors read (besides Snakemake's own): a misspelt one would be ignored.
KNOWN_RESOURCES = {
    "mem_mb",
    "mem_mib",
    "runtime",
    "disk_mb",
    "tmpdir",
    "slurm_partition",
    "slurm_account",
    "slurm_extra",
    "constraint",
    "qos",
    "machine_type",
    "kubernetes_memory_limit",
}


def profile(name: str) -> dict:
    return yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())


def dry_run(profile_dir: Path, workdir: Path, env: dict[str, str] | None = None):
    cmd = snakemake_cmd(
        workdir, CONFIG, "--workflow-profile", str(profile_dir), "-n", "--cores", "4"
    )
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


# profiles/aws takes its results prefix from the environment.
AWS_RESULTS_PREFIX = "s3://cf-profile-results/capforecast"


def s3_env(local_aws, name: str) -> dict[str, str]:
    """For a profile with S3 default storage: the local S3 with the profile's bucket in it."""
    prefix = profile(name).get("default-storage-prefix")
    if not prefix:
        return {}
    env = local_aws.env()
    if prefix == "$CAPFORECAST_S3_PREFIX":
        prefix = env["CAPFORECAST_S3_PREFIX"] = AWS_RESULTS_PREFIX
    bucket = prefix.removeprefix("s3://").split("/")[0]
    s3 = local_aws.client("s3")
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=bucket)
    return env


def test_every_profile_is_tested():
    assert set(PROFILES) == {"default", "aws", *CLUSTER_PROFILES}


@pytest.mark.parametrize("name", PROFILES)
def test_profile_plans_the_workflow(name, tmp_path, local_aws):
    proc = dry_run(ROOT / "profiles" / name, tmp_path, s3_env(local_aws, name))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "This was a dry-run" in out
    jobs = parse_jobs(out)
    assert sum(1 for rule, _, _ in jobs if rule == "render_report") == 3
    if name in ("aws", "aws-batch", "kubernetes"):
        # Every file goes to the S3 prefix, but the report notebooks are read from the sources.
        bucket = AWS_RESULTS_PREFIX if name == "aws" else "s3://change-me-bucket/capforecast"
        assert f"{bucket}/results/" in out
        assert "capforecast//" not in out


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_a_typo_in_a_profile_fails(name, tmp_path, local_aws):
    """What the parse test protects against: a misspelt key stops Snakemake at once."""
    text = (ROOT / "profiles" / name / "config.yaml").read_text()
    key = {"slurm": "latency-wait", "aws-batch": "aws-batch-job-queue"}.get(
        name, "kubernetes-namespace"
    )
    assert re.search(rf"^{key}:", text, re.M)
    broken = tmp_path / "profile"
    broken.mkdir()
    (broken / "config.yaml").write_text(re.sub(rf"^{key}:", f"{key}s:", text, flags=re.M))
    proc = dry_run(broken, tmp_path / "work", s3_env(local_aws, name))
    assert proc.returncode != 0
    assert f"unrecognized arguments: --{key}s" in proc.stderr


@pytest.mark.parametrize("name", PROFILES)
def test_profile_resources_are_ones_executors_read(name):
    settings = profile(name)
    keys = set(settings.get("default-resources") or {})
    for rule_resources in (settings.get("set-resources") or {}).values():
        keys |= set(rule_resources)
    assert keys <= KNOWN_RESOURCES, keys - KNOWN_RESOURCES


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_cluster_profiles_keep_the_rerun_rules_of_the_default(name):
    """A cluster run reruns exactly what a local run would (code and params digests)."""
    default = profile("default")
    settings = profile(name)
    for key in ("rerun-triggers", "rerun-incomplete", "printshellcmds", "show-failed-logs"):
        assert settings[key] == default[key], key
    assert settings["executor"] == name
    assert settings["retries"] >= 1
    assert "software-deployment-method" not in settings


def test_cloud_profiles_store_in_s3_with_the_plugins_settings():
    """The S3 settings are those snakemake-storage-plugin-s3 documents, and no credentials."""
    from snakemake_storage_plugin_s3 import StorageProviderSettings

    documented = {
        f"storage-s3-{name.replace('_', '-')}"
        for name in StorageProviderSettings.__dataclass_fields__
    }
    for name in ("aws-batch", "kubernetes"):
        settings = profile(name)
        assert settings["default-storage-provider"] == "s3"
        assert settings["default-storage-prefix"].startswith("s3://")
        assert settings["container-image"]
        s3_keys = {key for key in settings if key.startswith("storage-s3-")}
        assert s3_keys and s3_keys <= documented
        assert not s3_keys & {"storage-s3-access-key", "storage-s3-secret-key", "storage-s3-token"}


def parse_jobs(out: str) -> list[tuple[str, int, dict[str, str]]]:
    """(rule, threads, resources) of every job with outputs a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", out):
        match = re.search(r"^(local)?rule (\w+):", block, re.M)
        # Local rules and targets without outputs (all, forecast, ...) do no work.
        if not match or match.group(1) or not re.search(r"^\s+output: ", block, re.M):
            continue
        threads = re.search(r"^\s+threads: (\d+)", block, re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        res = (
            dict(item.split("=", 1) for item in resources.group(1).split(", ")) if resources else {}
        )
        jobs.append((match.group(2), int(threads.group(1)) if threads else 1, res))
    return jobs


def test_every_rule_asks_for_threads_memory_and_time(tmp_path):
    proc = dry_run(ROOT / "profiles" / "default", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = parse_jobs(proc.stdout + proc.stderr)
    rules = {rule for rule, _, _ in jobs}
    assert {"generate_service", "clean_partition", "backtest_statsforecast", "risk_report"} <= rules
    for rule, threads, res in jobs:
        assert int(res["mem_mb"]) >= 2048 and int(res["mem_mb"]) % 1024 == 0, (rule, res)
        assert int(res["runtime"]) >= 10, (rule, res)
        assert threads == (2 if rule.endswith("statsforecast") else 1), rule
    # Every rule file sets them explicitly, from the one sizing function.
    for path in (ROOT / "rules").glob("*.smk"):
        text = path.read_text()
        for block in re.split(r"\n(?=rule |use rule )", text):
            if re.search(r"^\s+script:", block, re.M) or block.startswith("use rule"):
                assert "threads: job_threads(" in block, block[:80]
                assert "**job_resources(" in block, block[:80]


def test_synthetic_series_count_matches_the_generator():
    from capforecast.data.synth import METRICS

    text = (ROOT / "rules" / "common.smk").read_text()
    assert f"SYNTHETIC_METRICS_PER_INSTANCE = {len(METRICS)}\n" in text


def test_resources_grow_with_the_fleet_and_the_retry(tmp_path):
    """Sized from the series count: a 40x larger fleet (1,000 series) asks for more memory and
    time for its partition jobs, more time for its model jobs (sized up to a shard)."""
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["synthetic"]["services"] = [
        {**svc, "instances": svc["instances"] * 40} for svc in cfg["synthetic"]["services"]
    ]
    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump(cfg))
    sizes = {}
    for label, config in (("tiny", CONFIG), ("big", big)):
        proc = subprocess.run(
            snakemake_cmd(tmp_path / label, config, "-n", "--cores", "4"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        sizes[label] = {rule: res for rule, _, res in parse_jobs(proc.stdout + proc.stderr)}
    for rule in ("backtest_statsforecast", "clean_partition"):
        assert int(sizes["big"][rule]["runtime"]) > int(sizes["tiny"][rule]["runtime"]), rule
    # A model job is sized for the largest shard group (capforecast.forecast.shards): its memory
    # grows with the fleet, in whole GiB (here 25 series in one pack -> 1,000 series in two
    # packs, alpha and gamma's of 600 series, beta's of 400).
    assert int(sizes["big"]["clean_partition"]["mem_mb"]) > int(
        sizes["tiny"]["clean_partition"]["mem_mb"]
    )
    assert int(sizes["big"]["backtest_statsforecast"]["mem_mb"]) >= int(
        sizes["tiny"]["backtest_statsforecast"]["mem_mb"]
    )
