"""The one place boto3 sessions and clients are made (S3 input, CloudWatch, SageMaker, the CLI).

* Credentials come only from the standard chain boto3 walks (environment, ``AWS_PROFILE`` and
  the shared config/credentials files, SSO, container and instance roles): no key is ever read
  from the config, passed around, logged or written anywhere.
* The endpoint is ``aws.endpoint_url`` when set, else what botocore resolves from the
  environment (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``): production leaves both
  unset; tests point them at a local moto server.
* The region is ``aws.region`` when set, else the chain's (``AWS_REGION``,
  ``AWS_DEFAULT_REGION``, the profile's ``region``); no region at all is a one-line error.
* Throttling and transient errors are retried by botocore (``aws.retry_mode``: ``standard`` or
  ``adaptive`` client-side rate limiting; ``aws.max_attempts``), never by a hand-written loop.

``settings`` is an :class:`AwsSettings` or the validated ``aws`` config section (whole or as a
rule's params).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from capforecast.aws.errors import CREDENTIALS_HINT, AwsError
from capforecast.errors import ConfigError

# What the config may say (schema: aws.retry_mode); botocore knows "legacy" too, not used here.
RETRY_MODES = ("standard", "adaptive")


@dataclass(frozen=True)
class AwsSettings:
    """``aws``: how to reach AWS (never credentials: they come from the standard chain)."""

    region: str | None
    endpoint_url: str | None
    retry_mode: str
    max_attempts: int


def aws_settings(aws: Mapping[str, Any] | AwsSettings) -> AwsSettings:
    """From the validated ``aws`` section (or an :class:`AwsSettings`, returned as it is)."""
    if isinstance(aws, AwsSettings):
        return aws
    return AwsSettings(
        region=None if aws["region"] is None else str(aws["region"]),
        endpoint_url=None if aws["endpoint_url"] is None else str(aws["endpoint_url"]),
        retry_mode=str(aws["retry_mode"]),
        max_attempts=int(aws["max_attempts"]),
    )


def endpoint_url(
    settings: Mapping[str, Any] | AwsSettings, service: str | None = None
) -> str | None:
    """The endpoint clients of ``service`` use: ``aws.endpoint_url``, else
    ``AWS_ENDPOINT_URL_<SERVICE>``, else ``AWS_ENDPOINT_URL``, else None (AWS's own endpoint).

    boto3 clients resolve the environment themselves; this is for the non-boto3 readers
    (pyarrow's S3 filesystem) and for log lines.
    """
    given = aws_settings(settings).endpoint_url
    if given:
        return given
    if service:
        specific = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}")
        if specific:
            return specific
    return os.environ.get("AWS_ENDPOINT_URL") or None


def botocore_config(settings: Mapping[str, Any] | AwsSettings, **extra: Any) -> Any:
    """botocore ``Config`` with the configured retry mode and attempts (plus ``extra``)."""
    from botocore.config import Config

    s = aws_settings(settings)
    # total_max_attempts counts the first call (botocore's max_attempts would not).
    return Config(retries={"mode": s.retry_mode, "total_max_attempts": s.max_attempts}, **extra)


def aws_session(settings: Mapping[str, Any] | AwsSettings) -> Any:
    """A ``boto3.Session`` on the standard credential chain, in the configured region.

    Raises :class:`ConfigError` naming ``aws.region`` when no region is configured anywhere.
    """
    import boto3

    s = aws_settings(settings)
    session = boto3.Session(region_name=s.region) if s.region else boto3.Session()
    if not session.region_name:
        raise ConfigError(
            "aws.region",
            "no AWS region: set aws.region, or AWS_REGION / AWS_DEFAULT_REGION, or a region "
            "in the AWS profile",
        )
    return session


def aws_client(
    service: str, settings: Mapping[str, Any] | AwsSettings, *, session: Any = None
) -> Any:
    """A boto3 client of ``service``: the configured endpoint (or the environment's), region
    and retry mode; ``session`` reuses one session's credentials across clients."""
    s = aws_settings(settings)
    session = session if session is not None else aws_session(s)
    kwargs: dict[str, Any] = {"config": botocore_config(s)}
    if s.endpoint_url:
        kwargs["endpoint_url"] = s.endpoint_url
    return session.client(service, **kwargs)


def require_credentials(session: Any, what: str) -> Any:
    """The session's resolved (frozen) credentials, or one line saying how to provide them.

    For readers that sign requests themselves (pyarrow's S3 filesystem): the object is passed
    straight to them and never printed.
    """
    credentials = session.get_credentials()
    if credentials is None:
        raise AwsError(what, f"no AWS credentials: {CREDENTIALS_HINT}", code="NoCredentials")
    return credentials.get_frozen_credentials()
