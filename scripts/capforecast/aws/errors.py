"""AWS failures as one line that names what to fix (bucket, credentials, permission, region).

botocore raises many exception types with multi-line messages and the request id; a user needs
to know which call failed on which resource and what to change. :func:`aws_call` wraps a block
of AWS calls and re-raises :class:`AwsError` (a ``CapForecastError``: one line, no traceback in
a rule). Messages never contain credentials: they are built from the error code, the call and
the resource, not from the request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from capforecast.errors import CapForecastError

# Error codes that mean "you may not": the caller's IAM policy (or a bucket policy) lacks it.
ACCESS_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AllAccessDisabled",
        "403",
        "Forbidden",
    }
)
BAD_CREDENTIALS = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
        "RequestExpired",
    }
)
THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "RequestThrottled",
        "RequestThrottledException",
        "LimitExceededException",
    }
)
NO_BUCKET = frozenset({"NoSuchBucket"})

CREDENTIALS_HINT = (
    "the standard AWS credential chain found none: set AWS_PROFILE (and `aws sso login` for SSO), "
    "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment, or run on an instance or task "
    "with a role; keys never go in the config"
)


class AwsError(CapForecastError):
    """An AWS call failed; the message names the call, the resource and what to fix."""

    def __init__(self, what: str, problem: str, *, code: str | None = None) -> None:
        super().__init__(f"{what}: {problem}")
        self.what = what
        self.problem = problem
        self.code = code


def error_code(err: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError (None for other errors)."""
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return None if code is None else str(code)
    return None


def describe(err: BaseException, what: str) -> AwsError:
    """``err`` (a botocore / pyarrow error raised while doing ``what``) as one line."""
    import botocore.exceptions as bexc

    code = error_code(err)
    if isinstance(err, bexc.NoCredentialsError | bexc.PartialCredentialsError):
        return AwsError(what, f"no AWS credentials: {CREDENTIALS_HINT}", code="NoCredentials")
    if isinstance(err, bexc.NoRegionError):
        return AwsError(
            what,
            "no AWS region: set aws.region in the config, or AWS_REGION / AWS_DEFAULT_REGION",
            code="NoRegion",
        )
    if isinstance(err, bexc.TokenRetrievalError | bexc.SSOError | bexc.UnauthorizedSSOTokenError):
        return AwsError(what, "the SSO session has expired: run `aws sso login`", code="SSO")
    if isinstance(err, bexc.EndpointConnectionError | bexc.ConnectTimeoutError):
        return AwsError(
            what,
            f"cannot reach the AWS endpoint ({getattr(err, 'kwargs', {}).get('endpoint_url', '?')})"
            "; check aws.endpoint_url / AWS_ENDPOINT_URL, aws.region and the network or proxy",
            code="EndpointConnection",
        )
    if code in NO_BUCKET:
        bucket = getattr(err, "response", {}).get("Error", {}).get("BucketName")
        name = f" '{bucket}'" if bucket else ""
        return AwsError(
            what,
            f"the bucket{name} does not exist (NoSuchBucket); create it or fix the bucket name "
            "(and aws.region)",
            code=code,
        )
    if code in ACCESS_DENIED:
        return AwsError(
            what,
            f"access denied ({code}): the credentials in use lack the permission for this call; "
            "grant it in their IAM policy (README, 'Running on AWS') or use another profile",
            code=code,
        )
    if code in BAD_CREDENTIALS:
        return AwsError(
            what,
            f"the AWS credentials were rejected ({code}): they are invalid or expired; "
            f"refresh them ({CREDENTIALS_HINT})",
            code=code,
        )
    if code in THROTTLED:
        return AwsError(
            what,
            f"throttled by AWS ({code}) after every retry allowed: raise aws.max_attempts, set "
            "aws.retry_mode: adaptive, or fetch less at once",
            code=code,
        )
    if code is not None:
        message = str(getattr(err, "response", {}).get("Error", {}).get("Message", "")).strip()
        first = message.splitlines()[0] if message else ""
        return AwsError(what, f"{code}{': ' + first if first else ''}", code=code)
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return AwsError(what, text)


@contextmanager
def aws_call(what: str) -> Iterator[None]:
    """Run AWS calls; any botocore failure becomes one :class:`AwsError` naming ``what``."""
    import botocore.exceptions as bexc

    try:
        yield
    except AwsError:
        raise
    except (bexc.BotoCoreError, bexc.ClientError) as err:
        raise describe(err, what) from None
