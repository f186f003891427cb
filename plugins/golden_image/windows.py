"""Pure pieces of the Windows pipeline: the PowerShell the pipeline itself runs (user data, facts,
sysprep, pending updates; ``scripts/windows-*.ps1``), the WinRM certificate the user data prints
to the console, EC2's encrypted password, and the parsers of what the scripts print.

No I/O beyond reading the package's own scripts, no Airflow: the platform and the steps call these.
Nothing of a family file is ever put into a script: scripts are fixed text, parameters travel
as data (JSON files the scripts read), so family data cannot become code on an instance.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from golden_image.decisions import PendingUpdate

SCRIPTS = Path(__file__).resolve().parent / "scripts"
CERTIFICATE_BEGIN = "-----BEGIN GOLDEN WINRM CERTIFICATE-----"
CERTIFICATE_END = "-----END GOLDEN WINRM CERTIFICATE-----"
MAX_CERTIFICATE_BYTES = 16384
MAX_LIST = 5000
"""At most this many hotfixes, programs, features or services are kept from the facts."""


class WindowsError(ValueError):
    """What an instance printed is not what the pipeline's script prints (the message says what)."""


def script(name: str) -> str:
    """One of the pipeline's own PowerShell scripts (``scripts/windows-<name>.ps1``)."""
    return (SCRIPTS / f"windows-{name}.ps1").read_text(encoding="utf-8")


def user_data() -> str:
    """EC2Launch v2 user data (script format) for every Windows builder and test instance."""
    return f"<powershell>\n{script('userdata')}\n</powershell>\n"


# -- the pinned certificate ----------------------------------------------------------------------
def certificate_from_console(text: str) -> bytes | None:
    """The DER of the WinRM certificate the user data printed to the console, or None when the
    console does not show a whole block (yet). A damaged block is an error, and so are two
    different certificates: the user data prints one, once, so a second one is something else on
    the instance (a startup task baked into an image) that must not be pinned."""
    blocks = re.findall(
        re.escape(CERTIFICATE_BEGIN) + r"(.*?)" + re.escape(CERTIFICATE_END), text, flags=re.S
    )
    found = {_certificate_der(body) for body in blocks}
    if len(found) > 1:
        raise WindowsError(
            f"the console shows {len(found)} different WinRM certificates; the user data prints one: "
            "something else on the instance prints certificate blocks, refusing to pin either"
        )
    return found.pop() if found else None


def _certificate_der(block: str) -> bytes:
    body = re.sub(r"\s+", "", block)
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise WindowsError("the console's WinRM certificate block is not base64") from None
    if not der or len(der) > MAX_CERTIFICATE_BYTES:
        raise WindowsError(f"the console's WinRM certificate has {len(der)} bytes")
    from cryptography import x509

    try:
        x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise WindowsError(f"the console's WinRM certificate does not parse: {exc}") from None
    return der


def certificate_from_pem(pem: str) -> bytes:
    """The DER of a certificate kept as PEM (the one a launch pinned, in its target)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        return x509.load_pem_x509_certificate(pem.encode("ascii")).public_bytes(Encoding.DER)
    except (ValueError, UnicodeEncodeError) as exc:
        raise WindowsError(f"the pinned WinRM certificate does not parse: {exc}") from None


def certificate_sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def certificate_pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


# -- the password --------------------------------------------------------------------------------
def decrypt_password(password_data: str, private_key: bytes) -> str:
    """The Administrator password from GetPasswordData's ``PasswordData`` (base64 of the
    password encrypted with RSA PKCS#1 v1.5 under the launch key pair's public key)."""
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key

    openssh = private_key.lstrip().startswith(b"-----BEGIN OPENSSH")
    key = (load_ssh_private_key if openssh else load_pem_private_key)(private_key, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise WindowsError("the launch key is not an RSA key; EC2 encrypts Windows passwords with RSA only")
    wrong = WindowsError(
        "EC2's password data does not decrypt with the launch key (another key pair, or not EC2Launch's data)"
    )
    try:
        clear = key.decrypt(base64.b64decode(password_data, validate=True), padding.PKCS1v15())
        password = clear.decode("ascii")
    except (ValueError, binascii.Error):  # UnicodeDecodeError too: OpenSSL's implicit rejection
        raise wrong from None  # answers a wrong key with random bytes instead of an error
    if not 8 <= len(password) <= 128 or not password.isprintable():
        raise wrong
    return password


# -- what the scripts print ----------------------------------------------------------------------
def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text.strip().lstrip("\ufeff"))
    except json.JSONDecodeError as exc:
        raise WindowsError(f"{what} printed no JSON ({exc}): {text.strip()[:200]!r}") from None


