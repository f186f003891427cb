"""Start and stop a moto server on a free loopback port (tests and benchmarks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def ec2launch_dir() -> str:
    """Where the moto server's EC2Launch side (tests/aws/moto_ec2launch.py) keeps each Windows
    instance's password and certificate, shared with the tests' WinRM stand-ins (one per session)."""
    if not os.environ.get("GOLDEN_EC2LAUNCH_DIR"):
        os.environ["GOLDEN_EC2LAUNCH_DIR"] = tempfile.mkdtemp(prefix="golden-ec2launch-")
    return os.environ["GOLDEN_EC2LAUNCH_DIR"]


def start_moto(env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """moto_server, with EC2Launch's password and console for Windows instances (moto_ec2launch)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    python_path = os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.aws.moto_ec2launch", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": python_path, "GOLDEN_EC2LAUNCH_DIR": ec2launch_dir(), **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto_server did not start on {url}") from None
            time.sleep(0.2)


STAND_INS = {"golden_image": {"address_resolver": "tests.aws.standins.LocalBackedResolver"}}
"""Connection extras that make moto's instances reachable through real local stand-ins."""
MANIFEST_BUCKET = "golden-image-manifests"
"""The test account's manifest bucket: every connection names it, ``create_manifest_bucket`` makes it."""


def moto_connection(url: str, *, login: str = "testing", password: str = "testing", **extra: object) -> str:
    """An Airflow AWS connection (as the JSON of an AIRFLOW_CONN_* variable) to moto at ``url``,
    naming the test account's manifest bucket in ``extra.golden_image``."""
    given = extra.pop("golden_image", None)
    golden = {"manifest_bucket": MANIFEST_BUCKET, **(given if isinstance(given, dict) else {})}
    return json.dumps(
        {
            "conn_type": "aws",
            "login": login,
            "password": password,
            "extra": {"endpoint_url": url, "region_name": "us-east-1", **extra, "golden_image": golden},
        }
    )


def create_manifest_bucket(url: str, credentials: tuple[str, str] = ("testing", "testing")) -> None:
    """The manifest bucket, as the account's administrator makes it (private, encrypted)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=credentials[0],
                      aws_secret_access_key=credentials[1])  # fmt: skip
    s3.create_bucket(Bucket=MANIFEST_BUCKET)
    s3.put_public_access_block(
        Bucket=MANIFEST_BUCKET,
        PublicAccessBlockConfiguration={"BlockPublicAcls": True, "IgnorePublicAcls": True,
                                        "BlockPublicPolicy": True, "RestrictPublicBuckets": True},
    )  # fmt: skip


def stop_moto(process: subprocess.Popen[bytes]) -> None:
    """Stopped by PID, never by name."""
    process.terminate()
    process.wait(timeout=10)


def bucket_objects(aws_conn_id: str) -> dict[str, str]:
    """Every object in the manifest bucket (key -> text), read through an Airflow connection."""
    from golden_image.hooks.ami import AmiHook

    s3 = AmiHook(aws_conn_id=aws_conn_id).s3
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=MANIFEST_BUCKET)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return {key: s3.get_object(Bucket=MANIFEST_BUCKET, Key=key)["Body"].read().decode() for key in keys}


def manifest_of(aws_conn_id: str, image_id: str) -> dict[str, object]:
    """An AMI's manifest as the pipeline stored it in the manifest bucket."""
    from golden_image.hooks.ami import AmiHook
    from golden_image.platforms.aws.manifests import ManifestStore

    body = AmiHook(aws_conn_id=aws_conn_id).get_object(MANIFEST_BUCKET, ManifestStore.key(image_id))
    assert body is not None, f"no manifest of {image_id} in s3://{MANIFEST_BUCKET}"
    return dict(json.loads(body))
