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


def moto_connection(url: str, *, login: str = "testing", password: str = "testing", **extra: object) -> str:
    """An Airflow AWS connection (as the JSON of an AIRFLOW_CONN_* variable) to moto at ``url``."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": login,
            "password": password,
            "extra": {"endpoint_url": url, "region_name": "us-east-1", **extra},
        }
    )


def stop_moto(process: subprocess.Popen[bytes]) -> None:
    """Stopped by PID, never by name."""
    process.terminate()
    process.wait(timeout=10)
