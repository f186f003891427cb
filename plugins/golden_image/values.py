"""The values every layer passes around: what an instance is reachable as, a source image, an image.

This module is the bottom of the import graph: it imports nothing of the project, so hooks,
platforms, steps and operators can all use it without importing each other.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Communicator = Literal["ssh", "winrm"]
"""How the tools talk to an instance: SSH for Linux; WinRM over HTTPS (port 5986) for Windows."""
WINRM_PORT = 5986
WINDOWS_ADMIN = "Administrator"
"""The account EC2Launch gives a random password at first boot (``GetPasswordData``)."""

CAPTURED, VALIDATED, REJECTED = "captured", "validated", "rejected"
"""An image's status: made from a builder; passed validation (shareable, publishable); failed it."""
GATES = ("vulnerabilities", "validation")
"""The manifest sections of the checks an image must pass; each records ``passed``."""


def failed_gates(manifest: dict[str, Any]) -> list[str]:
    """The gates whose section in the manifest says they did not pass."""
    return [g for g in GATES if isinstance(manifest.get(g), dict) and manifest[g].get("passed") is False]


def status_to_record(manifest: dict[str, Any], requested: str | None) -> str | None:
    """The status a platform records when a step asks for ``requested`` on an image whose manifest
    (with the step's section already in it) is ``manifest``: never ``validated`` while any gate
    failed, so a later step (Testinfra passing) cannot validate an image the vulnerability gate
    rejected. A step that re-runs replaces its own section, so a gate that passes on a re-run
    stops counting against the image."""
    if requested == VALIDATED and failed_gates(manifest):
        return REJECTED
    return requested


def kept_path(family: str, run_id: str, name: str) -> str:
    """Where a platform keeps a run's value (``Platform.keep``), relative to its store: a digest
    of (family, run id) as the directory, since a run id is any text."""
    digest = hashlib.sha256(f"{family}/{run_id}".encode()).hexdigest()[:32]
    return f"runs/{digest}/{name}.json"


@dataclass(frozen=True)
class Target:
    """How Packer, Ansible, Testinfra and the steps reach an instance the platform launched."""

    instance_id: str
    host: str
    port: int
    user: str
    key_file: str
    role: str
    communicator: Communicator = "ssh"
    server_cert_sha256: str = ""
    """winrm: SHA-256 (hex, of the DER) of the instance's WinRM HTTPS certificate, read from its
    console output at launch."""
    server_cert: str = ""
    """winrm: that certificate (PEM; public). Later tasks trust it alone, checked against the
    digest, without reading the console again (it scrolls, and restarts do not print it again)."""
    launch_key: str = ""
    """Where the platform keeps the instance's private key when ``key_file`` is not on this worker
    (aws: an SSM SecureString parameter's name; not a secret). ``Platform.reach`` gives the task
    a target whose ``key_file`` holds it while the task runs."""

    @property
    def escalates(self) -> bool:
        """Whether commands need privilege escalation (passwordless sudo) on this target.

        The one rule the SSH steps, Packer, Ansible and Testinfra all follow: a cloud image's
        login user (``admin``, ``ec2-user``) escalates, root does not.
        """
        return self.communicator == "ssh" and self.user != "root"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class WinrmLogin:
    """What a task needs to reach a Windows instance over WinRM/HTTPS, obtained by the task itself
    from the platform (``Platform.winrm_login``): never in XCom, a manifest or a log. The password
    is left out of ``repr``; ``ca_file`` is a private PEM file holding the one pinned certificate."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    ca_file: str
    cert_sha256: str

    def to_dict(self) -> dict[str, Any]:
        raise TypeError("a WinrmLogin holds a password and is never serialised")


@dataclass(frozen=True)
class SourceImage:
    """The image a builder starts from, with the digest a rebuild decision compares."""

    image_id: str
    digest: str
    description: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class ImageRecord:
    """A family's image as every platform reports it.

    ``artifact`` holds the platform's own facts about the stored thing (local: archive file,
    sha256 and size; aws: AMI name and snapshots); ``manifest`` is the full provenance record.
    """

    image_id: str
    family: str
    version: str
    run_id: str
    status: str
    created_at: float
    source_image_id: str | None = None
    source_digest: str | None = None
    regions: list[str] = field(default_factory=list)
    artifact: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def validated(self) -> bool:
        return self.status == VALIDATED

    def to_json(self) -> dict[str, Any]:
        """Everything but the manifest (XCom, CLI rows)."""
        out = asdict(self)
        out.pop("manifest")
        return out
