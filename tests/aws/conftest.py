"""moto in server mode: a real HTTP endpoint that the code reaches through an Airflow connection."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest

from tests.aws.iam_moto import enforcing_moto  # noqa: F401 - a fixture
from tests.aws.motoserver import STAND_INS, create_manifest_bucket, moto_connection, start_moto, stop_moto
from tests.windows.conftest import winrm_standin  # noqa: F401 - a fixture (address: ssm to WinRM)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    process, url = start_moto()
    yield url
    stop_moto(process)


@pytest.fixture
def aws_conn(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh moto state and an Airflow connection `golden_aws` pointing at it."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    create_manifest_bucket(moto_endpoint)
    monkeypatch.setenv("AIRFLOW_CONN_GOLDEN_AWS", moto_connection(moto_endpoint, **STAND_INS))
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    return "golden_aws"


@pytest.fixture
def hook(aws_conn: str):  # type: ignore[no-untyped-def]
    from golden_image.hooks.ami import AmiHook

    return AmiHook(aws_conn_id=aws_conn)


@pytest.fixture
def base_ami(hook) -> str:  # type: ignore[no-untyped-def]
    """One of moto's public AMIs to launch builders from."""
    return str(hook.conn.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"])
