"""A local AWS for the tests: moto's standalone server on 127.0.0.1, and a trap for real AWS.

Every AWS test talks to this server through the same boto3 / sagemaker / storage-plugin code
production uses; only the endpoint differs (``AWS_ENDPOINT_URL``). The environment also points
HTTPS_PROXY / HTTP_PROXY at a closed local port, so a call that bypasses the endpoint (a client
built without it, the SDK calling STS or telemetry) fails at once instead of leaving the machine;
``NO_PROXY`` lets 127.0.0.1 through.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

# Fake credentials: distinctive so a test can grep outputs for them (none may ever appear).
FAKE_ACCESS_KEY = "AKIAFAKEKEYCAPFORECAST"
FAKE_SECRET_KEY = "fakeSecretCapforecast0123456789abcdefXYZ"
REGION = "us-east-1"


@dataclass(frozen=True)
class LocalAws:
    endpoint_url: str
    region: str = REGION
    access_key: str = FAKE_ACCESS_KEY
    secret_key: str = FAKE_SECRET_KEY

    def client(self, service: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (snakemake) that must reach only this server."""
        trap = f"http://127.0.0.1:{_closed_port()}"
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "HTTPS_PROXY": trap,
            "HTTP_PROXY": trap,
            "https_proxy": trap,
            "http_proxy": trap,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "SAGEMAKER_VALIDATE_ROLE": "false",
            "SAGEMAKER_TELEMETRY_OPT_OUT": "true",
        }


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def local_aws() -> Iterator[LocalAws]:
    """moto's standalone server on 127.0.0.1 on a free port, for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    try:
        yield LocalAws(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def aws_env(local_aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> LocalAws:
    """This process's environment pointed at the local server, with the proxy trap set."""
    for key, value in local_aws.env().items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    return local_aws


@pytest.fixture
def fresh_bucket(aws_env: LocalAws, request: pytest.FixtureRequest) -> str:
    """An empty bucket named after the test (moto keeps state for the whole session)."""
    import re

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    bucket = f"cf-{name}-{abs(hash(request.node.nodeid)) % 10**6}"
    aws_env.client("s3").create_bucket(Bucket=bucket)
    return bucket
