"""moto with IAM enforcement on, and pipeline users holding (a reduction of) include/iam's policy.

moto enforces IAM (INITIAL_NO_AUTH_ACTION_COUNT) on actions only: it does not evaluate resource
ARNs or conditions. So a user gets the policy's actions with Resource "*"; the scoping
(destructive calls only on golden:family-tagged resources, pointers under /golden/) is checked
statically in tests/unit/test_iam_policy.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from golden_image.hooks.ami import AmiHook
from tests.aws.motoserver import create_manifest_bucket, moto_connection, start_moto, stop_moto
from tests.aws.standins import CLOUD_CREDENTIALS

POLICY = Path(__file__).resolve().parents[2] / "include" / "iam" / "golden-image-pipeline.json"
ADMIN_SETUP_CALLS = 3  # create_user, put_user_policy, create_access_key


def actions_only(policy: dict[str, Any], without: str | None = None) -> dict[str, Any]:
    actions: list[str] = []
    for statement in policy["Statement"]:
        value = statement["Action"]
        actions += [value] if isinstance(value, str) else value
    allowed = sorted({a for a in actions if a != without})
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": allowed, "Resource": "*"}]}


@pytest.fixture(scope="session")
def enforcing_moto() -> Iterator[tuple[str, tuple[str, str]]]:
    process, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": str(ADMIN_SETUP_CALLS)})
    iam = boto3.client(
        "iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    iam.create_user(UserName="admin")
    iam.put_user_policy(
        UserName="admin",
        PolicyName="all",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    admin = (key["AccessKeyId"], key["SecretAccessKey"])
    create_manifest_bucket(url, admin)
    os.environ[CLOUD_CREDENTIALS] = ":".join(admin)  # the stand-ins read user data as the cloud
    yield url, admin
    os.environ.pop(CLOUD_CREDENTIALS, None)
    stop_moto(process)


def pipeline_hook(
    url: str,
    admin: tuple[str, str],
    user: str,
    policy: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    region: str = "us-east-1",
    extra: dict[str, Any] | None = None,
) -> AmiHook:
    iam = boto3.client(
        "iam",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=admin[0],
        aws_secret_access_key=admin[1],
    )
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="golden-image-pipeline", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    conn = moto_connection(url, login=key["AccessKeyId"], password=key["SecretAccessKey"], **(extra or {}))
    monkeypatch.setenv(f"AIRFLOW_CONN_{user.upper()}", conn)
    return AmiHook(aws_conn_id=user.lower(), region_name=region)


def admin_client(url: str, admin: tuple[str, str], service: str, region: str = "us-east-1") -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=admin[0],
        aws_secret_access_key=admin[1],
    )
