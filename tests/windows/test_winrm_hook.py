"""WinrmHook (real pywinrm) against the stand-in WS-Management host over real HTTPS."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from golden_image.errors import WinrmError
from golden_image.hooks import winrm as winrm_hook
from golden_image.hooks.winrm import WinrmHook, check_pin, clixml_text, server_cert_sha256
from golden_image.values import WinrmLogin
from tests.windows.winrm_server import Command, Reply, WinrmStandin, clixml_error, self_signed

Standin = tuple[WinrmStandin, WinrmLogin]


def test_run_ps_returns_output_exit_code_and_readable_stderr(winrm_standin: Standin) -> None:
    server, login = winrm_standin

    @server.respond
    def services(command: Command) -> Reply | None:
        if "Get-Service" in command.text:
            return Reply(
                stdout="Running  WinRM\r\n", stderr=clixml_error("Cannot find any service 'x'."), exit_code=3
            )
        return None

    with WinrmHook(login) as hook:
        result = hook.run_ps("Get-Service WinRM, x | Format-Table Status, Name", check=False)
        again = hook.run_ps("Write-Output 'second'")
    assert result.exit_code == 3
    assert result.stdout == "Running  WinRM\r\n"
    assert result.stderr == "Cannot find any service 'x'."
    assert again.exit_code == 0
    first = server.commands[0]
    assert first.command_line.startswith("powershell -NoProfile -NonInteractive -EncodedCommand ")
    assert first.powershell is not None and first.powershell.endswith(
        "Get-Service WinRM, x | Format-Table Status, Name"
    )
    assert server.requests.count("Create") == 1, "one shell serves the hook's commands"


def test_a_failing_script_raises_with_its_error(winrm_standin: Standin) -> None:
    server, login = winrm_standin
    server.respond(
        lambda c: (
            Reply(stderr=clixml_error("Access is denied."), exit_code=1) if "Stop-Service" in c.text else None
        )
    )
    with WinrmHook(login) as hook, pytest.raises(WinrmError, match=r"exited 1 .*Access is denied") as caught:
        hook.run_ps("Stop-Service -Name WinRM")
    assert caught.value.retryable is False


def test_put_and_get_round_trip_in_chunks(winrm_standin: Standin) -> None:
    server, login = winrm_standin
    data = os.urandom(10_000) + "é\r\n".encode()
    with WinrmHook(login) as hook:
        hook.put_file(data, "C:\\Windows\\Temp\\golden\\payload.bin")
        assert server.read_file("c:/windows/temp/GOLDEN/payload.bin") == data
        assert hook.get_file("C:\\Windows\\Temp\\golden\\payload.bin") == data
        hook.put_file(b"", "C:\\empty.txt")
        assert hook.get_file("C:\\empty.txt") == b""
        server.write_file("C:\\results\\pester.xml", b"<test-results/>" * 100_000)
        assert hook.get_file("C:\\results\\pester.xml") == b"<test-results/>" * 100_000
        with pytest.raises(WinrmError, match="more than the 1000"):
            hook.get_file("C:\\results\\pester.xml", limit=1000)
        with pytest.raises(WinrmError, match="does not exist"):
            hook.get_file("C:\\nowhere.txt")
        with pytest.raises(WinrmError, match="absolute Windows path"):
            hook.put_file(b"x", "relative\\path")
    uploads = [c for c in server.commands if c.powershell and "# golden-winrm: append" in c.powershell]
    assert len(uploads) >= 4, "10 kB travels in several chunks"
    assert max(len(c.command_line) for c in server.commands) <= 8191


def test_a_script_too_long_for_a_command_line_runs_from_a_file(winrm_standin: Standin) -> None:
    server, login = winrm_standin
    script = "\n".join(f"Write-Output 'line {i}'" for i in range(600))
    server.respond(lambda c: Reply(stdout="ran\r\n") if c.text.endswith("Write-Output 'line 599'") else None)
    with WinrmHook(login) as hook:
        assert hook.run_ps(script).stdout == "ran\r\n"
    assert server.commands[-1].script_file is not None and "line 0" in server.commands[-1].script_file
    assert not [k for k in server.files if k.endswith(".ps1")], "the runner deletes its script"


def test_wrong_password_is_refused_and_never_named(winrm_standin: Standin) -> None:
    server, login = winrm_standin
    wrong = replace(login, password="Wr0ng-Secret-Value")
    with pytest.raises(WinrmError) as caught:
        WinrmHook(wrong).run_ps("hostname")
    message = str(caught.value)
    assert "HTTP 401" in message and "refused the login of Administrator" in message
    assert caught.value.retryable is False
    assert "Wr0ng-Secret-Value" not in message and server.password not in message
    assert server.auth_failures >= 1 and not server.commands


def test_output_and_errors_never_carry_the_password(winrm_standin: Standin) -> None:
    server, login = winrm_standin
    server.respond(lambda c: Reply(stdout=f"pw={server.password}", stderr=server.password, exit_code=2))
    hook = WinrmHook(login)
    result = hook.run_ps("whoami", check=False)
    assert server.password not in result.stdout + result.stderr
    with pytest.raises(WinrmError) as caught:
        hook.run_ps("whoami")
    assert server.password not in str(caught.value) and "***" in str(caught.value)


def test_the_password_goes_to_airflows_masker(
    winrm_standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow.sdk.log

    masked: list[str] = []
    monkeypatch.setattr(airflow.sdk.log, "mask_secret", masked.append)
    _, login = winrm_standin
    WinrmHook(login)
    assert masked == [login.password]


def test_a_certificate_other_than_the_pinned_one_is_refused_before_the_password_is_sent(
    winrm_standin: Standin,
) -> None:
    server, login = winrm_standin
    pinned_elsewhere = replace(login, cert_sha256="ab" * 32)
    with pytest.raises(WinrmError, match="not the pinned one") as caught:
        WinrmHook(pinned_elsewhere).run_ps("hostname")
    assert caught.value.retryable is False
    assert server.requests == [] and server.auth_failures == 0, "no HTTP request, so no Authorization header"


def test_a_certificate_not_signed_by_the_pinned_one_is_refused(
    winrm_standin: Standin, tmp_path: Path
) -> None:
    server, login = winrm_standin
    other, _, _ = self_signed(tmp_path, "other")
    with pytest.raises(WinrmError, match=r"TLS with .* failed") as caught:
        WinrmHook(replace(login, ca_file=str(other), cert_sha256=server.cert_sha256)).run_ps("hostname")
    assert caught.value.retryable is False and server.requests == []


def test_an_unreachable_port_is_retryable_with_advice(winrm_standin: Standin) -> None:
    _, login = winrm_standin
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    with pytest.raises(WinrmError, match="security group allow TCP 5986") as caught:
        WinrmHook(replace(login, port=free)).run_ps("hostname")
    assert caught.value.retryable is True
    assert "cannot reach Administrator@127.0.0.1" in str(caught.value)


def test_a_command_past_its_timeout_is_terminated(winrm_standin: Standin) -> None:
    server, login = winrm_standin
    server.respond(lambda c: Reply(seconds=30) if "Install-WindowsUpdate" in c.text else None)
    started = time.monotonic()
    with pytest.raises(WinrmError, match="timed out after 2 s"):
        WinrmHook(login, operation_timeout_s=1).run_ps("Install-WindowsUpdate", timeout=2)
    assert time.monotonic() - started < 10
    assert server.commands[-1].signals == ["terminate"]


def test_cancel_stops_the_running_command(winrm_standin: Standin) -> None:
    server, login = winrm_standin
    server.respond(lambda c: Reply(seconds=60) if "Start-Sleep" in c.text else None)
    hook = WinrmHook(login, operation_timeout_s=1)
    threading.Timer(1.0, hook.cancel).start()
    with pytest.raises(WinrmError, match="cancelled"):
        hook.run_ps("Start-Sleep 60")
    assert "terminate" in server.commands[-1].signals
    with pytest.raises(WinrmError, match="cancelled"):
        hook.run_ps("hostname")


def test_the_hook_opens_a_new_shell_after_a_restart(winrm_standin: Standin) -> None:
    server, login = winrm_standin
    server.reboot_down_s = 0
    with WinrmHook(login) as hook:
        hook.run_ps("hostname")
        server.reboot()
        assert hook.run_ps("hostname").exit_code == 0
    assert server.requests.count("Create") == 2
    assert [c.boot for c in server.commands] == [0, 1]


def test_check_pin(winrm_standin: Standin, tmp_path: Path) -> None:
    server, login = winrm_standin
    assert server_cert_sha256(login.host, login.port) == server.cert_sha256
    check_pin(login)
    with pytest.raises(WinrmError, match="presents a certificate with SHA-256"):
        other, _, other_sha = self_signed(tmp_path, "other")
        check_pin(replace(login, ca_file=str(other), cert_sha256=other_sha))
    with pytest.raises(WinrmError, match="does not hold the pinned certificate"):
        check_pin(replace(login, cert_sha256="00" * 32))


def test_clixml_errors_warnings_and_progress() -> None:
    stderr = (
        "#< CLIXML\r\n"
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T></TN>'
        '<MS><I64 N="SourceId">1</I64></MS></Obj>'
        '<S S="Error">Install-Module : No match was found_x000D__x000A_</S>'
        '<S S="Error">    + CategoryInfo : ObjectNotFound_x000D__x000A_</S>'
        '<S S="Warning">reboot pending_x000D__x000A_</S></Objs>'
    )
    assert clixml_text(stderr) == (
        "Install-Module : No match was found\n    + CategoryInfo : ObjectNotFound\nWARNING: reboot pending"
    )
    assert clixml_text("plain text") == "plain text"
    assert clixml_text("#< CLIXML\r\n<Objs broken") == "<Objs broken"


def test_commands_fit_cmd_exe() -> None:
    assert len(winrm_hook.encode_command("x" * 3000)) <= winrm_hook.MAX_COMMAND_LINE
    assert winrm_hook.ps_quote("it's") == "'it''s'"
