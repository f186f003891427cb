"""What a Windows Server 2022 Core instance answers to Ansible's modules, for the WinRM stand-in.

Ansible (ansible-core 2.19, the ``winrm`` connection) runs every PowerShell module the same way:
``PowerShell -NoProfile -NonInteractive -ExecutionPolicy Unrestricted -EncodedCommand
<bootstrap_wrapper.ps1>`` with stdin ``<bootstrap manifest JSON>\\n\\0\\0\\0\\0\\n<exec manifest
JSON>``; the exec manifest's ``module_wrapper.ps1`` action names the module (``params.Script``,
e.g. ``ansible_collections.ansible.windows.plugins.modules.win_service.ps1``) and carries its
arguments (``params.Variables`` -> ``complex_args``). The module prints its result as one JSON
document (``Ansible.Basic``: the module's own keys, ``changed``, ``invocation.module_args``; on
failure ``failed``/``msg`` and exit code 1).

:func:`ansible_modules` is a responder for :class:`~tests.windows.winrm_server.WinrmStandin` that
decodes those runs, records ``(module, args)`` in :attr:`VirtualWindows.calls` and answers each
module as it answers on a real host (the keys of its documented RETURN values), against a small
virtual Windows (:class:`VirtualWindows`: services, features, registry values, files, installed
products, the boot time), so a second run of the same task reports ``changed: false``. The
installers the Windows roles run are known by file name (:data:`INSTALLERS`: what each one
installs and the exit code it ends with; ``VirtualWindows.installers`` / ``installer_rc`` change
that for one test, e.g. 1603 to make one fail). ``win_reboot`` (an action plugin: it runs its
commands itself) is answered too: the boot time query (``LastBootUpTime.ToFileTime()``, which
changes with every reboot of the stand-in), ``shutdown.exe /r`` (the stand-in reboots:
connections reset for a while, shells gone) and the post-reboot test command. A module it does
not model fails, naming itself.

Nothing here runs PowerShell: ``win_powershell`` scripts are answered by
:attr:`VirtualWindows.scripts` handlers (the agents role's Authenticode check is built in: it
passes for files that were downloaded).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.windows.winrm_server import TEMP, Command, Reply, Responder, WinrmStandin

MODULE = re.compile(
    r"^ansible_collections\.[\w.]+\.plugins\.modules\.(\w+)\.ps1$|^(?:ansible\.modules\.)?(\w+)\.ps1$"
)
BOOTSTRAP = 'if ($PSVersionTable.PSVersion -lt [Version]"5.1")'
SEPARATOR = b"\n\0\0\0\0\n"
BOOT_TIME = re.compile(r"LastBootUpTime\.ToFileTime\(\)")
SHUTDOWN = re.compile(r"shutdown\.exe /r /t (\d+) /c ")
SHUTDOWN_ABORT = re.compile(r"shutdown\.exe /a", re.I)
REBOOT_TEST = re.compile(
    r"Get-Item -LiteralPath '([^']+AutoLogonChecked)' -ErrorAction Stop; '(success-[0-9a-f-]+)'"
)
FIRST_BOOT = datetime(2026, 12, 1, 6, 2, 11, tzinfo=UTC)
"""When the instance booted first (the launch); every reboot of the stand-in is a new boot time."""
EPOCH_1601 = datetime(1601, 1, 1, tzinfo=UTC)
HOST = "EC2AMAZ-7QK2M1B"
DATADOG = r"C:\Program Files\Datadog\Datadog Agent"
DATADOG_CONFIG = r"C:\ProgramData\Datadog\datadog.yaml"


def filetime(moment: datetime) -> int:
    """``moment`` as a Windows FILETIME (100 ns since 1601), what ``DateTime.ToFileTime()`` prints."""
    delta = moment - EPOCH_1601
    return (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


@dataclass
class Service:
    name: str
    display_name: str
    state: str = "running"  # running | stopped | paused
    start_mode: str = "auto"  # auto | delayed | manual | disabled
    path: str = ""
    username: str = "LocalSystem"
    description: str = ""
    dependencies: list[str] = field(default_factory=list)

    def result(self) -> dict[str, Any]:
        """The keys win_service returns for an existing service."""
        return {
            "exists": True,
            "name": self.name,
            "display_name": self.display_name,
            "state": self.state,
            "start_mode": self.start_mode,
            "path": self.path,
            "username": self.username,
            "description": self.description,
            "desktop_interact": False,
            "can_pause_and_continue": False,
            "dependencies": list(self.dependencies),
            "depended_by": [],
        }


@dataclass(frozen=True)
class Installer:
    """What running one installer does on the instance."""

    product: str
    rc: int = 0
    creates: tuple[str, ...] = ()
    registry: tuple[tuple[str, str, str, Any], ...] = ()  # (key, name, type, value)
    services: tuple[Service, ...] = ()
    needs_feature: str | None = None
    """Part of what it installs is only installed when this Windows feature is (the ASP.NET Core
    Module of the hosting bundle needs IIS)."""


INSTALLERS: dict[str, Installer] = {
    "ndp481-x86-x64-allos-enu.exe": Installer(
        ".NET Framework 4.8.1",
        rc=3010,  # installed; a restart completes it
        registry=(
            (r"HKLM:\SOFTWARE\Microsoft\NET Framework Setup\NDP\v4\Full", "Release", "REG_DWORD", 533320),
        ),
    ),
    "dotnet-runtime-8.0.23-win-x64.exe": Installer(
        "Microsoft .NET Runtime - 8.0.23 (x64)",
        creates=(
            r"C:\Program Files\dotnet\dotnet.exe",
            r"C:\Program Files\dotnet\shared\Microsoft.NETCore.App\8.0.23",
        ),
    ),
    "dotnet-hosting-8.0.23-win.exe": Installer(
        "Microsoft .NET 8.0.23 - Windows Server Hosting",
        creates=(
            r"C:\Program Files\dotnet\shared\Microsoft.AspNetCore.App\8.0.23",
            r"C:\Program Files\IIS\Asp.Net Core Module\V2\aspnetcorev2.dll",
        ),
        needs_feature="Web-Server",
    ),
    # The Tentacle MSI installs Tentacle and Tentacle Manager; its Windows service exists only once
    # an instance is configured (Tentacle.exe create-instance ... service --install), at boot.
    "octopus.tentacle.8.3.3164-x64.msi": Installer(
        "Octopus Deploy Tentacle",
        creates=(r"C:\Program Files\Octopus Deploy\Tentacle\Tentacle.exe",),
    ),
    # The Datadog MSI creates its three services and starts the agent (which, without an API key,
    # runs and reports nothing).
    "ddagent-cli-7.60.1.msi": Installer(
        "Datadog Agent",
        creates=(r"C:\Program Files\Datadog\Datadog Agent\bin\agent.exe",),
        services=(
            Service(
                "datadogagent",
                "Datadog Agent",
                path=r'"C:\Program Files\Datadog\Datadog Agent\bin\agent.exe"',
                username=r".\ddagentuser",
            ),
            Service(
                "datadog-trace-agent",
                "Datadog Trace Agent",
                start_mode="manual",
                path=rf'"{DATADOG}\bin\agent\trace-agent.exe" --config="{DATADOG_CONFIG}"',
                username=r".\ddagentuser",
                dependencies=["datadogagent"],
            ),
            Service(
                "datadog-process-agent",
                "Datadog Process Agent",
                start_mode="manual",
                path=rf'"{DATADOG}\bin\agent\process-agent.exe" --cfgpath="{DATADOG_CONFIG}"',
                dependencies=["datadogagent"],
            ),
        ),
    ),
}

FEATURES: dict[str, tuple[str, int, bool]] = {
    # name: (display name, id, installed on a fresh Windows Server 2022 Core)
    "FileAndStorage-Services": ("File and Storage Services", 481, True),
    "Storage-Services": ("Storage Services", 482, True),
    "NET-Framework-45-Features": (".NET Framework 4.8 Features", 417, True),
    "NET-Framework-45-Core": (".NET Framework 4.8", 418, True),
    "NET-WCF-Services45": ("WCF Services", 420, True),
    "NET-WCF-TCP-PortSharing45": ("TCP Port Sharing", 424, True),
    "PowerShellRoot": ("Windows PowerShell", 417 + 100, True),
    "PowerShell": ("Windows PowerShell 5.1", 418 + 100, True),
    "WoW64-Support": ("WoW64 Support", 340, True),
    "Windows-Defender": ("Microsoft Defender Antivirus", 1090, True),
    "System-DataArchiver": ("System Data Archiver", 1129, True),
    "FS-SMB1": ("SMB 1.0/CIFS File Sharing Support", 487, False),
    "NET-Framework-45-ASPNET": ("ASP.NET 4.8", 419, False),
    "Web-Server": ("Web Server (IIS)", 2, False),
    "Web-WebServer": ("Web Server", 3, False),
    "Web-Common-Http": ("Common HTTP Features", 4, False),
    "Web-Default-Doc": ("Default Document", 9, False),
    "Web-Static-Content": ("Static Content", 5, False),
    "Web-Http-Errors": ("HTTP Errors", 7, False),
    "Web-Health": ("Health and Diagnostics", 12, False),
    "Web-Http-Logging": ("HTTP Logging", 13, False),
    "Web-Request-Monitor": ("Request Monitor", 16, False),
    "Web-Performance": ("Performance", 22, False),
    "Web-Stat-Compression": ("Static Content Compression", 23, False),
    "Web-Security": ("Security", 17, False),
    "Web-Filtering": ("Request Filtering", 18, False),
    "Web-App-Dev": ("Application Development", 25, False),
    "Web-Net-Ext45": (".NET Extensibility 4.8", 250, False),
    "Web-Asp-Net45": ("ASP.NET 4.8", 251, False),
    "Web-ISAPI-Ext": ("ISAPI Extensions", 28, False),
    "Web-ISAPI-Filter": ("ISAPI Filters", 29, False),
    "Web-Mgmt-Tools": ("Management Tools", 36, False),
    "Web-Mgmt-Service": ("Management Service", 40, False),
    "WAS": ("Windows Process Activation Service", 41, False),
    "WAS-Process-Model": ("Process Model", 42, False),
    "WAS-Config-APIs": ("Configuration APIs", 44, False),
}
FEATURE_NEEDS: dict[str, tuple[str, ...]] = {
    "Web-Server": ("Web-WebServer", "Web-Common-Http", "Web-Health", "Web-Performance", "Web-Security"),
    "Web-Asp-Net45": (
        "NET-Framework-45-ASPNET",
        "Web-App-Dev",
        "Web-Net-Ext45",
        "Web-ISAPI-Ext",
        "Web-ISAPI-Filter",
    ),
    "Web-Net-Ext45": ("Web-App-Dev",),
    "Web-Mgmt-Service": ("Web-Mgmt-Tools", "WAS", "WAS-Process-Model", "WAS-Config-APIs"),
}
FEATURE_SERVICES: dict[str, tuple[Service, ...]] = {
    "Web-Server": (
        Service(
            "WAS",
            "Windows Process Activation Service",
            start_mode="manual",
            path=r"C:\Windows\system32\svchost.exe -k iissvcs",
            dependencies=["RPCSS"],
        ),
        Service(
            "W3SVC",
            "World Wide Web Publishing Service",
            path=r"C:\Windows\system32\svchost.exe -k iissvcs",
            dependencies=["WAS", "HTTP"],
        ),
    ),
    "Web-Mgmt-Service": (
        Service(
            "WMSVC",
            "Web Management Service",
            state="stopped",
            start_mode="manual",
            username="NT SERVICE\\WMSVC",
        ),
    ),
}
BASE_SERVICES = (
    Service("WinRM", "Windows Remote Management (WS-Management)", username="NT AUTHORITY\\NetworkService"),
    Service("LanmanServer", "Server"),
    Service(
        "TermService", "Remote Desktop Services", start_mode="manual", username="NT Authority\\NetworkService"
    ),
    Service("EventLog", "Windows Event Log", username="NT AUTHORITY\\LocalService"),
    Service("W32Time", "Windows Time", start_mode="manual", username="NT AUTHORITY\\LocalService"),
    Service("wuauserv", "Windows Update", start_mode="manual"),
    Service("TrustedInstaller", "Windows Modules Installer", state="stopped", start_mode="manual"),
    Service("AmazonSSMAgent", "Amazon SSM Agent", path=r'"C:\Program Files\Amazon\SSM\amazon-ssm-agent.exe"'),
)
BASE_REGISTRY: dict[tuple[str, str], tuple[str, Any]] = {
    # .NET Framework 4.8 (Release 528449) ships with Windows Server 2022
    (r"HKLM:\SOFTWARE\Microsoft\NET Framework Setup\NDP\v4\Full", "Release"): ("REG_DWORD", 528449),
    (r"HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp", "UserAuthentication"): (
        "REG_DWORD",
        1,
    ),
    (r"HKLM:\SYSTEM\CurrentControlSet\Services\LanmanServer\Parameters", "EnableSecuritySignature"): (
        "REG_DWORD",
        0,
    ),
}
BASE_KEYS = (
    r"HKLM:\SOFTWARE\Microsoft\NET Framework Setup\NDP\v4\Full",
    r"HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp",
    r"HKLM:\SYSTEM\CurrentControlSet\Services\LanmanServer\Parameters",
    r"HKLM:\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL\Protocols",
    r"HKLM:\SOFTWARE\Microsoft\.NETFramework\v4.0.30319",
    r"HKLM:\SOFTWARE\WOW6432Node\Microsoft\.NETFramework\v4.0.30319",
)
REG_TYPES = {
    "string": "REG_SZ",
    "expandstring": "REG_EXPAND_SZ",
    "multistring": "REG_MULTI_SZ",
    "dword": "REG_DWORD",
    "qword": "REG_QWORD",
    "binary": "REG_BINARY",
    "none": "REG_NONE",
}

ScriptHandler = Callable[["VirtualWindows", str, dict[str, Any]], "dict[str, Any] | None"]


def _key(path: str) -> str:
    """A registry key or file system path as a case-insensitive key."""
    return path.replace("/", "\\").rstrip("\\").lower().replace("hkey_local_machine\\", "hklm:\\")


@dataclass
class VirtualWindows:
    """The state of the stand-in's Windows, as far as the modules see it; ``calls`` records every
    module run as ``(module, args)`` (its arguments without Ansible's ``_ansible_*`` ones)."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    services: dict[str, Service] = field(default_factory=dict)
    features: dict[str, bool] = field(default_factory=dict)
    registry: dict[tuple[str, str], tuple[str, Any]] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    paths: dict[str, str] = field(default_factory=dict)
    """Existing files and directories: lower-cased path -> ``file`` | ``directory``."""
    products: list[str] = field(default_factory=list)
    installers: dict[str, Installer] = field(default_factory=lambda: dict(INSTALLERS))
    """What each installer (file name, lower case) installs: :data:`INSTALLERS`, changeable."""
    installer_rc: dict[str, int] = field(default_factory=dict)
    """Exit code per installer file name (lower case), overriding :attr:`installers`."""
    scripts: list[ScriptHandler] = field(default_factory=list)
    boot_times: dict[int, datetime] = field(default_factory=lambda: {0: FIRST_BOOT})
    reboots: list[int] = field(default_factory=list)
    """The boot counter each ``shutdown.exe /r`` that restarted the host was sent at."""
    shutdown_scheduled: bool = False
    """A restart is already scheduled (as Windows Update leaves one): ``shutdown /r`` fails with
    1190 until ``shutdown /a`` aborts it."""

    @classmethod
    def server_2022_core(cls) -> VirtualWindows:
        """A fresh Windows Server 2022 Core instance (Amazon's base AMI)."""
        state = cls(
            services={s.name.lower(): copy.deepcopy(s) for s in BASE_SERVICES},
            features={name: installed for name, (_, _, installed) in FEATURES.items()},
            registry={(_key(k), n.lower()): v for (k, n), v in BASE_REGISTRY.items()},
            keys={_key(k) for k in BASE_KEYS},
        )
        state.scripts.append(authenticode_check)
        for directory in (r"C:\Windows", r"C:\Windows\Temp", r"C:\Program Files", TEMP):
            state.paths[_key(directory)] = "directory"
        return state

    # what the tests look at

    def modules(self, name: str) -> list[dict[str, Any]]:
        """The arguments of every run of module ``name`` (short name, e.g. ``win_service``)."""
        return [args for module, args in self.calls if module == name]

    def value(self, key: str, name: str) -> Any:
        entry = self.registry.get((_key(key), name.lower()))
        return None if entry is None else entry[1]

    def exists(self, path: str) -> bool:
        return _key(path) in self.paths

    # what modules change

    def create(self, path: str, kind: str = "file") -> None:
        parts = _key(path).split("\\")
        for end in range(1, len(parts)):
            self.paths.setdefault("\\".join(parts[:end]), "directory")
        self.paths[_key(path)] = kind

    def remove(self, path: str) -> bool:
        gone = [p for p in self.paths if p == _key(path) or p.startswith(_key(path) + "\\")]
        for p in gone:
            del self.paths[p]
        return bool(gone)

    def set_value(self, key: str, name: str, kind: str, value: Any) -> tuple[bool, bool, bool]:
        """(changed, data_changed, data_type_changed) as win_regedit reports them."""
        k = _key(key)
        created = k not in self.keys
        self.keys.add(k)
        if not name:
            return created, False, False
        before = self.registry.get((k, name.lower()))
        self.registry[(k, name.lower())] = (kind, value)
        if before is None:
            return True, False, False
        type_changed, data_changed = before[0] != kind, before[1] != value
        return created or type_changed or data_changed, data_changed, type_changed

    def install(self, name: str) -> tuple[int, Installer | None]:
        installer = self.installers.get(name.lower())
        rc = self.installer_rc.get(name.lower(), installer.rc if installer else 0)
        if installer is None or rc not in (0, 3010, 1641):
            return rc, installer
        self.products.append(installer.product)
        for path in installer.creates:
            if installer.needs_feature and not self.features.get(installer.needs_feature) and "IIS" in path:
                continue
            self.create(path, "directory" if not path.lower().endswith((".exe", ".dll")) else "file")
        for key, value_name, kind, value in installer.registry:
            self.set_value(key, value_name, kind, value)
        for service in installer.services:
            self.services.setdefault(service.name.lower(), copy.deepcopy(service))
        return rc, installer


def authenticode_check(
    state: VirtualWindows, script: str, parameters: dict[str, Any]
) -> dict[str, Any] | None:
    """The agents role's signature check: valid for a file that was downloaded, else an error."""
    if "Get-AuthenticodeSignature" not in script:
        return None
    path = str(parameters.get("Path", ""))
    if not state.exists(path):
        message = f"Cannot find path '{path}' because it does not exist."
        return {"failed": True, "msg": message, "error": [_error_record(message)]}
    return {"changed": False}


def _error_record(message: str) -> dict[str, Any]:
    return {
        "output": message,
        "error_details": None,
        "exception": {"message": message, "type": "System.Management.Automation.RuntimeException"},
        "target_object": None,
        "category_info": {"category": "OperationStopped", "category_id": 14, "reason": "RuntimeException"},
        "fully_qualified_error_id": message,
        "script_stack_trace": "at <ScriptBlock>, <No file>: line 4",
    }


def _as_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _fail(result: dict[str, Any], msg: str) -> dict[str, Any]:
    return {**result, "failed": True, "msg": msg}


# --- the modules ---------------------------------------------------------------------------------


def win_ping(state: VirtualWindows, args: dict[str, Any]) -> dict[str, Any]:
    return {"changed": False, "ping": args.get("data", "pong")}


def win_file(state: VirtualWindows, args: dict[str, Any]) -> dict[str, Any]:
    path, wanted = str(args["path"]), args.get("state") or "file"
    kind = state.paths.get(_key(path))
    if wanted == "absent":
        return {"changed": state.remove(path)}
    if wanted == "directory":
        if kind == "file":
            return _fail({"changed": False}, f"path {path} is not a directory")
        state.create(path, "directory")
        return {"changed": kind is None}
    if wanted == "touch":
        state.create(path)
        return {"changed": True}
    if kind is None:
        return _fail({"changed": False}, f"path {path} will not be created")
    return {"changed": False}


def win_get_url(state: VirtualWindows, args: dict[str, Any]) -> dict[str, Any]:
    url, dest = str(args["url"]), str(args["dest"])
    algorithm = str(args.get("checksum_algorithm") or "sha1")
    checksum = str(args.get("checksum") or "") or hashlib.new(algorithm, url.encode()).hexdigest()
    result: dict[str, Any] = {"changed": False, "url": url, "dest": dest, "elapsed": 0.0}
    if state.paths.get(_key(dest)) == "file":  # same checksum: nothing to download
        return {
            **result,
            "checksum_dest": checksum,
            "checksum_src": checksum,
            "size": 1_048_576,
            "msg": "OK",
            "status_code": 200,
        }
    parent = _key(dest).rsplit("\\", 1)[0]
    if state.paths.get(parent) != "directory":
        return _fail(
            result, f"Error downloading '{url}' to '{dest}': Could not find a part of the path '{dest}'."
        )
    state.create(dest)
    return {
        **result,
        "changed": True,
        "elapsed": 2.41,
        "checksum_src": checksum,
        "checksum_dest": checksum,
        "size": 1_048_576,
        "msg": "OK",
        "status_code": 200,
    }


def win_package(state: VirtualWindows, args: dict[str, Any]) -> dict[str, Any]:
    path = str(args.get("path") or "")
    name = re.split(r"[\\/]", path)[-1]
    result: dict[str, Any] = {"changed": False, "reboot_required": False, "rc": 0}
    if not path.lower().startswith("http") and not state.exists(path):
        return _fail(result, f"the file at the path '{path}' cannot be reached")
    creates = args.get("creates_path")
    installer = state.installers.get(name.lower())
    installed = (
        state.exists(str(creates))
        if creates
        else name.lower().endswith(".msi") and installer is not None and installer.product in state.products
    )
    if (args.get("state") or "present") == "absent" or installed:
        return result
    local = path if not path.lower().startswith("http") else f"{TEMP}\\ansible-moduletmp-133775\\{name}"
    command = f'"{local}" {args.get("arguments") or ""}'.strip()
    if name.lower().endswith(".msi"):
        command = f'msiexec.exe /i "{local}" {args.get("arguments") or ""}'.strip()
    if args.get("checksum"):
        result["checksum"] = str(args["checksum"]).upper()
    rc, _ = state.install(name)
    expected = [int(c) for c in (args.get("expected_return_code") or [0, 3010])]
    result.update(changed=True, rc=rc)
    if rc not in expected:
        return _fail(  # no log_path: no log key
            {**result, "changed": False, "stdout": "", "stderr": ""},
            f"unexpected rc from '{command}': see rc, stdout, and stderr for more details",
        )
    result["failed"] = False  # as the module says it: Ansible takes a result with rc != 0 as failed
    result["reboot_required"] = rc == 3010
    return result


def win_feature(state: VirtualWindows, args: dict[str, Any]) -> dict[str, Any]:
    names = _as_list(args["name"])
    wanted = (args.get("state") or "present") == "present"
    unknown = [n for n in names if n not in state.features]
    if unknown:
        return _fail(
            {
                "changed": False,
                "exitcode": "Failed",
                "success": False,
                "reboot_required": False,
                "feature_result": [],
            },
            f"Failed to {'add' if wanted else 'remove'} Windows Feature: ArgumentNotValid: The role, role "
            f"service, or feature name is not valid: '{unknown[0]}'. The name was not found.",
        )
    todo: list[str] = []
    for name in names:
        for feature in [name, *(FEATURE_NEEDS.get(name, ()) if wanted else ())]:
            if state.features[feature] != wanted and feature not in todo:
                todo.append(feature)
    results = []
    for feature in todo:
        state.features[feature] = wanted
        for service in FEATURE_SERVICES.get(feature, ()):
            if wanted:
                state.services.setdefault(service.name.lower(), copy.deepcopy(service))
            else:
                state.services.pop(service.name.lower(), None)
        display, number, _ = FEATURES[feature]
        results.append(
            {
                "display_name": display,
                "id": number,
                "message": [],
                "reboot_required": not wanted,  # removing a feature completes at the next boot
                "skip_reason": "NotSkipped",
                "success": True,
                "restart_needed": False,
            }
        )
    reboot = any(r["reboot_required"] for r in results)
    return {
        "changed": bool(todo),
        "exitcode": ("SuccessRestartRequired" if reboot else "Success") if todo else "NoChangeNeeded",
        "success": True,
        "reboot_required": reboot,
        "feature_result": results,
    }


def win_regedit(state: VirtualWindows, args: dict[str, Any]) -> dict[str, Any]:
    path, name = str(args["path"]), str(args.get("name") or "")
    kind = REG_TYPES.get(str(args.get("type") or "string").lower(), "REG_SZ")
    data: Any = args.get("data")
    if kind in ("REG_DWORD", "REG_QWORD"):
        data = int(str(data), 0) if data is not None else 0
    if not re.match(r"(?i)^(HKLM|HKCU|HKCR|HKU|HKCC):\\", path):
        return _fail(
            {"changed": False},
            f"path: {path} is not a valid powershell path, see module documentation for examples.",
        )
    if (args.get("state") or "present") == "absent":
        gone = state.registry.pop((_key(path), name.lower()), None)
        return {"changed": gone is not None, "data_changed": False, "data_type_changed": False}
    changed, data_changed, type_changed = state.set_value(path, name, kind, data)
    return {"changed": changed, "data_changed": data_changed, "data_type_changed": type_changed}


def win_reg_stat(state: VirtualWindows, args: dict[str, Any]) -> dict[str, Any]:
    path, name = str(args["path"]), args.get("name")
    if _key(path) not in state.keys:
        return {"changed": False, "exists": False}
    if name is None:
        properties = {
            n: {"type": kind, "value": value, "raw_value": value}
            for (k, n), (kind, value) in state.registry.items()
            if k == _key(path)
        }
        subs = sorted(
            {k[len(_key(path)) + 1 :].split("\\")[0] for k in state.keys if k.startswith(_key(path) + "\\")}
        )
        return {"changed": False, "exists": True, "properties": properties, "sub_keys": subs}
    entry = state.registry.get((_key(path), str(name).lower()))
    if entry is None:
        return {"changed": False, "exists": False}
    return {"changed": False, "exists": True, "type": entry[0], "value": entry[1], "raw_value": entry[1]}


def win_service(state: VirtualWindows, args: dict[str, Any]) -> dict[str, Any]:
    name = str(args["name"])
    service = state.services.get(name.lower())
    if service is None:
        if args.get("state") == "absent":
            return {"changed": False, "exists": False}
        if not args.get("path"):
            return _fail(
                {"changed": False, "exists": False},
                f"Service '{name}' is not installed, need to set 'path' to create a new service",
            )
        service = Service(
            name, str(args.get("display_name") or name), state="stopped", path=str(args["path"])
        )
        state.services[name.lower()] = service
    before = (service.state, service.start_mode)
    if args.get("start_mode"):
        service.start_mode = str(args["start_mode"])
    wanted = args.get("state")
    if wanted == "started":
        if service.start_mode == "disabled":
            return _fail(service.result(), f"Service '{name}' is disabled, cannot start it")
        service.state = "running"
    elif wanted == "stopped":
        service.state = "stopped"
    elif wanted == "restarted":
        service.state = "running"
    elif wanted == "absent":
        del state.services[name.lower()]
        return {"changed": True, "exists": False}
    changed = before != (service.state, service.start_mode) or wanted == "restarted"
    return {**service.result(), "changed": changed}


def win_service_info(state: VirtualWindows, args: dict[str, Any]) -> dict[str, Any]:
    name = args.get("name")
    found = [
        s
        for s in state.services.values()
        if name is None or s.name.lower() == str(name).lower() or s.display_name == name
    ]
    return {
        "changed": False,
        "exists": bool(found),
        "services": [
            {
                "name": s.name,
                "display_name": s.display_name,
                "state": s.state,
                "start_mode": s.start_mode,
                "path": s.path,
                "username": s.username,
                "description": s.description,
                "dependencies": list(s.dependencies),
                "dependency_of": [],
                "checkpoint": 0,
                "controls_accepted": ["stop", "shutdown"] if s.state == "running" else [],
                "error_control": "normal",
                "failure_actions": [],
                "failure_actions_on_non_crash_failure": False,
                "failure_command": None,
                "failure_reboot_msg": None,
                "failure_reset_period_ms": 0,
                "launch_protection": "none",
                "load_order_group": "",
                "pre_shutdown_timeout_ms": 10000,
                "preferred_node": None,
                "process_id": 4242 if s.state == "running" else 0,
                "required_privileges": [],
                "service_exit_code": 0,
                "service_flags": [],
                "service_type": "win32_own_process",
                "sid_info": "none",
                "start_mode_delayed": s.start_mode == "delayed",
                "tag": 0,
                "triggers": [],
                "wait_hint_ms": 0,
                "win32_exit_code": 0 if s.state == "running" else 1077,
            }
            for s in found
        ],
    }


def win_powershell(state: VirtualWindows, args: dict[str, Any]) -> dict[str, Any]:
    script, parameters = str(args.get("script") or ""), dict(args.get("parameters") or {})
    answer: dict[str, Any] | None = None
    for handler in state.scripts:
        answer = handler(state, script, parameters)
        if answer is not None:
            break
    answer = dict(answer or {})
    changed = answer.pop("changed", "$Ansible.Changed = $false" not in script)
    return {
        "changed": bool(changed),
        "result": answer.pop("result", {}),
        "host_out": answer.pop("host_out", ""),
        "host_err": "",
        "output": answer.pop("output", []),
        "error": answer.pop("error", []),
        "warning": [],
        "verbose": [],
        "debug": [],
        "information": [],
        **answer,
    }


def setup(state: VirtualWindows, args: dict[str, Any]) -> dict[str, Any]:
    boot = state.boot_times[max(state.boot_times)]
    return {
        "changed": False,
        "ansible_facts": {
            "ansible_architecture": "64-bit",
            "ansible_architecture2": "x86_64",
            "ansible_bios_manufacturer": "Amazon EC2",
            "ansible_bios_version": "1.0",
            "ansible_distribution": "Microsoft Windows Server 2022 Datacenter",
            "ansible_distribution_major_version": "10",
            "ansible_distribution_version": "10.0.20348.0",
            "ansible_domain": "",
            "ansible_fqdn": HOST,
            "ansible_hostname": HOST,
            "ansible_nodename": HOST,
            "ansible_kernel": "10.0.20348.0",
            "ansible_lastboot": boot.strftime("%Y-%m-%d %H:%M:%SZ"),
            "ansible_machine_id": "S-1-5-21-2961414536-1612384736-2417536842",
            "ansible_memtotal_mb": 8192,
            "ansible_memfree_mb": 6510,
            "ansible_os_family": "Windows",
            "ansible_os_name": "Microsoft Windows Server 2022 Datacenter",
            "ansible_os_product_type": "server",
            "ansible_os_installation_type": "Server Core",
            "ansible_owner_name": "EC2",
            "ansible_owner_org": "Amazon.com",
            "ansible_powershell_version": 5,
            "ansible_processor": ["GenuineIntel", "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz"],
            "ansible_processor_cores": 1,
            "ansible_processor_count": 1,
            "ansible_processor_threads_per_core": 2,
            "ansible_processor_vcpus": 2,
            "ansible_product_name": "t3.large",
            "ansible_reboot_pending": False,
            "ansible_system": "Win32NT",
            "ansible_system_vendor": "Amazon EC2",
            "ansible_user_dir": "C:\\Users\\Administrator",
            "ansible_user_id": "Administrator",
            "ansible_windows_domain": "WORKGROUP",
            "ansible_windows_domain_member": False,
            "ansible_windows_domain_role": "Stand-alone server",
            "ansible_env": {"TEMP": TEMP, "SystemRoot": "C:\\Windows", "COMPUTERNAME": HOST},
            "ansible_interfaces": [
                {
                    "connection_name": "Ethernet",
                    "interface_name": "Amazon Elastic Network Adapter",
                    "interface_index": 6,
                    "macaddress": "0A:1B:2C:3D:4E:5F",
                    "default_gateway": "10.0.1.1",
                    "dns_domain": "ec2.internal",
                    "mtu": 9001,
                }
            ],
            "ansible_ip_addresses": ["10.0.1.23", "fe80::9c1d:3a2b:5e6f:7a8b"],
            "module_setup": True,
        },
    }


MODULES: dict[str, Callable[[VirtualWindows, dict[str, Any]], dict[str, Any]]] = {
    f.__name__: f
    for f in (
        win_ping,
        win_file,
        win_get_url,
        win_package,
        win_feature,
        win_regedit,
        win_reg_stat,
        win_service,
        win_service_info,
        win_powershell,
        setup,
    )
}


# --- the responder ---------------------------------------------------------------------------------


def decode_module(command: Command) -> tuple[str, dict[str, Any]] | None:
    """``(module short name, its arguments including Ansible's _ansible_*)`` of a module run, or
    None when ``command`` is not one."""
    if not (command.powershell or "").startswith(BOOTSTRAP) or SEPARATOR not in command.stdin:
        return None
    _, _, rest = command.stdin.partition(SEPARATOR)
    rest = rest.split(SEPARATOR, 1)[0]  # a module fed its own input has another separator
    try:
        manifest = json.loads(rest)
    except ValueError:
        return None
    for action in manifest.get("actions", []):
        if action.get("name") != "module_wrapper.ps1":
            continue
        params = action.get("params") or {}
        match = MODULE.match(str(params.get("Script", "")))
        if not match:
            return None
        args: dict[str, Any] = {}
        for variable in params.get("Variables") or []:
            if variable.get("Name") == "complex_args":
                args = dict(variable.get("Value") or {})
        return match.group(1) or match.group(2), args
    return None


def _module_reply(result: dict[str, Any], args: dict[str, Any]) -> Reply:
    module_args = {k: v for k, v in args.items() if not k.startswith("_ansible_")}
    document = {**result, "invocation": {"module_args": module_args}}
    return Reply(stdout=json.dumps(document) + "\r\n", exit_code=1 if result.get("failed") else 0)


def ansible_modules(server: WinrmStandin, state: VirtualWindows | None = None) -> Responder:
    """The responder: Ansible's module runs and win_reboot's commands, answered from ``state``
    (a fresh :meth:`VirtualWindows.server_2022_core` if None; the responder's ``state`` attribute)."""
    windows = state if state is not None else VirtualWindows.server_2022_core()

    def respond(command: Command) -> Reply | None:
        windows.boot_times.setdefault(command.boot, datetime.now(UTC))
        decoded = decode_module(command)
        if decoded is not None:
            name, args = decoded
            clean = {k: v for k, v in args.items() if not k.startswith("_ansible_")}
            windows.calls.append((name, clean))
            module = MODULES.get(name)
            if module is None:
                return _module_reply(
                    _fail({"changed": False}, f"the stand-in does not know the module {name}"), args
                )
            return _module_reply(module(windows, clean), args)
        return _reboot_commands(server, windows, command)

    respond.state = windows  # type: ignore[attr-defined]
    return respond


def _reboot_commands(server: WinrmStandin, windows: VirtualWindows, command: Command) -> Reply | None:
    script = command.powershell or ""
    if BOOT_TIME.search(script):
        return Reply(stdout=f"{filetime(windows.boot_times[command.boot])}\r\n")
    if SHUTDOWN.search(script):
        if windows.shutdown_scheduled:
            stderr = "A system shutdown has already been scheduled.(1190)"
            return Reply(stdout=json.dumps({"stdout": "", "stderr": stderr, "rc": 1190}) + "\r\n")
        windows.reboots.append(command.boot)
        return Reply(stdout=json.dumps({"stdout": "", "stderr": "", "rc": 0}) + "\r\n", reboot=True)
    if SHUTDOWN_ABORT.search(script):
        if windows.shutdown_scheduled:
            windows.shutdown_scheduled = False
            return Reply()
        return Reply(
            stderr="Unable to abort the system shutdown because no shutdown was in progress.(1116)\r\n",
            exit_code=1116,
        )
    test = REBOOT_TEST.search(script)
    if test:
        listing = (
            "\r\n\r\n    Hive: HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon"
            "\r\n\r\n\r\nName                           Property\r\n"
            "----                           --------\r\nAutoLogonChecked\r\n\r\n\r\n"
        )
        return Reply(stdout=f"{listing}{test.group(2)}\r\n")
    return None
