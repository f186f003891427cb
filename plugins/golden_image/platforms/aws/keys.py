"""Ephemeral keys of builder and test instances, one per launch token, deleted with the instance.

Linux: an ed25519 SSH key handed to the instance by cloud-init user data (no EC2 key pair).
Windows: an RSA key imported as the launch's EC2 key pair, which EC2Launch encrypts the
Administrator password with (EC2 encrypts Windows passwords with RSA keys only). They live on
the worker (``$GOLDEN_HOME/aws/keys``, private); the janitor removes the keys of killed runs.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


class EphemeralKeys:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, token: str) -> Path:
        return self.directory / f"golden-{token}"

    def ensure(self, token: str, *, kind: str = "ed25519") -> tuple[Path, str]:
        """The private key file of ``token`` (made once) and its public key line; ``kind`` is
        ``ed25519`` (SSH) or ``rsa`` (an EC2 key pair for a Windows password)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = self.path(token)
        if not key.exists():
            size = ["-b", "3072"] if kind == "rsa" else []
            subprocess.run(
                ["ssh-keygen", "-q", "-t", kind, *size, "-N", "", "-C", key.name, "-f", str(key)],
                check=True,
                capture_output=True,
            )
        return key, Path(f"{key}.pub").read_text().strip()

    def forget(self, token: str) -> None:
        for path in (self.path(token), Path(f"{self.path(token)}.pub")):
            path.unlink(missing_ok=True)

    def remove_stale(self, older_than_s: float) -> None:
        for key in self.directory.glob("golden-*") if self.directory.exists() else []:
            if time.time() - key.stat().st_mtime >= older_than_s:
                key.unlink(missing_ok=True)
