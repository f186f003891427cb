"""golden_image.windows: the console certificate, EC2's encrypted password, and the parsers of
what the pipeline's PowerShell prints (recorded shapes in tests/data/windows)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from golden_image import steps, windows
from golden_image.errors import StepError
from golden_image.values import Target
from tests.aws.moto_ec2launch import console_text, encrypted_password, instance_certificate
from tests.specs import family_spec

DATA = Path(__file__).resolve().parents[1] / "data" / "windows"


@pytest.fixture
def ec2launch_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GOLDEN_EC2LAUNCH_DIR", str(tmp_path))
    return tmp_path


def test_the_certificate_is_read_from_the_console_as_ec2_returns_it(ec2launch_dir: Path) -> None:
    der = instance_certificate("i-0123456789abcdef0")
    console = console_text("i-0123456789abcdef0")
    assert windows.certificate_from_console(console) == der
    assert windows.certificate_from_console("EC2LaunchV2: booting\r\n") is None  # not printed yet
    # the same block twice is one certificate; two different ones are refused (not pinned)
    assert windows.certificate_from_console(console + console) == der
    instance_certificate("i-0fedcba9876543210")
    with pytest.raises(windows.WindowsError, match="2 different WinRM certificates"):
        windows.certificate_from_console(console + console_text("i-0fedcba9876543210"))
    # half posted (EC2 posts console output in pieces): not there yet
    assert windows.certificate_from_console(console[: console.index(windows.CERTIFICATE_END)]) is None
    assert windows.certificate_from_pem(windows.certificate_pem(der)) == der
    pem = windows.certificate_pem(der)
    assert pem.startswith("-----BEGIN CERTIFICATE-----\n") and max(map(len, pem.splitlines())) == 64
    from cryptography import x509
    from cryptography.hazmat.primitives.hashes import SHA256

    fingerprint = x509.load_pem_x509_certificate(pem.encode()).fingerprint(SHA256()).hex()
    assert fingerprint == windows.certificate_sha256(der)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("not base64 !!", "not base64"),
        (base64.b64encode(b"junk").decode(), "does not parse"),
        ("", "0 bytes"),
    ],
)
def test_a_damaged_certificate_block_is_an_error(body: str, error: str) -> None:
    text = f"{windows.CERTIFICATE_BEGIN}\n{body}\n{windows.CERTIFICATE_END}\n"
    with pytest.raises(windows.WindowsError, match=error):
        windows.certificate_from_console(text)


def test_the_password_decrypts_with_the_launch_key_only(tmp_path: Path) -> None:
    keys = []
    for name in ("launch", "other"):
        path = tmp_path / name
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(path)], check=True)
        keys.append(path)
    data = encrypted_password(Path(f"{keys[0]}.pub").read_bytes(), "Xk3!p9-Qz")
    assert windows.decrypt_password(data, keys[0].read_bytes()) == "Xk3!p9-Qz"
    with pytest.raises(windows.WindowsError, match="does not decrypt with the launch key") as caught:
        windows.decrypt_password(data, keys[1].read_bytes())
    assert "Xk3" not in str(caught.value)
    ed25519 = tmp_path / "ed"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ed25519)], check=True)
    with pytest.raises(windows.WindowsError, match="not an RSA key"):
        windows.decrypt_password(data, ed25519.read_bytes())


def test_the_facts_become_the_manifest_sections() -> None:
    facts = windows.parse_facts((DATA / "facts.json").read_text())
    assert facts["os_release"] == {
        "ID": "windows",
        "VERSION_ID": "20348.2849",
        "PRETTY_NAME": "Microsoft Windows Server 2022 Datacenter",
        "VERSION_CODENAME": "21H2",
    }
    assert facts["architecture"] == "x64"
    kinds = {p["kind"] for p in facts["packages"]}
    assert kinds == {"program", "hotfix", "feature"}
    dotnet = next(p for p in facts["packages"] if p["name"].startswith("Microsoft .NET Runtime - 8"))
    assert dotnet == {
        "name": "Microsoft .NET Runtime - 8.0.11 (x64)",
        "version": "64.44.23",
        "architecture": "x64",
        "source": "Microsoft Corporation",
        "source_version": "64.44.23",
        "kind": "program",
    }
    assert {"name": "DatadogAgent", "status": "Stopped", "start_type": "Manual"} in facts["windows"][
        "services"
    ]
    # ConvertTo-Json unwraps a one-element list; a BOM; a missing os object
    one = json.loads((DATA / "facts.json").read_text())
    one["hotfixes"] = one["hotfixes"][0]
    assert [
        p["name"]
        for p in windows.parse_facts("\ufeff" + json.dumps(one))["packages"]
        if p["kind"] == "hotfix"
    ] == ["KB5044029"]
    with pytest.raises(windows.WindowsError, match="no 'os' object"):
        windows.parse_facts("{}")
    with pytest.raises(windows.WindowsError, match="printed no JSON"):
        windows.parse_facts("Get-CimInstance : Access denied")


def test_pending_updates_and_sysprep_output() -> None:
    pending = windows.parse_pending_updates((DATA / "pending-updates.json").read_text())
    assert [(u.package, u.security) for u in pending] == [("KB5048654", True), ("KB890830", False)]
    assert windows.parse_pending_updates("[]") == []
    scheduled = json.dumps(
        {"scheduled": True, "tool": "EC2Launch v2", "version": "2.0.2014.0", "command": "sysprep"}
    )
    assert windows.parse_sysprep("WARNING: x\r\n" + scheduled)["version"] == "2.0.2014.0"
    with pytest.raises(windows.WindowsError, match="did not schedule sysprep"):
        windows.parse_sysprep('{"scheduled":false}')


def test_user_data_is_the_pipelines_script_and_holds_no_family_data() -> None:
    data = windows.user_data()
    assert data.startswith("<powershell>\n") and data.endswith("</powershell>\n")
    assert windows.CERTIFICATE_BEGIN in data and windows.CERTIFICATE_END in data
    code = [line for line in data.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if "password" in line.lower()]  # EC2Launch's password, not ours
    for name in ("userdata", "facts", "sysprep", "pending-updates"):
        assert "{{" not in windows.script(name) and "${" not in windows.script(name)


def test_packer_variables_for_a_winrm_target_hold_no_password() -> None:
    spec = family_spec("win", packer={"template": "packer/linux-ssh.pkr.hcl"})
    target = Target("i-1", "10.0.0.5", 5986, "Administrator", "/k", "builder", "winrm", "ab" * 32)
    variables = steps.packer_variables(spec, target)
    assert {k: variables[k] for k in ("winrm_host", "winrm_port", "winrm_username")} == {
        "winrm_host": "10.0.0.5",
        "winrm_port": 5986,
        "winrm_username": "Administrator",
    }
    assert not any(k.startswith("ssh_") or "password" in k for k in variables) and "become" not in variables
    with pytest.raises(StepError, match="needs the platform"):
        steps.bake_packer(spec, target, hook=None, platform=None)
