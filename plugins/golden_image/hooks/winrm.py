"""Run PowerShell on a Windows instance over WinRM/HTTPS (pywinrm, the library Ansible's ``winrm``
connection uses too).

Basic auth over TLS, the instance's self-signed certificate pinned twice: it is the only trusted
CA (``ca_trust_path=login.ca_file``, so the chain is verified), and every connection's certificate
must have the SHA-256 ``login.cert_sha256`` (urllib3's ``assert_fingerprint``, checked on each TLS
handshake; a mismatch is not retryable). The password goes to Airflow's secret masker, is in no
command line and no message this module raises (every message is scrubbed of it).

A script runs as ``powershell -NoProfile -NonInteractive -EncodedCommand <UTF-16LE base64>`` in a
WinRM cmd shell that is kept open for the hook's life (re-opened once if the instance restarted);
stderr's CLIXML error records become readable text. Files travel as base64 chunks through such
commands, each within cmd.exe's 8191-character command line; uploads are checked by SHA-256,
downloads are bounded (``limit``). The scripts carry a ``# golden-winrm: <what>`` tag line, so a
stand-in host (tests/windows/winrm_server.py) can tell them apart.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
import socket
import ssl
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol
from winrm.transport import Transport

from golden_image.errors import WinrmError
from golden_image.hooks import mask_secret
from golden_image.values import WinrmLogin
from golden_image.windows import certificate_sha256

log = logging.getLogger(__name__)

POWERSHELL = "powershell -NoProfile -NonInteractive -EncodedCommand "
MAX_COMMAND_LINE = 8191
"""cmd.exe's limit, which a WinRM cmd shell command line is subject to."""
UTF8 = 65001
SHELL_NOT_FOUND = 2150858843
"""The WSManFault of a shell the host no longer has (it restarted)."""
READ_CHUNK = 512 << 10
UNREACHABLE_ADVICE = (
    "is the instance running, and does its security group allow TCP 5986 from the worker "
    "(or is the SSM tunnel up)?"
)


@dataclass(frozen=True)
class RemoteResult:
    exit_code: int
    stdout: str
    stderr: str


def encode_command(script: str) -> str:
    """The command line that runs ``script`` in Windows PowerShell."""
    return POWERSHELL + base64.b64encode(script.encode("utf-16-le")).decode("ascii")


SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
"""What PowerShell reads as a single quote: the ASCII one and the typographic ones (its tokenizer
ends a verbatim string at any of them; CodeGeneration.EscapeSingleQuotedStringContent doubles each)."""


def ps_quote(text: str) -> str:
    """``text`` as a PowerShell single-quoted (verbatim) string: every quote character doubled."""
    return "'" + "".join(c + c if c in SINGLE_QUOTES else c for c in text) + "'"


_CLIXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_PREFIX = {"Error": "", "Warning": "WARNING: ", "Verbose": "VERBOSE: ", "Debug": "DEBUG: ", "Information": ""}


def clixml_text(stderr: str) -> str:
    """PowerShell's stderr as text: each ``#< CLIXML`` document's error (and warning, verbose,
    ...) records as lines; progress records dropped; anything else kept as it is."""
    if "#< CLIXML" not in stderr:
        return stderr
    out: list[str] = []
    for part in re.split(r"#< CLIXML\r?\n?", stderr):
        if not part.strip():
            continue
        start = part.find("<Objs")
        end = part.rfind("</Objs>")
        if start < 0 or end < 0:
            out.append(part)
            continue
        try:
            root = ET.fromstring(part[start : end + len("</Objs>")])  # noqa: S314 - pywinrm parses it so too
        except ET.ParseError:
            out.append(part)
            continue
        text = ""
        for element in root:
            stream = element.get("S", "")
            if element.tag.endswith("}S") and stream in _PREFIX:
                value = _CLIXML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), element.text or "")
                text += _PREFIX[stream] + value if not text or text.endswith("\n") else value
        out.append(text)
        out.append(part[end + len("</Objs>") :])
    return "".join(out).replace("\r\n", "\n").strip()