def _text(value: Any, limit: int = 512) -> str:
    return str(value if value is not None else "")[:limit]


def parse_facts(text: str) -> dict[str, Any]:
    """``windows-facts.ps1``'s JSON as the manifest's sections: ``packages`` (installed programs,
    hotfixes and features, in the same shape as Linux packages: name, version, architecture,
    source, source_version, plus ``kind``), ``architecture``, ``os_release`` (ID windows) and
    ``windows`` (OS build, services)."""
    facts = _json(text, "the facts script")
    if not isinstance(facts, dict) or not isinstance(facts.get("os"), dict):
        raise WindowsError("the facts script printed no 'os' object")
    os_facts = {k: _text(v) for k, v in facts["os"].items()}
    build = ".".join(p for p in (os_facts.get("build", ""), os_facts.get("ubr", "")) if p)
    arch = "x64" if "64" in os_facts.get("architecture", "") else os_facts.get("architecture", "")

    def entries(key: str) -> list[Any]:
        value = facts.get(key) or []
        value = value if isinstance(value, list) else [value]  # ConvertTo-Json unwraps one-element lists
        return value[:MAX_LIST]

    packages: list[dict[str, str]] = []
    for program in entries("programs"):
        if isinstance(program, dict) and program.get("name"):
            version = _text(program.get("version")) or "unknown"
            packages.append(
                {"name": _text(program["name"]), "version": version, "architecture": arch,
                 "source": _text(program.get("publisher")) or _text(program["name"]),
                 "source_version": version, "kind": "program"}
            )  # fmt: skip
    for hotfix in entries("hotfixes"):
        if isinstance(hotfix, dict) and hotfix.get("id"):
            packages.append(
                {"name": _text(hotfix["id"]), "version": build or "installed", "architecture": arch,
                 "source": "windows-update", "source_version": build or "installed", "kind": "hotfix"}
            )  # fmt: skip
    for feature in entries("features"):
        if isinstance(feature, str) and feature:
            packages.append(
                {"name": _text(feature), "version": build or "installed", "architecture": arch,
                 "source": "windows-feature", "source_version": build or "installed", "kind": "feature"}
            )  # fmt: skip
    services = [
        {k: _text(s.get(k), 128) for k in ("name", "status", "start_type")}
        for s in entries("services")
        if isinstance(s, dict) and s.get("name")
    ]
    return {
        "architecture": arch,
        "os_release": {
            "ID": "windows",
            "VERSION_ID": build,
            "PRETTY_NAME": os_facts.get("caption", ""),
            "VERSION_CODENAME": os_facts.get("display_version", ""),
        },
        "packages": packages,
        "windows": {"os": os_facts, "build": build, "services": services},
    }


def parse_sysprep(text: str) -> dict[str, Any]:
    """``windows-sysprep.ps1``'s JSON line: what was scheduled (tool, version, command)."""
    result = _json(text.strip().splitlines()[-1] if text.strip() else "", "the sysprep script")
    if not isinstance(result, dict) or result.get("scheduled") is not True:
        raise WindowsError(f"the sysprep script did not schedule sysprep: {text.strip()[:200]!r}")
    return {k: _text(result.get(k)) for k in ("tool", "version", "command")}


def parse_pending_updates(text: str) -> list[PendingUpdate]:
    """``windows-pending-updates.ps1``'s JSON as pending updates (package = KB id or title)."""
    found = _json(text, "the pending-updates script")
    found = found if isinstance(found, list) else [found] if found else []
    updates = []
    for update in found[:MAX_LIST]:
        if not isinstance(update, dict):
            continue
        name = _text(update.get("kb"), 128) or _text(update.get("title"), 128)
        if name:
            updates.append(
                PendingUpdate(
                    package=name,
                    current=None,
                    candidate=_text(update.get("title"), 256),
                    security=bool(update.get("security")),
                )
            )
    return updates
