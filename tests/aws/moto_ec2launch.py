"""moto_server with EC2Launch v2's side of a Windows launch, which moto does not model.

On EC2, a Windows instance launched with a key pair gets a random Administrator password from
EC2Launch, which EC2 returns by GetPasswordData encrypted (RSA PKCS#1 v1.5) with the key pair's
public key; the pipeline's user data prints the instance's WinRM certificate to the console
(GetConsoleOutput). moto returns 128 random characters for the first and a Linux boot log for
the second. Run as ``python -m tests.aws.moto_ec2launch -H 127.0.0.1 -p PORT`` (what
``motoserver.start_moto`` runs), this server answers both as EC2 would for moto's instances of
Windows AMIs (``platform: windows``):

* the password: made at random for the instance the first time it is asked for, kept in
  ``$GOLDEN_EC2LAUNCH_DIR/<instance-id>/password`` (what the instance itself knows: the tests'
  WinRM stand-in reads it), returned encrypted with the instance's key pair; empty for the first
  ``GOLDEN_EC2LAUNCH_LOOKS`` looks (EC2Launch takes minutes), so a wait sees it arrive;
* the console: EC2Launch's lines and the certificate block of ``windows-userdata.ps1`` with a
  self-signed certificate made for the instance (its key beside it, for the stand-in).
Nothing else of moto changes.
"""

from __future__ import annotations

import base64
import datetime
import os
import secrets
import sys
from pathlib import Path
from typing import Any

CERTIFICATE_BEGIN = "-----BEGIN GOLDEN WINRM CERTIFICATE-----"
CERTIFICATE_END = "-----END GOLDEN WINRM CERTIFICATE-----"
_looks: dict[str, int] = {}


def state_dir(instance_id: str) -> Path:
    path = Path(os.environ["GOLDEN_EC2LAUNCH_DIR"]) / instance_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def instance_password(instance_id: str) -> str:
    """The instance's Administrator password, made once (as EC2Launch does at first boot)."""
    path = state_dir(instance_id) / "password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text()


def instance_certificate(instance_id: str) -> bytes:
    """The DER of the instance's WinRM certificate (SANs 127.0.0.1, localhost), made once; its
    key and PEM beside it for the WinRM stand-in."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = state_dir(instance_id)
    der_path = directory / "cert.der"
    if not der_path.exists():
        import ipaddress

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"EC2AMAZ-{instance_id[-7:].upper()}")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256())
        )
        (directory / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        der_path.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    return der_path.read_bytes()


def encrypted_password(public_key_line: bytes, password: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    key = load_ssh_public_key(public_key_line)
    assert isinstance(key, rsa.RSAPublicKey), "EC2 encrypts Windows passwords with RSA key pairs only"
    return base64.b64encode(key.encrypt(password.encode(), padding.PKCS1v15())).decode()


def console_text(instance_id: str) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y/%m/%d %H:%M:%SZ")
    body = base64.encodebytes(instance_certificate(instance_id)).decode().strip()
    return "\r\n".join(
        [
            f"{stamp}: EC2LaunchV2 2.0.2014: Instance ID: {instance_id}",
            f"{stamp}: Windows sysprep configuration complete.",
            f"{stamp}: Message: Waiting for access to metadata...",
            f"{stamp}: Message: Meta-data is now available.",
            f"{stamp}: Username: Administrator",
            f"{stamp}: Password: <Password>",
            CERTIFICATE_BEGIN,
            *body.splitlines(),
            CERTIFICATE_END,
            f"{stamp}: Message: Windows is Ready to use",
            "",
        ]
    )


def install() -> None:
    from moto.core.utils import utcnow
    from moto.ec2.models.windows import WindowsBackend
    from moto.ec2.responses.general import General
    from moto.ec2.utils import Base64EncodedString

    looks_needed = int(os.environ.get("GOLDEN_EC2LAUNCH_LOOKS", "1"))
    real_console = General.get_console_output

    def get_password_data(self: Any, instance_id: str) -> str:
        instance = self.get_instance(instance_id)
        if instance.platform != "windows" or not instance.key_name:
            return ""
        _looks[instance_id] = _looks.get(instance_id, 0) + 1
        if _looks[instance_id] <= looks_needed:
            return ""
        public = self.key_pairs[instance.key_name].material_public
        return encrypted_password(public, instance_password(instance_id))

    def get_console_output(self: Any) -> Any:
        instance = self.ec2_backend.get_instance(self._get_param("InstanceId"))
        if instance.platform != "windows":
            return real_console(self)
        from moto.core.responses import ActionResult

        return ActionResult(
            {
                "InstanceId": instance.id,
                "Timestamp": utcnow(),
                "Output": Base64EncodedString.from_raw_string(console_text(instance.id)),
            }
        )

    WindowsBackend.get_password_data = get_password_data  # type: ignore[method-assign]
    General.get_console_output = get_console_output  # type: ignore[method-assign]


def main() -> None:
    install()
    from moto.server import main as moto_main

    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
