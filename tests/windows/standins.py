"""Windows machines behind moto's instances: each EC2 instance of a Windows AMI is served by a
stand-in WinRM host (tests/windows/winrm_server.py) with that instance's certificate and password,
the ones moto's EC2Launch side made for it (tests/aws/moto_ec2launch.py), so the pipeline's own
login (GetPasswordData + the console's certificate, pinned) is what reaches it.

``WindowsStandInResolver`` is an ``AddressResolver`` named in the test connection's extras. The
hosts live in this process (``dag.test()`` runs every task here). Each host answers, besides the
protocol defaults, what the pipeline's Windows scripts and tools ask a Windows Server 2022 Core
builder, with realistic output: the facts (``windows-facts.ps1``), EC2Launch's sysprep (which
shuts the instance down: it is stopped in moto), Windows Update rounds run by Packer's elevated
powershell provisioner, the reboot marker restart, pending updates, Pester runs
(tests/windows/pester_answers.py) and Ansible modules (tests/windows/ansible_answers.py).
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from golden_image import windows
from golden_image.hooks.ami import AmiHook
from golden_image.values import Target
from tests.windows.ansible_answers import VirtualWindows, ansible_modules
from tests.windows.pester_answers import pester_reply
from tests.windows.winrm_server import Command, Reply, WinrmStandin, windows_path

FACTS = Path(__file__).resolve().parents[1] / "data" / "windows" / "facts.json"
START_TYPES = {"auto": "Automatic", "delayed": "Automatic", "manual": "Manual", "disabled": "Disabled"}
"""win_service's start modes as Get-Service's StartType prints them."""
REBOOT_MARKER = "C:\\Windows\\Temp\\golden-reboot-required"
UPDATE_SCRIPT_MARKER = "# One round of Windows updates for a golden image"
SERVER_2022 = "Microsoft server operating system version 21H2 for x64-based Systems"
MONTHLY_UPDATES = [
    ("KB5048654", f"2024-12 Cumulative Update for {SERVER_2022} (KB5048654)"),
    (
        "KB5048625",
        f"2024-12 Cumulative Update for .NET Framework 3.5, 4.8 and 4.8.1 for {SERVER_2022} (KB5048625)",
    ),
    ("KB890830", "Windows Malicious Software Removal Tool x64 - v5.130 (KB890830)"),
]
"""What Windows Update offers the source AMI: round 1 installs these and needs a reboot."""
SECOND_ROUND = [("KB5049617", f"2024-12 Servicing Stack Update for {SERVER_2022} (KB5049617)")]
"""Offered only after the first round's reboot, as servicing stack updates are."""


