"""A stand-in Windows host at the network boundary: a WS-Management server (SOAP over HTTPS,
Basic auth) on 127.0.0.1 that speaks enough of the WinRM shell protocol (MS-WSMV: Create,
Command, Send, Receive, Signal, Delete) for real clients to talk to it: pywinrm (our
``WinrmHook``, Ansible's ``winrm`` connection) and Packer's Go ``winrm`` communicator.

It runs no Windows and no PowerShell. Every command is recorded as a :class:`Command` (the
command line, the PowerShell script it carries, decoded from ``-EncodedCommand``, the stdin it was
sent) and answered by a chain of *responders*, ``Callable[[Command], Reply | None]``: the first
that returns a :class:`Reply` answers. Tests and other stand-ins add responders in front of the
defaults (:meth:`WinrmStandin.respond`) to give realistic Windows answers (a Pester run, rounds of
Windows updates, sysprep, facts). The defaults are:

* :func:`file_transfer` -- uploads and downloads as their clients do them, on a virtual file system
  (:attr:`WinrmStandin.files`; each finished upload also in :attr:`WinrmStandin.uploads`): Packer
  1.6.6's ``winrmcp`` (``echo <base64 line> >> "%TEMP%\\winrmcp-<uuid>.tmp"`` cmd commands, then a
  PowerShell script that decodes the temp file line by line into the destination, then one that
  removes the temp file) and ``WinrmHook.put_file`` / ``get_file`` (their PowerShell scripts carry
  a ``# golden-winrm: <what>`` tag line);
* :func:`packer_winrm` -- Packer's connection check (``echo "WinRM connected."``), and what its
  ``windows-restart`` provisioner runs: the restart command (the host shuts down for
  ``shutdown_s``, during which the restart test ``shutdown /r /f /t 60 ...`` exits 1115, "a system
  shutdown is in progress"; then it is down for ``reboot_down_s``, every connection reset, as a
  rebooting host's port is; no shell survives), the restart test on a host that is up (exit 0,
  then cancelled by ``shutdown /a``) and the check command (``<name> restarted.``);
* :func:`anything_else` -- exit 0, no output.

The server makes a self-signed certificate (SANs 127.0.0.1 and localhost), as the instances' user
data does; :meth:`WinrmStandin.login` gives the ``WinrmLogin`` a task would get, pinned to it.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import re
import socket
import ssl
import struct
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from golden_image.values import WinrmLogin

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
SHELL = NS["rsp"]
ACTIONS = {
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create": "Create",
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete": "Delete",
    f"{SHELL}/Command": "Command",
    f"{SHELL}/Send": "Send",
    f"{SHELL}/Receive": "Receive",
    f"{SHELL}/Signal": "Signal",
}
DONE = f"{SHELL}/CommandState/Done"
RUNNING = f"{SHELL}/CommandState/Running"
TEMP = "C:\\Users\\Administrator\\AppData\\Local\\Temp"
"""What ``%TEMP%`` / ``$env:TEMP`` is for the stand-in's Administrator."""
TIMED_OUT = 2150858793
"""The WSManFault code of a Receive that found no output within its OperationTimeout."""


# --- what the responders see and answer ------------------------------------------------------


