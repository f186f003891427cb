"""The Windows playbooks, run by AnsibleHook (real ansible-playbook, its ``winrm`` connection,
real ansible.windows modules' wrappers) against the stand-in host answering as Windows Server
2022 Core would (tests/windows/ansible_answers.py)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from golden_image import paths
from golden_image.errors import AnsibleError
from golden_image.hooks.ansible import AnsibleHook, AnsibleSummary
from golden_image.values import Target, WinrmLogin
from tests.windows.ansible_answers import VirtualWindows, ansible_modules
from tests.windows.winrm_server import WinrmStandin

BASE = "windows2022-core-dotnet"
IIS = "windows2022-core-dotnet-iis"
SCHANNEL = "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL\\Protocols"


def _target(login: WinrmLogin) -> Target:
    return Target(
        instance_id="i-0win2022standin",
        host=login.host,
        port=login.port,
        user=login.user,
        key_file="/nonexistent/launch-key.pem",
        role="build",
        communicator="winrm",
        server_cert_sha256=login.cert_sha256,
    )


def _run(
    server: WinrmStandin, login: WinrmLogin, family: str, state: VirtualWindows, lines: list[str]
) -> AnsibleSummary:
    server.respond(ansible_modules(server, state))
    playbook = paths.include_dir() / "ansible" / f"{family}.yml"
    return AnsibleHook().run_playbook(
        _target(login), playbook, {"golden_family": family}, login=login, on_line=lines.append
    )


def _services(state: VirtualWindows) -> dict[str, tuple[str, str]]:
    return {s.name: (s.state, s.start_mode) for s in state.services.values()}


def test_both_windows_playbooks_over_winrm(winrm_standin: tuple[WinrmStandin, WinrmLogin]) -> None:
    server, login = winrm_standin
    state = VirtualWindows.server_2022_core()
    state.shutdown_scheduled = True  # win_reboot aborts it, then restarts
    lines: list[str] = []
    started = time.monotonic()

    base = _run(server, login, BASE, state, lines)
    base_calls = list(state.calls)
    base_seconds = time.monotonic() - started

    assert base.status == "successful", base.to_dict()
    assert base.failed_task is None
    # hardening: SMBv1 feature removed (absent already on 2022) and off in the server, old
    # protocols off on both sides, TLS 1.2 on, RDP with NLA
    assert ("win_feature", {"name": "FS-SMB1", "state": "absent"}) in [
        (m, {k: a[k] for k in ("name", "state")}) for m, a in base_calls if m == "win_feature"
    ]
    assert state.features["FS-SMB1"] is False
    assert state.value("HKLM:\\SYSTEM\\CurrentControlSet\\Services\\LanmanServer\\Parameters", "SMB1") == 0
    for protocol in ("SSL 2.0", "SSL 3.0", "TLS 1.0", "TLS 1.1"):
        for side in ("Server", "Client"):
            assert state.value(f"{SCHANNEL}\\{protocol}\\{side}", "Enabled") == 0, (protocol, side)
            assert state.value(f"{SCHANNEL}\\{protocol}\\{side}", "DisabledByDefault") == 1
    for side in ("Server", "Client"):
        assert state.value(f"{SCHANNEL}\\TLS 1.2\\{side}", "Enabled") == 1
    rdp = "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Terminal Server\\WinStations\\RDP-Tcp"
    assert state.value(rdp, "UserAuthentication") == 1
    writes = {(a["path"], a["name"], a["data"], a["type"]) for a in state.modules("win_regedit")}
    assert {
        ("HKLM:\\SYSTEM\\CurrentControlSet\\Services\\LanmanServer\\Parameters", "SMB1", 0, "dword"),
        (f"{SCHANNEL}\\TLS 1.0\\Server", "Enabled", 0, "dword"),
        (f"{SCHANNEL}\\TLS 1.1\\Client", "DisabledByDefault", 1, "dword"),
        (rdp, "UserAuthentication", 1, "dword"),
    } <= writes
    # .NET Framework 4.8.1 (exit 3010) -> win_reboot restarted the stand-in; .NET 8 runtime
    assert state.value("HKLM:\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP\\v4\\Full", "Release") == 533320
    assert state.reboots == [0] and server.boots == 1
    assert state.exists("C:\\Program Files\\dotnet\\shared\\Microsoft.NETCore.App\\8.0.23")
    reboot = next(t for t in base.tasks if t["task"] == "Reboot when the .NET Framework asks for it")
    assert reboot["status"] == "changed"
    assert "[WARNING]: A scheduled reboot was pre-empted by Ansible." in lines
    assert not state.shutdown_scheduled
    # agents: their services stopped + manual (the Datadog MSI started its agent; the Tentacle
    # MSI creates no service: the role creates it for the instance configured at boot)
    services = _services(state)
    for name in ("OctopusDeploy Tentacle", "datadogagent", "datadog-trace-agent", "datadog-process-agent"):
        assert services[name] == ("stopped", "manual"), name
    tentacle = state.services["octopusdeploy tentacle"]
    assert (
        tentacle.path
        == '"C:\\Program Files\\Octopus Deploy\\Tentacle\\Tentacle.exe" run --instance="Tentacle"'
    )
    assert "Octopus Deploy Tentacle" in state.products and "Datadog Agent" in state.products
    assert not state.exists("C:\\Windows\\Temp\\golden-agents")  # no installer left behind
    # no IIS in the base flavour
    assert not any(state.features[f] for f in state.features if f.startswith("Web-"))
    assert [a["name"] for a in state.modules("win_feature")] == ["FS-SMB1"]
    assert "W3SVC" not in services

    # the same playbook again on the same host: no install, no reboot; only the download
    # directory comes and goes (the role removes it at the end)
    state.calls.clear()
    again = _run(server, login, BASE, state, lines)
    changed = [t["task"].split(" : ")[-1] for t in again.tasks if t["status"] == "changed"]
    assert changed == ["Download directory", "Download the agent MSIs", "No installer left behind"], changed
    assert state.reboots == [0] and server.boots == 1

    # the IIS flavour, on the base flavour's image (its state)
    state.calls.clear()
    iis = _run(server, login, IIS, state, lines)
    assert iis.status == "successful", iis.to_dict()
    features = state.modules("win_feature")
    assert len(features) == 1 and "Web-Server" in features[0]["name"]
    assert state.features["Web-Server"] and state.features["Web-Asp-Net45"]
    assert _services(state)["W3SVC"] == ("running", "auto")
    assert _services(state)["WAS"] == ("running", "auto")
    assert state.exists("C:\\Program Files\\IIS\\Asp.Net Core Module\\V2\\aspnetcorev2.dll")
    # the IIS playbook does not run the base roles again: no hardening, no agents
    assert not state.modules("win_regedit")
    assert [a["name"] for a in state.modules("win_service")] == ["WAS", "W3SVC"]

    # the password: in no line Ansible printed and not in the summaries
    text = "\n".join(lines)
    assert "TASK [windows_agents : Datadog services stopped" in text
    for summary in (base, again, iis):
        assert login.password not in str(summary.to_dict())
    assert login.password not in text
    total = time.monotonic() - started
    print(f"base playbook {base_seconds:.1f} s, both {total:.1f} s")


def test_an_installer_that_fails_fails_the_playbook_naming_the_task(
    winrm_standin: tuple[WinrmStandin, WinrmLogin],
) -> None:
    server, login = winrm_standin
    installer = "NDP481-x86-x64-AllOS-ENU.exe"
    task = ".NET Framework 4.8.1 (offline installer, checksum pinned)"
    state = VirtualWindows.server_2022_core()
    state.installer_rc[installer.lower()] = 1603  # ERROR_INSTALL_FAILURE
    lines: list[str] = []
    with pytest.raises(AnsibleError) as failed:
        _run(server, login, BASE, state, lines)
    message = str(failed.value)
    assert f"task '{task}' failed" in message
    assert "unexpected rc from" in message and installer in message and "rc=1603" in message
    summary: Any = failed.value.summary
    assert summary.failed_task == task
    assert login.password not in message and login.password not in "\n".join(lines)


def test_a_loop_item_that_fails_is_named_and_the_password_is_masked(
    winrm_standin: tuple[WinrmStandin, WinrmLogin],
) -> None:
    """A Datadog MSI without the process agent's service: the loop's failed item is named with the
    module's message; a module message that carries the password is masked everywhere."""
    server, login = winrm_standin
    state = VirtualWindows.server_2022_core()
    datadog = state.installers["ddagent-cli-7.60.1.msi"]
    state.installers["ddagent-cli-7.60.1.msi"] = replace(
        datadog, services=tuple(s for s in datadog.services if s.name != "datadog-process-agent")
    )
    state.scripts.insert(
        0,
        lambda _state, script, params: (
            {"changed": False, "warnings": [f"signed; checked as {login.user}:{login.password}"]}
            if "Get-AuthenticodeSignature" in script
            else None
        ),
    )
    lines: list[str] = []
    with pytest.raises(AnsibleError) as failed:
        _run(server, login, BASE, state, lines)
    message = str(failed.value)
    assert "Datadog services stopped, start mode manual" in message
    assert (
        "item datadog-process-agent: Service 'datadog-process-agent' is not installed, "
        "need to set 'path' to create a new service"
    ) in message
    assert _services(state)["datadogagent"] == ("stopped", "manual")  # the items before it ran
    text = "\n".join(lines)
    assert "[WARNING]: signed; checked as Administrator:********" in text
    for where in (message, text, str(failed.value.summary.to_dict())):
        assert login.password not in where


def test_facts_of_windows_server_2022_core(
    winrm_standin: tuple[WinrmStandin, WinrmLogin], shared_tmp: Path
) -> None:
    """Fact gathering (ansible.windows.setup) answers as Server 2022 Core does."""
    server, login = winrm_standin
    state = VirtualWindows.server_2022_core()
    server.respond(ansible_modules(server, state))
    playbook = shared_tmp / "facts.yml"  # readable by the unprivileged ansible-playbook
    playbook.write_text(
        "- hosts: all\n"
        "  gather_facts: true\n"
        "  tasks:\n"
        "    - ansible.builtin.debug:\n"
        '        msg: "{{ os }}/{{ ansible_distribution_version }}"\n'
        "      vars:\n"
        '        os: "{{ ansible_os_family }}/{{ ansible_os_installation_type }}"\n'
    )
    playbook.chmod(0o644)
    lines: list[str] = []
    summary = AnsibleHook().run_playbook(_target(login), playbook, {}, login=login, on_line=lines.append)
    assert summary.status == "successful"
    assert [m for m, _ in state.calls] == ["setup"]
    assert any('"msg": "Windows/Server Core/10.0.20348.0"' in line for line in lines), lines
