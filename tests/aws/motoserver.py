"""Start and stop a moto server on a free loopback port (tests and benchmarks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def start_moto(env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
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
