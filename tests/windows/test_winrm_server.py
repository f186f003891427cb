"""The stand-in host's protocol pieces, through real pywinrm (its Protocol, below WinrmHook)."""

from __future__ import annotations

import time

import pytest
import requests
import winrm
import xmltodict
from winrm.exceptions import InvalidCredentialsError
from winrm.protocol import Protocol

from golden_image.values import WinrmLogin
from tests.windows.winrm_server import Command, Reply, WinrmStandin, decode_powershell, windows_path

Standin = tuple[WinrmStandin, WinrmLogin]


def protocol(server: WinrmStandin, *, password: str | None = None, operation_timeout: int = 20) -> Protocol:
    return Protocol(
        server.url,
        transport="ssl",
        username=server.user,
        password=server.password if password is None else password,
        ca_trust_path=str(server.cert_file),
        server_cert_validation="validate",
        operation_timeout_sec=operation_timeout,
        read_timeout_sec=operation_timeout + 10,
        proxy=None,
    )


def test_stdin_is_recorded_and_answered(winrm_standin: Standin) -> None:
    server, _ = winrm_standin
    server.respond(lambda c: Reply(stdout=c.stdin.upper()) if c.command_line == "more" else None)
    client = protocol(server)
    shell = client.open_shell(env_vars={"GOLDEN": "1"})
    command = client.run_command(shell, "more")
    client.send_command_input(shell, command, b"first ")
    client.send_command_input(shell, command, b"second", end=True)
    stdout, _, code = client.get_command_output(shell, command)
    client.cleanup_command(shell, command)
    client.close_shell(shell)
    assert (stdout, code) == (b"FIRST SECOND", 0)
    assert server.commands[0].environment == {"GOLDEN": "1"}
    assert server.requests == ["Create", "Command", "Send", "Send", "Receive", "Signal", "Delete"]


def test_a_long_command_answers_receive_with_timeouts_until_done(winrm_standin: Standin) -> None:
    server, _ = winrm_standin
    server.respond(lambda c: Reply(stdout="done", seconds=2.5) if "Update" in c.text else None)
    response = winrm.Session(
        server.url,
        auth=(server.user, server.password),
        transport="ssl",
        ca_trust_path=str(server.cert_file),
        operation_timeout_sec=1,
        read_timeout_sec=5,
    ).run_ps("Install-WindowsUpdate")
    assert (response.std_out, response.status_code) == (b"done", 0)
    assert server.requests.count("Receive") >= 3, "pywinrm retried after each OperationTimeout fault"


def test_ctrl_c_stops_a_running_command(winrm_standin: Standin) -> None:
    server, _ = winrm_standin
    server.respond(lambda c: Reply(seconds=60))
    client = protocol(server, operation_timeout=1)
    shell = client.open_shell()
    command = client.run_command(shell, "ping -t 127.0.0.1")
    request = client.build_wsman_header(
        action="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal",
        resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd",
        shell_id=shell,
    )
    body = {
        "rsp:Signal": {
            "@CommandId": command,
            "rsp:Code": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c",
        }
    }
    client.send_message(xmltodict.unparse({"env:Envelope": {**request, "env:Body": body}}))
    _, _, code = client.get_command_output(shell, command)
    assert code == -1073741510 and server.commands[0].signals == ["ctrl_c"]


def test_wrong_password_is_http_401(winrm_standin: Standin) -> None:
    server, _ = winrm_standin
    with pytest.raises(InvalidCredentialsError):
        protocol(server, password="nope").open_shell()
    assert server.auth_failures == 1 and server.requests == []


def test_a_restart_shuts_down_then_drops_connections_then_comes_back(winrm_standin: Standin) -> None:
    server, _ = winrm_standin
    server.shutdown_s, server.reboot_down_s = 0.5, 1.0
    session = winrm.Session(
        server.url, auth=(server.user, server.password), transport="ssl", ca_trust_path=str(server.cert_file)
    )
    assert session.run_cmd('shutdown /r /f /t 0 /c "packer restart"').status_code == 0
    assert session.run_cmd('shutdown /r /f /t 60 /c "packer restart test"').status_code == 1115
    time.sleep(0.7)
    with pytest.raises(requests.exceptions.ConnectionError):
        session.run_cmd("hostname")
    time.sleep(1.2)
    assert session.run_cmd('shutdown /r /f /t 60 /c "packer restart test"').status_code == 0
    assert server.boots == 1 and server.commands[-1].boot == 1


def test_decoding_and_paths() -> None:
    assert decode_powershell("powershell.exe -EncodedCommand " + "dwBoAG8AYQBtAGkA") == "whoami"
    assert decode_powershell("PowerShell -NoProfile -enc dwBoAG8AYQBtAGkA") == "whoami"
    assert decode_powershell("cmd /c dir") is None
    assert windows_path('"%TEMP%/x.tmp"') == windows_path("$env:TEMP\\X.TMP")
    assert Command("s", "c", "dir", None).text == "dir"
