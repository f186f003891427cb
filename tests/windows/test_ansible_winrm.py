"""Real Ansible (ansible-core's ``winrm`` connection, pywinrm) reaches the stand-in host: ``raw``
runs. Modules (Ansible's exec wrapper) are answered by tests/windows/ansible_answers.py, see
test_ansible_windows.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from golden_image.values import WinrmLogin
from tests.windows.winrm_server import Command, Reply, WinrmStandin

ANSIBLE = Path(sys.executable).with_name("ansible")


def test_ansible_raw_over_winrm_https_with_the_pinned_certificate(
    winrm_standin: tuple[WinrmStandin, WinrmLogin],
) -> None:
    server, login = winrm_standin

    @server.respond
    def hostname(command: Command) -> Reply | None:
        return Reply(stdout="WIN-STANDIN\r\n") if command.text == "hostname" else None

    variables = {
        "ansible_connection": "winrm",
        "ansible_winrm_transport": "basic",
        "ansible_winrm_scheme": "https",
        "ansible_port": login.port,
        "ansible_user": login.user,
        "ansible_password": login.password,
        "ansible_winrm_server_cert_validation": "validate",
        "ansible_winrm_ca_trust_path": login.ca_file,
    }
    done = subprocess.run(
        [
            str(ANSIBLE),
            "all",
            "-i",
            f"{login.host},",
            "-m",
            "ansible.builtin.raw",
            "-a",
            "hostname",
            "-e",
            json.dumps(variables),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path(login.ca_file).parent), "ANSIBLE_NOCOLOR": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WIN-STANDIN" in done.stdout
    command = server.commands[-1]
    assert command.command_line.startswith(
        "PowerShell -NoProfile -NonInteractive -ExecutionPolicy Unrestricted"
    )
    assert command.powershell == "hostname"