@dataclass
class WindowsHost:
    """One stand-in Windows instance: its WinRM host and what the pipeline did to it."""

    instance_id: str
    role: str
    server: WinrmStandin
    ec2: Any
    run_id: str = ""
    windows: VirtualWindows = field(default_factory=VirtualWindows.server_2022_core)
    """What Ansible's modules see and change (tests/windows/ansible_answers.py); an instance of a
    captured AMI starts from its builder's state, as a disk would."""
    pending_updates: list[tuple[str, str]] = field(default_factory=lambda: list(MONTHLY_UPDATES))
    installed_updates: list[str] = field(default_factory=list)
    update_rounds: list[dict[str, Any]] = field(default_factory=list)
    sysprep: bool = False

    # -- the pipeline's own scripts --------------------------------------------------------------
    def facts(self, command: Command) -> Reply | None:
        if windows.script("facts") not in command.text:
            return None
        facts = json.loads(FACTS.read_text())  # the base AMI's, then what the bake changed
        facts["hotfixes"] += [
            {"id": kb, "description": "Update", "installed_on": ""} for kb in self.installed_updates
        ]
        facts["features"] = sorted(name for name, installed in self.windows.features.items() if installed)
        names = {p["name"] for p in facts["programs"]}
        facts["programs"] += [
            {"name": product, "version": "", "publisher": ""}
            for product in self.windows.products
            if product not in names
        ]
        facts["services"] = [
            {"name": s.name, "status": s.state.capitalize(), "start_type": START_TYPES[s.start_mode]}
            for s in self.windows.services.values()
        ]
        return Reply(stdout=json.dumps(facts, separators=(",", ":")) + "\r\n")

    def sysprep_run(self, command: Command) -> Reply | None:
        if windows.script("sysprep") not in command.text:
            return None
        self.sysprep = True
        # EC2Launch's sysprep --shutdown: a few seconds later the machine is off (stopped in EC2)
        threading.Timer(0.5, self._shut_down).start()
        done = {"scheduled": True, "tool": "EC2Launch v2", "version": "2.0.2014.0",
                "command": "EC2Launch.exe sysprep --clean --shutdown"}  # fmt: skip
        return Reply(stdout=json.dumps(done, separators=(",", ":")) + "\r\n")

    def _shut_down(self) -> None:
        self.ec2.stop_instances(InstanceIds=[self.instance_id])
        self.server.stop()

    def pending(self, command: Command) -> Reply | None:
        if windows.script("pending-updates") not in command.text:
            return None
        found = [{"kb": kb, "title": title, "classification": "Security Updates", "severity": "Important",
                  "security": True} for kb, title in self.pending_updates]  # fmt: skip
        return Reply(stdout=json.dumps(found) + "\r\n")

    # -- Packer: Windows Update rounds (elevated scheduled tasks) and the marker restart ------------
    def elevated_update_round(self, command: Command) -> Reply | None:
        """Packer's elevated runner of ``windows-update.ps1``: the task's output, as its log shows it."""
        runner = command.script_file or ""
        if "Packer elevated task" not in runner:
            return None
        scripts = re.findall(r"c:/Windows/Temp/(script-[0-9a-f-]+\.ps1)", runner, re.I)
        env_files = re.findall(r"c:/Windows/Temp/(packer-ps-env-vars-[0-9a-f-]+\.ps1)", runner, re.I)
        if not scripts or not env_files:
            return None
        script = self.server.files.get(f"c:\\windows\\temp\\{scripts[0].lower()}", b"").decode()
        if UPDATE_SCRIPT_MARKER not in script:
            return None
        env_text = self.server.files.get(f"c:\\windows\\temp\\{env_files[0].lower()}", b"").decode()
        env = dict(re.findall(r'\$env:([A-Z_]+)="([^"]*)"', env_text))
        round_no, mode, policy = (
            env.get("GOLDEN_UPDATE_ROUND", "?"),
            env.get("GOLDEN_UPDATE_MODE"),
            env.get("UPDATE_POLICY"),
        )
        if mode == "verify":
            lines = [f"golden-update-pending: {kb} {title}" for kb, title in self.pending_updates]
            summary = (
                f"golden-update-summary: round={round_no} mode=verify policy={policy} "
                f"found={len(lines)} installed=0 failed=0 reboot=false"
            )
            self.update_rounds.append({"round": round_no, "mode": mode, "installed": []})
            return Reply(stdout="\r\n".join([*lines, summary, ""]), exit_code=1 if lines else 0)
        installing, self.pending_updates = self.pending_updates, []
        if installing and round_no == "1":
            self.pending_updates = list(SECOND_ROUND)  # offered once the first round is in
        self.installed_updates += [kb for kb, _ in installing]
        self.update_rounds.append(
            {"round": round_no, "mode": mode, "installed": [kb for kb, _ in installing]}
        )
        lines = [f"golden-update: {kb} {title}" for kb, title in installing]
        reboot = bool(installing)
        if reboot:
            lines.append("golden-update-reboot: required")
            self.server.write_file(REBOOT_MARKER, b"")
        lines.append(
            f"golden-update-summary: round={round_no} mode=install policy={policy} found={len(installing)} "
            f"installed={len(installing)} failed=0 reboot={'true' if reboot else 'false'}"
        )
        return Reply(stdout="\r\n".join([*lines, ""]), exit_code=3010 if reboot else 0)

    def marker_restart(self, command: Command) -> Reply | None:
        if "golden-reboot-required" not in command.command_line or not command.command_line.startswith(
            "cmd /c"
        ):
            return None
        if self.server.files.pop(REBOOT_MARKER.lower(), None) is not None:
            return Reply(reboot=True)
        return Reply(stdout="golden-update: no reboot needed\r\n")

    def pester(self, command: Command, **options: Any) -> Reply | None:
        """Pester's run as tests/windows/pester_answers.py answers it (``options``: its failures)."""
        answer = pester_reply(command.text, self.server.files, **options)
        if answer is None:
            return None
        for path in list(self.server.files):  # the answer's files under the host's own path keys
            if windows_path(path) != path:
                self.server.files[windows_path(path)] = self.server.files.pop(path)
        return Reply(exit_code=answer[0], stdout=answer[1], stderr=answer[2])

    def install(self) -> None:
        self.server.respond(ansible_modules(self.server, self.windows))
        for responder in (self.facts, self.sysprep_run, self.pending, self.elevated_update_round,
                          self.marker_restart, self.pester):  # fmt: skip
            self.server.respond(responder)


