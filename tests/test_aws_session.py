"""The one boto3 session/client factory: endpoint, region and retry mode from the config or the
environment, credentials only from the standard chain (tests/aws_local.py's moto server)."""

from __future__ import annotations

import pytest

from capforecast.aws import session as aws
from capforecast.aws.errors import AwsError, aws_call
from capforecast.config import validated_config
from capforecast.errors import ConfigError


def _aws(**given):
    return validated_config({"aws": given})["aws"]


def test_client_uses_the_environment_endpoint_and_chain_credentials(aws_env, fresh_bucket):
    s3 = aws.aws_client("s3", _aws())
    assert s3.meta.endpoint_url == aws_env.endpoint_url
    assert s3.meta.region_name == aws_env.region
    assert fresh_bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert aws.endpoint_url(_aws(), "s3") == aws_env.endpoint_url


def test_config_endpoint_and_region_win_over_the_environment(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    settings = _aws(endpoint_url=aws_env.endpoint_url, region="eu-west-1")
    client = aws.aws_client("cloudwatch", settings)
    assert client.meta.endpoint_url == aws_env.endpoint_url
    assert client.meta.region_name == "eu-west-1"
    assert aws.endpoint_url(settings) == aws_env.endpoint_url


def test_service_specific_endpoint_variable(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:7")
    assert aws.endpoint_url(_aws(), "s3") == "http://127.0.0.1:7"
    assert aws.endpoint_url(_aws(), "cloudwatch") == aws_env.endpoint_url


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_retry_mode_and_attempts_reach_botocore(aws_env, mode):
    client = aws.aws_client("cloudwatch", _aws(retry_mode=mode, max_attempts=4))
    retries = client.meta.config.retries
    assert retries["mode"] == mode
    assert retries["total_max_attempts"] == 4


def test_no_region_names_the_key(aws_env, monkeypatch):
    for key in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match=r"config key 'aws.region': no AWS region"):
        aws.aws_session(_aws())


def test_no_credentials_is_one_line_naming_the_chain(aws_env, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    session = aws.aws_session(_aws())
    with pytest.raises(AwsError) as info:
        aws.require_credentials(session, "s3://bucket/")
    with pytest.raises(AwsError) as listed, aws_call("list buckets"):
        aws.aws_client("s3", _aws(), session=session).list_buckets()
    for err in (info.value, listed.value):
        assert "\n" not in str(err)
        assert "no AWS credentials" in str(err) and "AWS_PROFILE" in str(err)


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ({"endpoint_url": "http://user:secret@127.0.0.1:1"}, "aws.endpoint_url"),
        ({"retry_mode": "legacy"}, "aws.retry_mode"),
        ({"max_attempts": 0}, "aws.max_attempts"),
        ({"region": "US East"}, "aws.region"),
    ],
)
def test_bad_aws_settings_fail_validation(given, key):
    with pytest.raises(ConfigError, match=rf"config key '{key}'"):
        validated_config({"aws": given})
