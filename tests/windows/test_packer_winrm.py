"""Real Packer 1.6.6 over WinRM/HTTPS (its Go winrm communicator, winrmcp uploads, the powershell
and windows-restart provisioners) against the stand-in host, through PackerHook."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from golden_image.errors import PackerError, WinrmError
from golden_image.hooks import winrm as winrm_hook
from golden_image.hooks.packer import PackerHook
from golden_image.values import WinrmLogin
from tests.windows.winrm_server import Command, Reply, WinrmStandin, self_signed

TEMPLATE = Path(__file__).resolve().parents[1] / "data" / "windows-winrm-test.pkr.hcl"
pytestmark = pytest.mark.skipif(shutil.which("packer") is None, reason="needs packer")
Standin = tuple[WinrmStandin, WinrmLogin]


def test_the_template_validates() -> None:
    PackerHook().validate(TEMPLATE, {"winrm_host": "127.0.0.1", "winrm_port": 5986})


def test_a_build_over_winrm_uploads_runs_and_restarts_without_showing_the_password(
    winrm_standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, login = winrm_standin
    started: list[tuple[list[str], dict[str, str]]] = []
    popen = subprocess.Popen

    def recording_popen(command: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        started.append((command, kwargs["env"]))
        var_file = next(Path(a.split("=", 1)[1]) for a in command if a.startswith("-var-file="))
        assert login.password not in var_file.read_text()
        return popen(command, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording_popen)

    @server.respond
    def inline_script(command: Command) -> Reply | None:
        if "golden: hello from the build" in command.text and command.script_file is not None:
            return Reply(stdout=f"golden: hello from the build\r\nleaked {server.password}?\r\n")
        return None

    lines: list[str] = []
    result = PackerHook().build(TEMPLATE, {"winrm_timeout": "60s"}, winrm=login, on_line=lines.append)

    assert result.artifacts == [{"build": "null.windows", "id": "Null"}]
    script = next(data for path, data in server.uploads if path.startswith("c:\\windows\\temp\\script-"))
    assert b"Set-ItemProperty -Path 'HKLM:\\SOFTWARE\\Golden' -Name Stage -Value 'baked'" in script
    ran = [
        c for c in server.commands if c.script_file is not None and "hello from the build" in c.script_file
    ]
    assert ran and ran[0].command_line.startswith("powershell -executionpolicy bypass")
    restart = [c for c in server.commands if c.command_line == 'shutdown /r /f /t 0 /c "packer restart"']
    assert len(restart) == 1 and restart[0].boot == 0
    assert server.boots == 1
    after = [c for c in server.commands if c.boot == 1]
    assert after and "restarted." in (after[-1].powershell or ""), "Packer checked the host came back"
    assert any("golden: hello from the build" in line for line in lines)
    assert any("WIN-STANDIN restarted." in line for line in lines)
    assert any("<sensitive>" in line for line in lines), "the leaked password was redacted"
    assert not [line for line in lines if server.password in line]
    [(command, env)] = started
    assert login.password not in " ".join(command)
    assert env["PKR_VAR_winrm_password"] == login.password
    assert env["SSL_CERT_FILE"] != login.ca_file, "a copy the unprivileged run's user can read"
    assert "-var-file=" in " ".join(command) and command[-1] == TEMPLATE.name


def test_a_host_presenting_another_certificate_gets_no_packer_run(
    winrm_standin: Standin, tmp_path: Path
) -> None:
    server, login = winrm_standin
    other, _, other_sha = self_signed(tmp_path, "other")  # the certificate the console printed
    pinned_elsewhere = replace(login, ca_file=str(other), cert_sha256=other_sha)
    with pytest.raises(WinrmError, match=r"presents a certificate with SHA-256 .* not the pinned") as caught:
        PackerHook().build(TEMPLATE, {"winrm_timeout": "10s"}, winrm=pinned_elsewhere)
    assert caught.value.retryable is False
    with pytest.raises(WinrmError, match="does not hold the pinned certificate"):
        PackerHook().build(TEMPLATE, {"winrm_timeout": "10s"}, winrm=replace(login, cert_sha256="ab" * 32))
    assert server.requests == []


def test_packer_itself_refuses_a_certificate_its_ca_file_does_not_trust(
    winrm_standin: Standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, login = winrm_standin
    other, _, _ = self_signed(tmp_path, "other")
    monkeypatch.setattr(winrm_hook, "check_pin", lambda login: None)  # what Packer does on its own
    with pytest.raises(PackerError, match="Timeout waiting for WinRM"):
        PackerHook().build(TEMPLATE, {"winrm_timeout": "5s"}, winrm=replace(login, ca_file=str(other)))
    assert server.requests == [] and server.auth_failures == 0, "the password never left the worker"


def test_the_password_is_refused_as_a_packer_variable(winrm_standin: Standin) -> None:
    _, login = winrm_standin
    with pytest.raises(PackerError, match="PKR_VAR_winrm_password"):
        PackerHook().build(TEMPLATE, {"winrm_password": login.password}, winrm=login)
