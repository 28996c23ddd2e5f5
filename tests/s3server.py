"""A real S3-compatible server for the tests: moto in server mode on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from moto.server import ThreadedMotoServer
from pydantic import SecretStr

from cmschat.attachments.storage.s3 import S3Storage
from cmschat.settings import Settings

BUCKET = "cmschat-test"
REGION = "us-east-1"
# Dummy credentials for moto, passed explicitly so nothing is read from ~/.aws.
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"


@dataclass
class S3Server:
    """moto's S3 server on a free loopback port, and a client to look behind the store."""

    endpoint_url: str
    client: Any

    def settings_for(self, settings: Settings, prefix: str) -> Settings:
        """``settings`` with attachments stored on this server under ``prefix``."""
        return settings.model_copy(
            update={
                "storage_url": f"s3://{BUCKET}/{prefix}",
                "s3_endpoint_url": self.endpoint_url,
                "s3_region": REGION,
                "s3_access_key_id": ACCESS_KEY,
                "s3_secret_access_key": SecretStr(SECRET_KEY),
            }
        )

    def storage(self, prefix: str, bucket: str = BUCKET) -> S3Storage:
        """An S3Storage on this server."""
        return S3Storage(
            bucket,
            prefix,
            endpoint_url=self.endpoint_url,
            region=REGION,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto server and bucket for the whole run."""
    with pytest.MonkeyPatch.context() as patch:
        # Whatever this machine's AWS configuration says must not reach the tests.
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint_url = f"http://{host}:{port}"
            client = boto3.session.Session(
                aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
            ).client("s3", endpoint_url=endpoint_url)
            client.create_bucket(Bucket=BUCKET)
            yield S3Server(endpoint_url, client)
        finally:
            server.stop()