def _normal_sha256(value: str) -> str:
    return value.replace(":", "").strip().lower()


def server_cert_sha256(host: str, port: int, *, timeout: float = 15) -> str:
    """The SHA-256 of the certificate ``host:port`` presents (nothing verified: compare it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise WinrmError(f"cannot reach {host}:{port} over TLS ({exc}); {UNREACHABLE_ADVICE}") from None
    if not der:
        raise WinrmError(f"{host}:{port} presented no certificate")
    return certificate_sha256(der)


def check_pin(login: WinrmLogin) -> None:
    """Refuse (not retryable) unless ``login.ca_file`` holds the pinned certificate and the host
    presents it: for clients that can only be given a CA file (Packer's ``SSL_CERT_FILE``)."""
    pin = _normal_sha256(login.cert_sha256)
    try:
        pem = Path(login.ca_file).read_text(encoding="ascii")
        der = ssl.PEM_cert_to_DER_cert(pem)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise WinrmError(
            f"cannot read the pinned certificate {login.ca_file}: {exc}", retryable=False
        ) from None
    if certificate_sha256(der) != pin:
        raise WinrmError(
            f"{login.ca_file} does not hold the pinned certificate (SHA-256 {pin}): wrong file",
            retryable=False,
        )
    presented = server_cert_sha256(login.host, login.port)
    if presented != pin:
        raise WinrmError(
            f"{login.host}:{login.port} presents a certificate with SHA-256 {presented}, not the pinned "
            f"{pin} (printed on the instance's console): not sending the password: is this the instance?",
            retryable=False,
        )


class _PinnedAdapter(HTTPAdapter):
    """An HTTPS adapter whose connections must present the certificate with this SHA-256."""

    def __init__(self, sha256: str) -> None:
        self._pin = sha256
        super().__init__()

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs["assert_fingerprint"] = self._pin
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


class _PinnedTransport(Transport):
    """pywinrm's transport, every session it builds mounting :class:`_PinnedAdapter`."""

    pin = ""

    def build_session(self) -> requests.Session:
        fresh = self.session is None
        session = super().build_session()
        if fresh:
            session.mount("https://", _PinnedAdapter(self.pin))
        return session


class WinrmHook:
    """PowerShell, uploads and downloads on one Windows instance (see the module docstring)."""

    def __init__(self, login: WinrmLogin, *, operation_timeout_s: float = 60) -> None:
        if not login.password:
            raise WinrmError(f"no password for {login.user}@{login.host}", retryable=False)
        mask_secret(login.password)
        self.login = login
        self.operation_timeout_s = max(1, int(operation_timeout_s))
        self.endpoint = f"https://{login.host}:{login.port}/wsman"
        self._protocol: Protocol | None = None
        self._shell_id: str | None = None
        self._running: tuple[str, str] | None = None
        self._cancelled = threading.Event()
        self._lock = threading.RLock()

    # --- the interface ---------------------------------------------------------------------

    def run_ps(self, script: str, *, timeout: float = 1800, check: bool = True) -> RemoteResult:
        """Run ``script``; :class:`WinrmError` if it cannot run, or (``check``) exits non-zero."""
        script = "$ProgressPreference = 'SilentlyContinue'\n" + script
        command = encode_command(script)
        if len(command) > MAX_COMMAND_LINE:
            return self._run_long(script, timeout=timeout, check=check)
        result = self._run(command, timeout=timeout, what=_first_line(script))
        if check and result.exit_code != 0:
            detail = (result.stderr or result.stdout).strip()[-2000:]
            raise WinrmError(
                self._scrub(
                    f"PowerShell '{_first_line(script)}' exited {result.exit_code} on {self.login.host}: "
                    + detail
                ),
                retryable=False,
            )
        return result

    def put_file(self, data: bytes, remote_path: str) -> None:
        """Write ``data`` to ``remote_path`` (an absolute Windows path; its directory is created),
        checked by SHA-256 afterwards."""
        path = _windows_path(remote_path)
        overhead = max(len(encode_command(_chunk_script(verb, path, ""))) for verb in ("create", "append"))
        room = (
            (MAX_COMMAND_LINE - overhead) * 3 // 8
        )  # base64 of UTF-16: 8/3 command characters per character
        chunk = max(3, room // 4 * 3)  # raw bytes whose base64 fills the room
        if room < 16:
            raise WinrmError(f"remote path too long for an upload: {remote_path[:200]}", retryable=False)
        offset = 0
        while True:
            piece = data[offset : offset + chunk]
            action = "create" if offset == 0 else "append"
            self._transfer(_chunk_script(action, path, base64.b64encode(piece).decode()), remote_path)
            offset += len(piece)
            if offset >= len(data):
                break
        remote = (
            self._transfer(
                _tagged("sha256", path, "(Get-FileHash -LiteralPath $path -Algorithm SHA256).Hash"),
                remote_path,
            )
            .stdout.strip()
            .lower()
        )
        if remote != hashlib.sha256(data).hexdigest():
            raise WinrmError(
                f"upload to {remote_path} arrived damaged (SHA-256 {remote[:64]}); retry", retryable=True
            )

    def get_file(self, remote_path: str, *, limit: int = 64 << 20) -> bytes:
        """The content of ``remote_path``; :class:`WinrmError` if it is larger than ``limit``."""
        path = _windows_path(remote_path)
        size_text = self._transfer(
            _tagged("size", path, "(Get-Item -LiteralPath $path).Length"), remote_path
        ).stdout
        try:
            size = int(size_text.strip())
        except ValueError:
            raise WinrmError(f"cannot read the size of {remote_path}: {size_text.strip()[:200]!r}") from None
        if size > limit:
            raise WinrmError(
                f"{remote_path} is {size} bytes, more than the {limit} this download allows", retryable=False
            )
        parts: list[bytes] = []
        offset = 0
        while offset < size:
            body = (
                f"$offset = {offset}\n$count = {READ_CHUNK}\n"
                "$stream = [IO.File]::OpenRead($path)\n"
                "try {\n  $null = $stream.Seek($offset, [IO.SeekOrigin]::Begin)\n"
                "  $buffer = New-Object byte[] $count\n  $read = $stream.Read($buffer, 0, $count)\n"
                "  [Convert]::ToBase64String($buffer, 0, $read)\n} finally { $stream.Dispose() }"
            )
            out = self._transfer(_tagged("read", path, body), remote_path).stdout
            piece = base64.b64decode("".join(out.split()))
            if not piece:
                raise WinrmError(f"{remote_path} shrank while it was read ({offset} of {size} bytes)")
            parts.append(piece)
            offset += len(piece)
        return b"".join(parts)[:size]

    def cancel(self) -> None:
        """Stop the running command (from another thread, e.g. a task's ``on_kill``)."""
        self._cancelled.set()
        running = self._running
        if running is None:
            return
        with contextlib.suppress(Exception):  # best effort: the instance may be gone
            protocol = self._new_protocol()
            protocol.cleanup_command(*running)
            protocol.transport.close_session()

    def close(self) -> None:
        with self._lock:
            protocol, shell_id = self._protocol, self._shell_id
            self._protocol, self._shell_id = None, None
        if protocol is not None and shell_id is not None:
            with contextlib.suppress(Exception):
                protocol.close_shell(shell_id)
        if protocol is not None:
            protocol.transport.close_session()

    def __enter__(self) -> WinrmHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the machinery -----------------------------------------------------------------------

    def _new_protocol(self) -> Protocol:
        login = self.login
        arguments: dict[str, Any] = {
            "endpoint": self.endpoint,
            "transport": "ssl",  # Basic auth over HTTPS
            "username": login.user,
            "password": login.password,
            "server_cert_validation": "validate",
            "ca_trust_path": login.ca_file,
            "read_timeout_sec": self.operation_timeout_s + 30,
            "operation_timeout_sec": self.operation_timeout_s,
            "message_encryption": "never",  # TLS is the encryption; Basic has none of its own
            "proxy": None,  # straight to the instance (or the SSM tunnel), never the worker's proxy
        }
        protocol = Protocol(**arguments)
        transport = _PinnedTransport(
            endpoint=self.endpoint,
            username=login.user,
            password=login.password,
            ca_trust_path=login.ca_file,
            read_timeout_sec=self.operation_timeout_s + 30,
            server_cert_validation="validate",
            auth_method="ssl",
            message_encryption="never",
            proxy=None,
        )
        transport.pin = _normal_sha256(login.cert_sha256)
        protocol.transport = transport
        return protocol

    def _shell(self) -> tuple[Protocol, str]:
        with self._lock:
            if self._protocol is None:
                self._protocol = self._new_protocol()
            if self._shell_id is None:
                self._shell_id = self._protocol.open_shell(codepage=UTF8, noprofile=True)
            return self._protocol, self._shell_id

    def _drop_shell(self) -> None:
        with self._lock:
            protocol = self._protocol
            self._protocol, self._shell_id = None, None
        if protocol is not None:
            protocol.transport.close_session()

    def _run(self, command: str, *, timeout: float, what: str) -> RemoteResult:
        if self._cancelled.is_set():
            raise WinrmError(f"cancelled before '{what}' on {self.login.host}", retryable=False)
        deadline = time.monotonic() + timeout
        for attempt in (1, 2):
            try:
                protocol, shell_id = self._shell()
                command_id = protocol.run_command(shell_id, command)
                break
            except WSManFaultError as exc:
                self._drop_shell()
                if exc.wsman_fault_code != SHELL_NOT_FOUND or attempt == 2:
                    raise self._error(exc, what) from None
            except Exception as exc:
                self._drop_shell()
                raise self._error(exc, what) from None
        self._running = (shell_id, command_id)
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            while True:
                if self._cancelled.is_set():
                    raise WinrmError(f"'{what}' on {self.login.host} was cancelled", retryable=False)
                if time.monotonic() > deadline:
                    raise WinrmError(f"'{what}' on {self.login.host} timed out after {timeout:.0f} s")
                try:
                    stdout, stderr, code, done = protocol.get_command_output_raw(shell_id, command_id)
                except WinRMOperationTimeoutError:
                    continue  # still running: WinRM answers each Receive within its OperationTimeout
                out.append(stdout)
                err.append(stderr)
                if done:
                    break
        except WinrmError:
            with contextlib.suppress(Exception):
                protocol.cleanup_command(shell_id, command_id)
            raise
        except Exception as exc:
            self._drop_shell()
            raise self._error(exc, what) from None
        finally:
            self._running = None
        with contextlib.suppress(Exception):  # the command is over; this only releases it
            protocol.cleanup_command(shell_id, command_id)
        if self._cancelled.is_set():  # it ended because cancel() stopped it
            raise WinrmError(f"'{what}' on {self.login.host} was cancelled", retryable=False)
        stdout_text = b"".join(out).decode("utf-8", errors="replace")
        stderr_text = clixml_text(b"".join(err).decode("utf-8", errors="replace"))
        return RemoteResult(code, self._scrub(stdout_text), self._scrub(stderr_text))

    def _run_long(self, script: str, *, timeout: float, check: bool) -> RemoteResult:
        """A script too long for one command line: uploaded to a private temp file and run."""
        path = f"C:\\Windows\\Temp\\golden-{uuid.uuid4().hex}.ps1"
        self.put_file(script.encode("utf-8-sig"), path)
        runner = (
            "# golden-winrm: run_file\n"
            f"$path = {ps_quote(path)}\n"
            "try { & $path; $code = $LASTEXITCODE; if ($null -eq $code) { $code = [int](-not $?) } }\n"
            "finally { Remove-Item -LiteralPath $path -Force -ErrorAction SilentlyContinue }\n"
            "exit $code"
        )
        result = self._run(encode_command(runner), timeout=timeout, what=_first_line(script))
        if check and result.exit_code != 0:
            detail = (result.stderr or result.stdout).strip()[-2000:]
            raise WinrmError(
                self._scrub(
                    f"PowerShell script {path} exited {result.exit_code} on {self.login.host}: {detail}"
                ),
                retryable=False,
            )
        return result

    def _transfer(self, script: str, remote_path: str) -> RemoteResult:
        result = self._run(encode_command(script), timeout=600, what=f"transfer of {remote_path}")
        if result.exit_code != 0:
            raise WinrmError(
                self._scrub(
                    f"{remote_path} on {self.login.host}: {(result.stderr or result.stdout).strip()[-1000:]}"
                ),
                retryable=False,
            )
        return result

    def _scrub(self, text: str) -> str:
        return text.replace(self.login.password, "***") if self.login.password else text

    def _error(self, exc: BaseException, what: str) -> WinrmError:
        """What went wrong, what to do next; never the password."""
        where = f"{self.login.user}@{self.login.host}:{self.login.port}"
        text = str(exc)
        if isinstance(exc, requests.exceptions.SSLError):
            if "Fingerprints did not match" in text:
                message = (
                    f"{where} presented a certificate that is not the pinned one (SHA-256 "
                    f"{_normal_sha256(self.login.cert_sha256)}, printed on the instance's console): "
                    "not sending the password: is this the instance (a reused address, a man in the middle)?"
                )
            else:
                message = (
                    f"TLS with {where} failed: the certificate is not the pinned one in {self.login.ca_file} "
                    f"({_short(text)}): refusing to send the password"
                )
            return WinrmError(self._scrub(message), retryable=False)
        if isinstance(
            exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout | socket.timeout
        ):
            return WinrmError(
                self._scrub(f"cannot reach {where} over WinRM/HTTPS ({_short(text)}); {UNREACHABLE_ADVICE}")
            )
        if isinstance(exc, InvalidCredentialsError):
            return WinrmError(
                f"{where} refused the login of {self.login.user} (HTTP 401): the password is not the "
                "instance's (GetPasswordData decrypted with another key?) or Basic auth is off in its WinRM",
                retryable=False,
            )
        if isinstance(exc, WSManFaultError):
            return WinrmError(
                self._scrub(f"WinRM on {where} refused '{what}': {exc.reason} (fault {exc.wsman_fault_code})")
            )
        if isinstance(exc, WinRMTransportError | WinRMError):
            return WinrmError(self._scrub(f"WinRM with {where} failed during '{what}': {_short(text)}"))
        return WinrmError(
            self._scrub(f"WinRM with {where} failed during '{what}': {type(exc).__name__}: {_short(text)}")
        )


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(script: str) -> str:
    lines = [
        line.strip()
        for line in script.splitlines()
        if line.strip() and not line.startswith("$ProgressPreference") and not line.startswith("#")
    ]
    return _short(lines[0] if lines else "", 80)


def _windows_path(path: str) -> str:
    if not re.match(r"^[A-Za-z]:\\", path) or "\n" in path or "\r" in path:
        raise WinrmError(f"not an absolute Windows path (C:\\...): {path[:200]!r}", retryable=False)
    return path


def _tagged(action: str, path: str, body: str) -> str:
    return f"# golden-winrm: {action}\n$ErrorActionPreference = 'Stop'\n$path = {ps_quote(path)}\n{body}"


def _chunk_script(action: str, path: str, chunk: str) -> str:
    mode = "Create" if action == "create" else "Append"
    mkdir = (
        "$null = New-Item -ItemType Directory -Force -Path ([IO.Path]::GetDirectoryName($path))\n"
        if action == "create"
        else ""
    )
    body = (
        f"$chunk = '{chunk}'\n{mkdir}$bytes = [Convert]::FromBase64String($chunk)\n"
        f"$stream = [IO.File]::Open($path, [IO.FileMode]::{mode}, [IO.FileAccess]::Write)\n"
        "try { $stream.Write($bytes, 0, $bytes.Length) } finally { $stream.Dispose() }"
    )
    return _tagged(action, path, body)