class WindowsStandInResolver:
    hosts: ClassVar[dict[str, WindowsHost]] = {}
    """Live hosts by instance id (this process: ``dag.test()``)."""
    seen: ClassVar[list[WindowsHost]] = []
    """Every host ever started, in order (tests read what each was asked)."""
    configure: ClassVar[list[Any]] = []
    """Callables run on each new host before it answers (a test's own responders)."""

    def __init__(
        self, *, user: str = "Administrator", aws_conn_id: str = "aws_default", region: str | None = None
    ):
        self.user = user
        self.aws_conn_id = aws_conn_id
        self.region = region

    def target_for(self, instance: dict[str, Any], *, role: str, port: int = 22) -> Target:
        instance_id = instance["InstanceId"]
        host = self.hosts.get(instance_id)
        if host is None:
            state = Path(os.environ["GOLDEN_EC2LAUNCH_DIR"]) / instance_id  # what EC2Launch made
            server = WinrmStandin(
                "Administrator",
                (state / "password").read_text(),
                directory=state,
                reboot_down_s=0.2,
                certificate=(state / "cert.pem", state / "key.pem"),
                computer_name=f"EC2AMAZ-{instance_id[-7:].upper()}",
            )
            ec2 = AmiHook(aws_conn_id=self.aws_conn_id, region_name=self.region).conn
            run_id = next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == "golden:run-id"), "")
            host = WindowsHost(instance_id, role, server, ec2, run_id)
            if (built := self._builder_of(ec2, instance["ImageId"])) is not None:
                host.windows = copy.deepcopy(built.windows)  # the captured disk
                host.installed_updates = list(built.installed_updates)
                host.pending_updates = []
            host.install()
            for configure in self.configure:
                configure(host)
            server.start()
            self.hosts[instance_id] = host
            self.seen.append(host)
        return Target(instance_id, "127.0.0.1", host.server.port, self.user, "", role)

    def _builder_of(self, ec2: Any, image_id: str) -> WindowsHost | None:
        """The stand-in builder whose disk the AMI ``image_id`` was captured from, if any."""
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
        run_id = next(
            (t["Value"] for i in images for t in i.get("Tags", []) if t["Key"] == "golden:run-id"), None
        )
        builders = [h for h in self.seen if h.role == "builder" and run_id and h.run_id == run_id]
        return builders[-1] if builders else None

    def released(self, instance_id: str) -> None:
        host = self.hosts.pop(instance_id, None)
        if host is not None:
            host.server.stop()