@dataclass
class Command:
    """One command a client ran: its command line, the PowerShell it carries and its stdin."""

    shell_id: str
    command_id: str
    command_line: str
    """``rsp:Command`` and its ``rsp:Arguments``, joined by spaces, as cmd.exe would see them."""
    powershell: str | None
    """The script of ``powershell ... -EncodedCommand <base64 UTF-16LE>``, decoded; else None."""
    environment: dict[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    boot: int = 0
    """How many times the stand-in had rebooted when the command ran."""
    signals: list[str] = field(default_factory=list)
    """Signals the client sent it (``terminate``, ``ctrl_c``), in order."""
    script_file: str | None = None
    """For WinrmHook's runner of a script too long for a command line (``# golden-winrm:
    run_file``): the script file it runs (uploaded before; the runner deletes it)."""

    @property
    def text(self) -> str:
        """The script that runs (the uploaded one for a runner, else the ``-EncodedCommand``
        one), else the command line: what responders match."""
        if self.script_file is not None:
            return self.script_file
        return self.powershell if self.powershell is not None else self.command_line


@dataclass(frozen=True)
class Reply:
    """A responder's answer. ``seconds``: how long the command runs before it is done (a Receive
    waits at most its OperationTimeout, then answers the client's retry). ``reboot``: the host
    restarts once its answer is sent (:meth:`WinrmStandin.restart`)."""

    stdout: str | bytes = ""
    stderr: str | bytes = ""
    exit_code: int = 0
    seconds: float = 0.0
    reboot: bool = False


Responder = Callable[[Command], "Reply | None"]


def clixml_error(message: str) -> str:
    """``message`` as PowerShell writes an error record to stderr over WinRM (CLIXML)."""
    text = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    lines = "".join(f'<S S="Error">{line}_x000D__x000A_</S>' for line in text.split("\n"))
    return (
        "#< CLIXML\r\n"
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        f"{lines}</Objs>"
    )


def windows_path(path: str) -> str:
    """A Windows path as a key of the virtual file system: ``%TEMP%``/``$env:TEMP`` expanded,
    backslashes, case-folded (NTFS names are case-insensitive)."""
    path = path.strip().strip('"').strip("'")
    path = re.sub(r"(?i)%TEMP%|\$env:TEMP", lambda _: TEMP, path).replace("/", "\\")
    return path.lower()


def decode_powershell(command_line: str) -> str | None:
    """The script of a ``powershell[.exe] ... -EncodedCommand <b64>`` command line (any case,
    ``-enc``/``-e``/``-ec`` too), or None."""
    match = re.search(
        r"(?i)\bpowershell(?:\.exe)?\b.*?\s-(?:encodedcommand|enc|ec|e)\s+([A-Za-z0-9+/=]+)", command_line
    )
    if not match:
        return None
    try:
        return base64.b64decode(match.group(1)).decode("utf-16-le")
    except (ValueError, UnicodeDecodeError):
        return None


# --- the default responders -------------------------------------------------------------------

WINRMCP_ECHO = re.compile(r'^echo ([A-Za-z0-9+/=]+)\s*>>\s*"([^"]+)"\s*$', re.IGNORECASE)
WINRMCP_TEMP = re.compile(r'\$tmp_file_path = \[System\.IO\.Path\]::GetFullPath\("([^"]+)"\)', re.IGNORECASE)
WINRMCP_DEST = re.compile(r'\$dest_file_path = \[System\.IO\.Path\]::GetFullPath\("([^"]+)"', re.IGNORECASE)
RUNS_SCRIPT = re.compile(r"""&\s*'([^']+\.ps1)'|-file\s+"?([^"\s]+\.ps1)""", re.IGNORECASE)
"""A command line that runs an uploaded script: Packer's ``powershell ... "& { ...; &'<path>'; ...}"``."""
HOOK_TAG = re.compile(r"^# golden-winrm: (\w+)$", re.MULTILINE)
HOOK_PATH = re.compile(r"^\$path = '((?:[^']|'')*)'$", re.MULTILINE)
HOOK_VALUE = re.compile(r"^\$(\w+) = (\d+|'[A-Za-z0-9+/=]*')$", re.MULTILINE)


def file_transfer(server: WinrmStandin) -> Responder:
    """Uploads and downloads on ``server.files``: Packer's winrmcp and WinrmHook's scripts."""

    def respond(command: Command) -> Reply | None:
        echo = WINRMCP_ECHO.match(command.command_line)
        if echo and command.powershell is None:
            piece, path = echo.groups()
            key = windows_path(path)
            server.files[key] = server.files.get(key, b"") + f"{piece} \r\n".encode()
            return Reply()
        script = command.powershell or ""
        temp = WINRMCP_TEMP.search(script)
        if temp:
            destination = WINRMCP_DEST.search(script)
            if destination is None:  # the clean-up after a copy
                server.files.pop(windows_path(temp.group(1)), None)
                return Reply()
            return _winrmcp_restore(server, temp.group(1), destination.group(1))
        tag = HOOK_TAG.search(script)
        path = HOOK_PATH.search(script)
        if tag and path and tag.group(1) != "run_file":
            values = {k: v.strip("'") for k, v in HOOK_VALUE.findall(script)}
            return _hook_transfer(
                server, tag.group(1), windows_path(path.group(1).replace("''", "'")), values
            )
        return None

    return respond


def _winrmcp_restore(server: WinrmStandin, temp: str, destination: str) -> Reply:
    """winrmcp's restore script: each base64 line of the temp file decoded into the destination."""
    lines = server.files.get(windows_path(temp), b"").decode("ascii").split()
    server.store(destination.strip("'"), b"".join(base64.b64decode(line) for line in lines))
    return Reply()


def _hook_transfer(server: WinrmStandin, action: str, path: str, values: dict[str, str]) -> Reply:
    data = server.files.get(path)
    if action in ("create", "append"):
        chunk = base64.b64decode(values.get("chunk", ""))
        server.files[path] = ((data or b"") if action == "append" else b"") + chunk
        return Reply()
    if action == "sha256" and data is not None:  # the upload's last step: it is complete
        server.uploads.append((path, data))
    if data is None:
        return Reply(
            stderr=clixml_error(f"Cannot find path '{path}' because it does not exist."), exit_code=1
        )
    if action == "sha256":
        return Reply(stdout=hashlib.sha256(data).hexdigest().upper() + "\r\n")
    if action == "size":
        return Reply(stdout=f"{len(data)}\r\n")
    if action == "read":
        offset, count = int(values["offset"]), int(values["count"])
        return Reply(stdout=base64.b64encode(data[offset : offset + count]).decode() + "\r\n")
    return Reply(stderr=clixml_error(f"the stand-in does not know '{action}'"), exit_code=1)


RESTART = re.compile(r'^shutdown /r /f /t 0 /c "packer restart"$', re.IGNORECASE)
RESTART_TEST = re.compile(r"^shutdown /r /f /t 60 ", re.IGNORECASE)
RESTART_ABORT = re.compile(r"^shutdown /a$", re.IGNORECASE)
RESTART_CHECK = re.compile(r"restarted\.", re.IGNORECASE)
CONNECTED = 'echo "WinRM connected."'


def packer_winrm(server: WinrmStandin) -> Responder:
    """Packer's WinRM connection check; ``windows-restart``: restart, the restart test and its
    abort, the check command."""

    def respond(command: Command) -> Reply | None:
        line = command.command_line.strip()
        if command.powershell is not None and command.powershell.rstrip().endswith(CONNECTED):
            return Reply(stdout="WinRM connected.\r\n")
        if RESTART.match(line):
            return Reply(reboot=True)
        if RESTART_TEST.match(line):
            if server.shutting_down():
                return Reply(stderr="A system shutdown is in progress.(1115)\r\n", exit_code=1115)
            return Reply()  # a host that is up schedules the test restart, which shutdown /a cancels
        if RESTART_ABORT.match(line):
            return Reply()
        if command.powershell is not None and RESTART_CHECK.search(command.powershell):
            return Reply(stdout=f"{server.computer_name} restarted.\r\n")
        return None

    return respond


def anything_else(command: Command) -> Reply:
    """The last responder: whatever it is, it succeeds and prints nothing."""
    return Reply()


# --- the certificate ----------------------------------------------------------------------------


def self_signed(directory: Path, name: str = "winrm") -> tuple[Path, Path, str]:
    """A self-signed certificate for 127.0.0.1 and localhost, as the instance's user data makes
    one: (PEM certificate, PEM key, the certificate's SHA-256 in hex)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "WIN-STANDIN")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_file.chmod(0o644)
    key_file.chmod(0o600)
    return cert_file, key_file, cert.fingerprint(hashes.SHA256()).hex()


# --- the server ---------------------------------------------------------------------------------


@dataclass
class _Running:
    command: Command
    reply: Reply | None = None
    done_at: float = 0.0
    stdin_ended: bool = False
    delivered: bool = False


@dataclass
class _Shell:
    shell_id: str
    environment: dict[str, str]
    commands: dict[str, _Running] = field(default_factory=dict)


class WinrmStandin:
    """The stand-in host: ``with WinrmStandin("Administrator", "pw") as server: ...``.

    ``commands`` records every command in order; ``files`` is the virtual file system (keys from
    :func:`windows_path`; :meth:`write_file` / :meth:`read_file`); ``boots`` counts reboots.
    """

    def __init__(
        self,
        user: str = "Administrator",
        password: str = "Stand-in password 1!",
        *,
        directory: Path | None = None,
        reboot_down_s: float = 1.0,
        shutdown_s: float = 0.0,
        computer_name: str = "WIN-STANDIN",
        certificate: tuple[Path, Path] | None = None,
    ) -> None:
        """``certificate``: (PEM certificate, PEM key) the host serves, e.g. the one an instance's
        user data made (tests/aws/moto_ec2launch.py); default a new self-signed one."""
        self.user, self.password = user, password
        self.reboot_down_s = reboot_down_s
        self.shutdown_s = shutdown_s
        self._shutdown_until = 0.0
        self.computer_name = computer_name
        self._dir = directory or Path(tempfile.mkdtemp(prefix="winrm-standin-"))
        if certificate is None:
            self.cert_file, self.key_file, self.cert_sha256 = self_signed(self._dir)
        else:
            self.cert_file, self.key_file = certificate
            der = x509.load_pem_x509_certificate(self.cert_file.read_bytes()).public_bytes(
                serialization.Encoding.DER
            )
            self.cert_sha256 = hashlib.sha256(der).hexdigest()
        self.commands: list[Command] = []
        self.files: dict[str, bytes] = {}
        self.uploads: list[tuple[str, bytes]] = []
        """Every file a client finished uploading: (its :func:`windows_path`, content), in order."""
        self.requests: list[str] = []
        """The WS-Man action of every authenticated request, in order (Create, Command, ...)."""
        self.auth_failures = 0
        self.boots = 0
        self.down_until = 0.0
        self.responders: list[Responder] = [file_transfer(self), packer_winrm(self), anything_else]
        self._shells: dict[str, _Shell] = {}
        self._reboot_pending = False
        self._lock = threading.Condition()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # the test's side

    def respond(self, responder: Responder) -> Responder:
        """Put ``responder`` in front of the chain (the latest added answers first); returns it,
        so it works as a decorator."""
        self.responders.insert(0, responder)
        return responder

    def write_file(self, path: str, data: bytes) -> None:
        self.files[windows_path(path)] = data

    def store(self, path: str, data: bytes) -> None:
        """A client's finished upload: in :attr:`files` and :attr:`uploads`."""
        self.files[windows_path(path)] = data
        self.uploads.append((windows_path(path), data))

    def read_file(self, path: str) -> bytes:
        return self.files[windows_path(path)]

    def scripts(self) -> list[str]:
        """The PowerShell scripts run so far (:attr:`Command.text` of those that have one), in order."""
        return [c.text for c in self.commands if c.powershell is not None]

    def restart(self) -> None:
        """What a restart command does: shut down for ``shutdown_s`` (still answering), then
        :meth:`reboot`."""
        if self.shutdown_s <= 0:
            self.reboot()
            return
        self._shutdown_until = time.monotonic() + self.shutdown_s
        threading.Timer(self.shutdown_s, self.reboot).start()

    def shutting_down(self) -> bool:
        return time.monotonic() < self._shutdown_until

    def reboot(self) -> None:
        """Restart now: open shells are gone, connections are dropped for ``reboot_down_s``."""
        with self._lock:
            self.boots += 1
            self._shells.clear()
            self.down_until = time.monotonic() + self.reboot_down_s

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the stand-in is not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/wsman"

    def login(self, *, password: str | None = None, cert_sha256: str | None = None) -> WinrmLogin:
        """The login a task gets for this host (the certificate pinned); overrides for tests."""
        return WinrmLogin(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password if password is None else password,
            ca_file=str(self.cert_file),
            cert_sha256=cert_sha256 or self.cert_sha256,
        )

    def start(self) -> WinrmStandin:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        server = self

        class Httpd(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[Any, Any]:
                sock, address = super().get_request()
                return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that went away (or a handshake the client refused) is not our error

        class Handler(_Handler):
            standin = server

        self._httpd = Httpd(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="winrm-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> WinrmStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # the protocol's side

    def _is_down(self) -> bool:
        return time.monotonic() < self.down_until

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user.lower() == self.user.lower() and password == self.password

    def _handle(self, envelope: ET.Element) -> str:
        """One SOAP request -> the SOAP body of its answer (raises _Fault)."""
        header = envelope.find("s:Header", NS)
        body = envelope.find("s:Body", NS)
        if header is None or body is None:
            raise _Fault("s:Sender", "w:SchemaValidationError", "not a SOAP envelope")
        action = ACTIONS.get(header.findtext("a:Action", "", NS).strip())
        if action is None:
            raise _Fault("s:Sender", "w:ActionNotSupported", "the stand-in does not know this action")
        with self._lock:
            self.requests.append(action)
        shell_id = next(
            (
                s.text or ""
                for s in header.iterfind("w:SelectorSet/w:Selector", NS)
                if s.get("Name") == "ShellId"
            ),
            "",
        )
        if action == "Create":
            return self._create(body)
        with self._lock:
            shell = self._shells.get(shell_id)
        if shell is None:
            raise _Fault(
                "s:Sender",
                "w:InvalidSelectors",
                "The request for the Windows Remote Shell with ShellId "
                f"{shell_id} failed because the shell was not found on the server.",
                number=2150858843,
            )
        if action == "Delete":
            with self._lock:
                self._shells.pop(shell_id, None)
            return ""
        if action == "Command":
            return self._command(shell, body)
        if action == "Send":
            return self._send(shell, body)
        if action == "Signal":
            return self._signal(shell, body)
        return self._receive(shell, body, header)

    def _create(self, body: ET.Element) -> str:
        shell_id = str(uuid.uuid4()).upper()
        environment = {
            v.get("Name", ""): v.text or ""
            for v in body.iterfind("rsp:Shell/rsp:Environment/rsp:Variable", NS)
        }
        with self._lock:
            self._shells[shell_id] = _Shell(shell_id, environment)
        return (
            "<x:ResourceCreated><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
            "</a:Address><a:ReferenceParameters><w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/windows/"
            f'shell/cmd</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector>'
            "</w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>"
            f"<rsp:Shell><rsp:ShellId>{shell_id}</rsp:ShellId><rsp:ResourceUri>http://schemas.microsoft.com/wbem/"
            "wsman/1/windows/shell/cmd</rsp:ResourceUri><rsp:Owner>Administrator</rsp:Owner>"
            "<rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams>"
            "</rsp:Shell>"
        )

    def _command(self, shell: _Shell, body: ET.Element) -> str:
        line = body.find("rsp:CommandLine", NS)
        parts = [] if line is None else [(line.findtext("rsp:Command", "", NS) or "").strip()]
        if line is not None:
            parts += [(a.text or "") for a in line.iterfind("rsp:Arguments", NS)]
        command_line = " ".join(p for p in parts if p)
        command_id = str(uuid.uuid4()).upper()
        command = Command(
            shell.shell_id,
            command_id,
            command_line,
            decode_powershell(command_line),
            dict(shell.environment),
            boot=self.boots,
        )
        runner = HOOK_TAG.search(command.powershell or "")
        path = HOOK_PATH.search(command.powershell or "")
        runs = RUNS_SCRIPT.search(command_line) if command.powershell is None else None
        with self._lock:
            if runner and path and runner.group(1) == "run_file":  # the runner deletes its script
                script = self.files.pop(windows_path(path.group(1).replace("''", "'")), None)
                command.script_file = None if script is None else script.decode("utf-8-sig")
            elif runs:
                script = self.files.get(windows_path(runs.group(1) or runs.group(2)))
                command.script_file = None if script is None else script.decode("utf-8-sig", errors="replace")
            self.commands.append(command)
            shell.commands[command_id] = _Running(command)
        return f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"

    def _running(self, shell: _Shell, command_id: str | None) -> _Running:
        running = shell.commands.get(command_id or "")
        if running is None:
            raise _Fault("s:Sender", "w:InvalidParameter", f"no command {command_id} in this shell")
        return running

    def _send(self, shell: _Shell, body: ET.Element) -> str:
        for stream in body.iterfind("rsp:Send/rsp:Stream", NS):
            with self._lock:
                running = self._running(shell, stream.get("CommandId"))
                running.command.stdin += base64.b64decode(stream.text or "")
                if stream.get("End", "").lower() == "true":
                    running.stdin_ended = True
                self._lock.notify_all()
        return "<rsp:SendResponse/>"

    def _signal(self, shell: _Shell, body: ET.Element) -> str:
        signal = body.find("rsp:Signal", NS)
        if signal is None:
            raise _Fault("s:Sender", "w:InvalidParameter", "no rsp:Signal")
        with self._lock:
            running = self._running(shell, signal.get("CommandId"))
            code = (signal.findtext("rsp:Code", "", NS) or "").rsplit("/", 1)[-1]
            running.command.signals.append(code)
            if running.reply is None or time.monotonic() < running.done_at:  # stopped before it finished
                running.reply = Reply(
                    exit_code=-1073741510 if code == "ctrl_c" else 1
                )  # STATUS_CONTROL_C_EXIT
                running.done_at = 0.0
            if code == "terminate":
                shell.commands.pop(running.command.command_id, None)
            self._lock.notify_all()
        return "<rsp:SignalResponse/>"

    def _receive(self, shell: _Shell, body: ET.Element, header: ET.Element) -> str:
        stream = body.find("rsp:Receive/rsp:DesiredStream", NS)
        command_id = stream.get("CommandId") if stream is not None else None
        timeout = _seconds(header.findtext("w:OperationTimeout", "PT60S", NS))
        deadline = time.monotonic() + timeout
        with self._lock:
            running = self._running(shell, command_id)
            # a client that sends stdin sends it before it receives; wait for its end a little
            while running.command.stdin and not running.stdin_ended and time.monotonic() < deadline:
                self._lock.wait(0.05)
        if running.reply is None:
            reply = self._answer(running.command)
            with self._lock:
                running.reply, running.done_at = reply, time.monotonic() + reply.seconds
        with self._lock:
            while time.monotonic() < min(deadline, running.done_at):
                self._lock.wait(min(deadline, running.done_at) - time.monotonic())
            reply = running.reply
            assert reply is not None
            if time.monotonic() < running.done_at:
                raise _Fault(
                    "s:Receiver",
                    "w:TimedOut",
                    "The WS-Management service cannot complete the operation "
                    "within the time specified in OperationTimeout.",
                    number=TIMED_OUT,
                )
            first = not running.delivered
            running.delivered = True
        if reply.reboot and first:
            self._reboot_pending = True  # once this answer is written (_Handler.do_POST)
        out, err = (_bytes(reply.stdout), _bytes(reply.stderr)) if first else (b"", b"")
        cid = running.command.command_id
        streams = "".join(
            f'<rsp:Stream Name="{name}" CommandId="{cid}">{base64.b64encode(data).decode()}</rsp:Stream>'
            for name, data in (("stdout", out), ("stderr", err))
            if data
        )
        return (
            f"<rsp:ReceiveResponse>{streams}"
            f'<rsp:Stream Name="stdout" CommandId="{cid}" End="true"></rsp:Stream>'
            f'<rsp:Stream Name="stderr" CommandId="{cid}" End="true"></rsp:Stream>'
            f'<rsp:CommandState CommandId="{cid}" State="{DONE}">'
            f"<rsp:ExitCode>{reply.exit_code}</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse>"
        )

    def _answer(self, command: Command) -> Reply:
        for responder in list(self.responders):
            reply = responder(command)
            if reply is not None:
                return reply
        return Reply()


class _Fault(Exception):
    def __init__(self, code: str, subcode: str, reason: str, *, number: int = 2150858752) -> None:
        super().__init__(reason)
        self.code, self.subcode, self.reason, self.number = code, subcode, reason, number

    def body(self) -> str:
        reason = self.reason.replace("&", "&amp;").replace("<", "&lt;")
        return (
            f"<s:Fault><s:Code><s:Value>{self.code}</s:Value><s:Subcode><s:Value>{self.subcode}</s:Value>"
            f'</s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{reason}</s:Text></s:Reason>'
            f'<s:Detail><f:WSManFault Code="{self.number}" Machine="127.0.0.1">'
            f"<f:Message>{reason}</f:Message></f:WSManFault></s:Detail></s:Fault>"
        )


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as WinRM clients expect
    standin: WinrmStandin

    def setup(self) -> None:
        sock = self.request
        if self.standin._is_down():  # a rebooting host: the connection is reset, nothing answers
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            raise ConnectionResetError("the stand-in is rebooting")
        sock.settimeout(30)
        sock.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        if self.standin._is_down():
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if not self.standin._authorized(self.headers.get("Authorization")):
            self.standin.auth_failures += 1
            self._reply(401, b"", {"WWW-Authenticate": 'Basic realm="WSMAN"'})
            return
        try:
            envelope = ET.fromstring(data)
            relates_to = envelope.findtext("s:Header/a:MessageID", "", NS)
            status, body = 200, self.standin._handle(envelope)
        except _Fault as fault:
            status, body = 500, fault.body()
        except ET.ParseError:
            status, body = 400, _Fault("s:Sender", "w:SchemaValidationError", "malformed XML").body()
            relates_to = ""
        self._reply(status, _envelope(body, relates_to).encode("utf-8"))
        if self.standin._reboot_pending:
            self.standin._reboot_pending = False
            self.close_connection = True
            self.standin.restart()

    def _reply(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/soap+xml;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _envelope(body: str, relates_to: str) -> str:
    names = " ".join(f'xmlns:{k}="{v}"' for k, v in NS.items())
    return (
        f'<s:Envelope xml:lang="en-US" {names}><s:Header>'
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        f"<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _seconds(duration: str) -> float:
    """An xs:duration such as ``PT60S`` or ``PT60.000S`` in seconds (60 if unreadable)."""
    match = re.fullmatch(r"PT(?:(\d+)M)?(?:([\d.]+)S)?", duration.strip())
    if not match:
        return 60.0
    return int(match.group(1) or 0) * 60 + float(match.group(2) or 0)
