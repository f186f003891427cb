"""How the tools reach an EC2 instance: ``AddressResolver``s.

The private (default) or public IP, an SSM port-forwarding tunnel (opened by the task that uses
it, for as long as it runs, on whichever worker it runs), or any class named in the connection's
extras (a bastion; the tests' local stand-ins).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from golden_image.errors import PlatformError
from golden_image.hooks.ami import AmiHook
from golden_image.platforms.aws.settings import CONNECTION_EXTRA, Network
from golden_image.values import Target


class AddressResolver(Protocol):
    """Turns a launched EC2 instance into an address the tools can reach: its SSH port (22) or,
    for Windows, its WinRM/HTTPS port (``port=5986``). A resolver may also have
    ``reach(target)``, a context manager giving the target as one task reaches it (a tunnel)."""

    def target_for(self, instance: dict[str, Any], *, role: str, port: int = 22) -> Target: ...

    def released(self, instance_id: str) -> None: ...


class IpAddressResolver:
    """The instance's private (default) or public IP, on port 22 (SSH) or the port asked for."""

    def __init__(self, *, user: str = "admin", use_public_ip: bool = False) -> None:
        self.use_public_ip = use_public_ip
        self.user = user

    def target_for(self, instance: dict[str, Any], *, role: str, port: int = 22) -> Target:
        address = instance.get("PublicIpAddress" if self.use_public_ip else "PrivateIpAddress")
        if not address:
            raise PlatformError(
                f"instance {instance['InstanceId']} has no "
                f"{'public' if self.use_public_ip else 'private'} IP; set aws.address / the connection's "
                f"extra.{CONNECTION_EXTRA}.address or use a subnet that assigns one (README, aws platform)"
            )
        return Target(instance["InstanceId"], str(address), port, self.user, "", role)

    def released(self, instance_id: str) -> None:
        return None


GUARD = str(Path(__file__).with_name("session_guard.py"))
"""The script every SSM session command runs under (it takes the whole session down with the
task); run by path, in isolated mode: starting it imports neither this package nor boto3."""


class SsmTunnelResolver:
    """``address: ssm``: SSH (or WinRM/HTTPS, port 5986) through an SSM port-forwarding session,
    so builders need no inbound port and no route from the workers, only the SSM agent (Debian,
    Amazon Linux and Amazon's Windows AMIs have
    it) and an instance profile with ``AmazonSSMManagedInstanceCore``.

    The worker needs the AWS CLI and session-manager-plugin. The tunnel is opened by the task that
    talks to the instance and closed when it ends (``reach``); if the task is killed, the session
    dies with it, the CLI and its plugin both (``session_guard``: the kernel's parent-death signal
    on the group's leader). Nothing is kept on the worker, so any task of a run may run on any
    worker.
    """

    DOCUMENT = "AWS-StartPortForwardingSession"

    def __init__(
        self,
        *,
        user: str,
        aws_conn_id: str,
        region: str | None,
        aws_cli: str = "aws",
        ready_timeout_s: float = 300.0,
    ) -> None:
        self.user = user
        self.aws_conn_id = aws_conn_id
        self.region = region
        self.aws_cli = aws_cli
        self.ready_timeout_s = ready_timeout_s

    def command(self, instance_id: str, port: int, remote_port: int = 22) -> list[str]:
        parameters = json.dumps({"portNumber": [str(remote_port)], "localPortNumber": [str(port)]})
        region = ["--region", self.region] if self.region else []
        return [self.aws_cli, "ssm", "start-session", *region, "--target", instance_id,
                "--document-name", self.DOCUMENT, "--parameters", parameters]  # fmt: skip

    def _env(self) -> dict[str, str]:
        """Credentials from the Airflow connection, in the environment (never on the command line)."""
        credentials = AmiHook(aws_conn_id=self.aws_conn_id, region_name=self.region).get_credentials()
        env = {**os.environ, "AWS_ACCESS_KEY_ID": credentials.access_key}
        env["AWS_SECRET_ACCESS_KEY"] = credentials.secret_key
        if credentials.token:
            env["AWS_SESSION_TOKEN"] = credentials.token
        return env

    def target_for(self, instance: dict[str, Any], *, role: str, port: int = 22) -> Target:
        """The instance's remote port; ``reach`` turns it into a local tunnel port per task."""
        host = str(instance.get("PrivateIpAddress") or instance["InstanceId"])
        return Target(instance["InstanceId"], host, port, self.user, "", role)

    @contextlib.contextmanager
    def reach(self, target: Target) -> Iterator[Target]:
        """A tunnel to the target's port for this task: the target at 127.0.0.1:<local port>."""
        with tempfile.TemporaryFile(prefix="golden-ssm-") as log_file:
            process, port = self._open(target.instance_id, target.port, log_file)
            try:
                yield Target(**{**target.to_dict(), "host": "127.0.0.1", "port": port})
            finally:
                _stop(process, port)

    def _open(self, instance_id: str, remote_port: int, log_file: Any) -> tuple[subprocess.Popen[bytes], int]:
        if shutil.which(self.aws_cli) is None:
            raise PlatformError(
                f"address: ssm needs the AWS CLI ('{self.aws_cli}') and session-manager-plugin on the "
                "worker; install them or use address: private_ip (README, aws platform)"
            )
        deadline = time.monotonic() + self.ready_timeout_s
        env = self._env()
        while True:  # right after launch the agent is not registered yet: retry until it is
            port = _free_port()
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    GUARD,
                    str(os.getpid()),
                    *self.command(instance_id, port, remote_port),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # the guard leads the group: CLI and plugin go with it
            )
            while process.poll() is None and time.monotonic() < deadline:
                if _port_open(port):
                    return process, port
                time.sleep(0.2)
            _stop(process, port)
            if time.monotonic() >= deadline:
                log_file.seek(0)
                tail = log_file.read().decode(errors="replace")[-600:]
                raise PlatformError(
                    f"no SSM session to {instance_id} after {self.ready_timeout_s:.0f} s: {tail.strip()}; "
                    "is the SSM agent running and the instance profile allowed to use SSM?"
                )
            time.sleep(2)

    def released(self, instance_id: str) -> None:
        """Nothing to do: each task closed its own tunnel."""
        return None


def _stop(process: subprocess.Popen[bytes], port: int) -> None:
    """SIGTERM the session's group; SIGKILL if the port is still served after 5 s."""
    _kill_group(process.pid)
    for _ in range(50):
        if process.poll() is not None and not _port_open(port):
            return
        time.sleep(0.1)
    _kill_group(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _kill_group(pid: int, sig: signal.Signals = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def make_resolver(network: Network, *, user: str, aws_conn_id: str, region: str | None) -> AddressResolver:
    """The network's ``address_resolver`` class wins (built with ``user=``, ``aws_conn_id=`` and
    ``region=``: a bastion may need the account), else its address mode."""
    if network.address_resolver:
        from airflow.sdk.module_loading import import_string

        try:
            resolver_class = import_string(network.address_resolver)
            resolver: AddressResolver = resolver_class(user=user, aws_conn_id=aws_conn_id, region=region)
            return resolver
        except ImportError as exc:
            raise PlatformError(
                f"address_resolver {network.address_resolver!r} cannot be imported: {exc}", retryable=False
            ) from None
    if network.address == "ssm":
        return SsmTunnelResolver(user=user, aws_conn_id=aws_conn_id, region=region)
    return IpAddressResolver(user=user, use_public_ip=network.address == "public_ip")
