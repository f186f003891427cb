"""Launch keys of builder and test instances: one per launch token, kept where every worker reads
them, deleted with the instance.

Linux: an ed25519 SSH key handed to the instance by cloud-init user data (no EC2 key pair).
Windows: an RSA key imported as the launch's EC2 key pair, which EC2Launch encrypts the
Administrator password with (EC2 encrypts Windows passwords with RSA only).

The private key is made in memory and kept in the account as an SSM SecureString parameter
(``/golden-image/launch-keys/golden-<token>``, encrypted with the account's AWS-managed SSM key,
readable only under the pipeline's IAM policy), never in XCom, a log or a worker's disk between
tasks. A task that talks to the instance reads it and writes it to a private file for as long as
it runs (``AwsPlatform.reach``), so any task of a run works on any worker. The janitor deletes the keys
of killed runs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from golden_image.errors import PlatformError
from golden_image.hooks import mask_secret

if TYPE_CHECKING:
    from golden_image.hooks.ami import AmiHook

KEY_PATH = "/golden-image/launch-keys"
"""Where launch keys live in Parameter Store (the IAM policy grants this path and no other)."""
RSA_BITS = 3072


def parameter_name(token: str) -> str:
    return f"{KEY_PATH}/golden-{token}"


def new_private_key(kind: str) -> str:
    """A fresh private key, OpenSSH format: ``ed25519`` (SSH) or ``rsa`` (a Windows password key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key = rsa.generate_private_key(65537, RSA_BITS) if kind == "rsa" else ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


def public_key_line(private_key: str, comment: str) -> str:
    """The ``authorized_keys`` / ImportKeyPair line of an OpenSSH private key."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(private_key.encode(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{public.decode()} {comment}"


class LaunchKeys:
    """Launch keys in the primary region's Parameter Store, through ``hook()`` (AmiHook)."""

    def __init__(self, hook: Callable[[], AmiHook]) -> None:
        self.hook = hook

    def ensure(self, token: str, *, kind: str = "ed25519") -> tuple[str, str]:
        """The parameter holding ``token``'s private key (made once: a retried or resumed launch
        gets the key its instance was started with) and its public key line."""
        name = parameter_name(token)
        private_key = self.hook().secret_parameter(name)
        if private_key is None:
            made = new_private_key(kind)
            created = self.hook().put_secret_parameter(name, made)
            private_key = made if created else self.hook().secret_parameter(name)  # a concurrent launch won
            if private_key is None:
                raise PlatformError(f"launch key {name} vanished while it was being made; launch again")
        return name, public_key_line(private_key, f"golden-{token}")

    def private_key(self, name: str, instance_id: str) -> str:
        """The private key kept as ``name`` (registered with Airflow's log masker)."""
        private_key = self.hook().secret_parameter(name)
        if private_key is None:
            raise PlatformError(
                f"the launch key of {instance_id} ({name}) is gone from Parameter Store: the instance was "
                "terminated or the janitor removed it; run the DAG again (a new instance)",
                retryable=False,
            )
        mask_secret(private_key)
        return private_key

    @contextlib.contextmanager
    def materialised(self, name: str, instance_id: str) -> Iterator[Path]:
        """The private key ``name`` as a 0600 file (``.pub`` beside it) for one task, in memory
        (``/dev/shm``) where there is one; removed after."""
        private_key = self.private_key(name, instance_id)
        memory = (
            "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        )  # a SIGKILLed task leaves no key on disk
        with tempfile.TemporaryDirectory(prefix="golden-key-", dir=memory) as private:
            path = Path(private) / "id_launch"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(private_key)
            Path(f"{path}.pub").write_text(public_key_line(private_key, Path(name).name) + "\n")
            yield path

    def forget(self, token: str) -> None:
        self.hook().delete_parameter(parameter_name(token))

    def remove_stale(self, older_than_s: float, now: float) -> list[str]:
        """Delete the launch keys written longer ago than the TTL (their runs were killed)."""
        removed = []
        for parameter in self.hook().parameters_under(KEY_PATH):
            modified = parameter.get("LastModifiedDate")
            age = now - modified.timestamp() if isinstance(modified, datetime) else older_than_s
            if age >= older_than_s:
                self.hook().delete_parameter(str(parameter["Name"]))
                removed.append(str(parameter["Name"]))
        return removed
