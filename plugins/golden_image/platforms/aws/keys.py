"""Ephemeral SSH keys of builder and test instances: one ed25519 key per launch token, handed
to the instance by cloud-init user data (no EC2 key pair), deleted with the instance. They live
on the worker (``$GOLDEN_HOME/aws/keys``, private); the janitor removes the keys of killed runs.
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

    def ensure(self, token: str) -> tuple[Path, str]:
        """The private key file of ``token`` (made once) and its public key line."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = self.path(token)
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)],
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
