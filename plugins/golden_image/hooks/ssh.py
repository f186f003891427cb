"""Run commands on an instance over SSH with OpenSSH (the same client Ansible uses)."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass

from golden_image.errors import SshError
from golden_image.values import Target

SSH_OPTIONS = [
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",  # instances are ephemeral; their host keys are new each launch
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=15",
]


@dataclass(frozen=True)
class SshResult:
    exit_code: int
    stdout: str
    stderr: str


def ssh_command(target: Target) -> list[str]:
    return [
        "ssh",
        *SSH_OPTIONS,
        "-i",
        target.key_file,
        "-p",
        str(target.port),
        f"{target.user}@{target.host}",
    ]


def as_root(target: Target, command: str) -> str:
    """``command`` as root: itself for root, through passwordless sudo when the target escalates."""
    return command if not target.escalates else f"sudo -n sh -c {shlex.quote(command)}"


def run_ssh(
    target: Target,
    command: str,
    *,
    stdin: str | None = None,
    timeout: float = 600,
    check: bool = True,
    root: bool = False,
) -> SshResult:
    """Run a shell command on the instance; raise :class:`SshError` with its output when it fails."""
    command = as_root(target, command) if root else command
    try:
        done = subprocess.run(
            [*ssh_command(target), command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SshError(f"'{command[:80]}' on {target.instance_id} timed out after {timeout:.0f} s") from None
    result = SshResult(done.returncode, done.stdout, done.stderr)
    if check and done.returncode != 0:
        if done.returncode == 255:
            raise SshError(
                f"cannot reach {target.instance_id} at {target.host}:{target.port} over SSH: "
                f"{done.stderr.strip()[-400:]}; is the instance still running (golden janitor)?"
            )
        raise SshError(
            f"'{command[:80]}' failed on {target.instance_id} with exit {done.returncode}: "
            f"{(done.stderr or done.stdout).strip()[-1500:]}"
        )
    return result
