"""PackerHook: runs the Packer CLI (validate / build -machine-readable) and parses its output.

Templates are HCL2 that both Debian's Packer 1.6.6 and current Packer accept. Variables go in a
generated ``*.pkrvars.hcl`` file (JSON values are valid HCL expressions). Output is parsed
line by line and streamed to the task log; the artifact ids are read from Packer's own output.

Over WinRM (``build(..., winrm=login)``) the password reaches Packer only as the environment
variable ``PKR_VAR_winrm_password`` (the template declares ``winrm_password`` with ``sensitive =
true``, so Packer 1.6.6 prints it as ``<sensitive>``), never on a command line or in the var file;
the pinned certificate is Packer's only trusted CA through ``SSL_CERT_FILE`` (a private copy in the
run's workspace; Go reads it; Packer 1.6.6 has no CA option), checked against the pin before
Packer starts (Packer cannot pin); and every line the hook emits or raises is scrubbed of the
password anyway.

The variables are data: only names the template declares (:func:`check_variables`, also run when
the family file is loaded), and every string is written so that Packer reads it literally
(``${`` and ``%{`` would start an HCL template directive: they are escaped as ``$${`` / ``%%{``).
Packer runs unprivileged in a private workspace (``hooks/unprivileged.py``).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golden_image.errors import PackerError
from golden_image.hcl import HclError, template_variables
from golden_image.hooks import unprivileged
from golden_image.values import WinrmLogin

log = logging.getLogger(__name__)

COMMA = "%!(PACKER_COMMA)"
KEY_VARIABLE = "ssh_private_key_file"
"""The template variable holding the instance's key: the run gets a private copy of the key file."""
WINRM_PASSWORD_VARIABLE = "winrm_password"  # noqa: S105 - a variable name
"""The template variable holding the WinRM password: set only through ``PKR_VAR_winrm_password``."""
WINRM_LOGIN_VARIABLES = {"winrm_host": "host", "winrm_port": "port", "winrm_username": "user"}
"""Template variables filled from the ``WinrmLogin`` when the caller does not give them."""
SENSITIVE = "<sensitive>"


@dataclass(frozen=True)
class PackerLine:
    timestamp: str
    target: str
    kind: str
    data: tuple[str, ...]

    @property
    def message(self) -> str:
        return ",".join(self.data[1:] if self.kind == "ui" else self.data)


def parse_machine_line(line: str) -> PackerLine | None:
    """``<ts>,<target>,<type>,<data...>`` with escaped commas and newlines; None for other text."""
    parts = line.rstrip("\n").split(",")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    data = tuple(p.replace(COMMA, ",").replace("\\n", "\n").replace("\\r", "") for p in parts[3:])
    return PackerLine(parts[0], parts[1], parts[2], data)


@dataclass
class PackerResult:
    artifacts: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    seconds: float = 0.0


VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def hcl_literal(value: Any) -> str:
    """``value`` as an HCL expression that evaluates to exactly ``value``: literals, lists and
    objects; every string (object keys too) quoted with ``${`` / ``%{`` escaped, so Packer
    evaluates no interpolation or template directive in it."""
    if isinstance(value, str):
        return _hcl_string(value)
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(hcl_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{hcl_literal(str(k))} = {hcl_literal(v)}" for k, v in value.items()) + "}"
    raise PackerError(f"cannot pass a {type(value).__name__} to Packer: {value!r:.80}")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _hcl_string(text: str) -> str:
    """A quoted HCL string whose value is ``text``, literally (no interpolation, no directive)."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out).replace("${", "$${").replace("%{", "%%{") + '"'


def hcl_var_file(variables: dict[str, Any]) -> str:
    lines = []
    for name, value in sorted(variables.items()):
        if not VARIABLE_NAME.fullmatch(name):
            raise PackerError(f"Packer variable name '{name}' is not a valid identifier")
        lines.append(f"{name} = {hcl_literal(value)}")
    return "\n".join(lines) + "\n"


def check_variables(template: Path, names: list[str] | set[str]) -> None:
    """Refuse a variable ``template`` does not declare (Packer 1.6 only warns, then ignores it)."""
    try:
        declared = template_variables(template)
    except (OSError, UnicodeDecodeError, HclError) as exc:
        raise PackerError(f"cannot read the variables of {template.name}: {exc}") from None
    unknown = sorted(set(names) - set(declared))
    if unknown:
        hints = [
            f"'{n}' (did you mean '{close[0]}'?)"
            if (close := difflib.get_close_matches(n, declared, n=1))
            else f"'{n}'"
            for n in unknown
        ]
        raise PackerError(
            f"{template.name} declares no variable {', '.join(hints)}; "
            f"it declares: {', '.join(declared) or 'none'}"
        )


class PackerHook:
    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("packer") or ""
        self._process: subprocess.Popen[str] | None = None
        if not self.binary:
            raise PackerError("packer is not installed; run `apt-get install -y packer` (or `make setup`)")

    @staticmethod
    def _prepare(
        space: unprivileged.Workspace,
        template: Path,
        variables: dict[str, Any],
        extra_env: Mapping[str, str] | None = None,
        winrm: WinrmLogin | None = None,
    ) -> tuple[Path, dict[str, str]]:
        """The var file (private to the run's user, the key replaced by its private copy) and the
        environment of one Packer run in ``space``."""
        unprivileged.require_reachable([template, template.parent], space.who, "packer")
        if WINRM_PASSWORD_VARIABLE in variables:
            raise PackerError(
                f"the WinRM password goes to Packer as PKR_VAR_{WINRM_PASSWORD_VARIABLE} (build(winrm=...)), "
                "never in its variables (they are written to a file)"
            )
        check_variables(template, list(variables))
        variables = dict(variables)
        extra = dict(extra_env or {})
        if winrm is not None:
            declared = set(template_variables(template))
            for name, attribute in WINRM_LOGIN_VARIABLES.items():
                if name in declared and name not in variables:
                    variables[name] = getattr(winrm, attribute)
            cert = Path(winrm.ca_file).read_text(encoding="ascii")
            extra["SSL_CERT_FILE"] = str(space.write("winrm-ca.pem", cert))  # the run's user reads it
            extra[f"PKR_VAR_{WINRM_PASSWORD_VARIABLE}"] = winrm.password
        if variables.get(KEY_VARIABLE):
            variables[KEY_VARIABLE] = space.copy_key(str(variables[KEY_VARIABLE]))
        var_file = space.write("golden.pkrvars.hcl", hcl_var_file(variables))
        env = space.env(
            {
                "CHECKPOINT_DISABLE": "1",  # no phone-home
                "PACKER_NO_COLOR": "1",
                "PACKER_CACHE_DIR": str(space.mkdir("packer_cache")),
                "PACKER_CONFIG_DIR": str(space.home / ".packer.d"),
                **extra,
            }
        )
        return var_file, env

    def validate(
        self, template: Path, variables: dict[str, Any], *, env: Mapping[str, str] | None = None
    ) -> None:
        """``packer validate``; a declared ``winrm_password`` gets a placeholder (it is only known
        to the task that builds)."""
        extra = dict(env or {})
        password_env = f"PKR_VAR_{WINRM_PASSWORD_VARIABLE}"
        if password_env not in extra and WINRM_PASSWORD_VARIABLE in _declared(template):
            extra[password_env] = "validate-only placeholder"
        with unprivileged.workspace("golden-packer-") as space:
            var_file, env = self._prepare(space, template, variables, extra)
            done = subprocess.run(
                [*space.who.prefix(), self.binary, "validate", f"-var-file={var_file}", template.name],
                cwd=template.parent,
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
        if done.returncode != 0:
            raise PackerError(f"packer validate {template.name}: {(done.stdout + done.stderr).strip()}")

    def build(
        self,
        template: Path,
        variables: dict[str, Any],
        *,
        on_line: Callable[[str], None] | None = None,
        only: str | None = None,
        env: Mapping[str, str] | None = None,
        winrm: WinrmLogin | None = None,
        secrets: Collection[str] = (),
    ) -> PackerResult:
        """``packer build -machine-readable``; raises :class:`PackerError` with Packer's own error.

        ``env``: more environment for Packer (its values never on the command line). ``winrm``: the
        login of a WinRM build (see the module docstring). ``secrets``: strings no emitted line,
        error or tail may contain (the WinRM password always is one)."""
        hidden = [s for s in (*secrets, *([winrm.password] if winrm else [])) if s]
        if winrm is not None:
            from golden_image.hooks import mask_secret
            from golden_image.hooks.winrm import check_pin

            mask_secret(winrm.password)
            check_pin(winrm)  # raises WinrmError (not retryable) before Packer ever sends the password
        sink = on_line or (lambda text: log.info("%s", text))

        def emit(text: str) -> None:
            sink(_redact(text, hidden))

        result = PackerResult()
        started = time.monotonic()
        with unprivileged.workspace("golden-packer-") as space:
            var_file, env_ = self._prepare(space, template, variables, env, winrm)
            command = [
                *space.who.prefix(),
                self.binary,
                "build",
                "-machine-readable",
                "-color=false",
                "-on-error=cleanup",
                f"-var-file={var_file}",
            ]
            if only:
                command.append(f"-only={only}")
            command.append(template.name)
            self._process = subprocess.Popen(
                command,
                cwd=template.parent,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env_,
                start_new_session=True,
            )
            assert self._process.stdout is not None
            for raw in self._process.stdout:
                self._consume(_redact(raw, hidden), result, emit)
            code = self._process.wait()
            self._process = None
        result.seconds = time.monotonic() - started
        if code == 0 and result.errors:  # remote stderr (warnings) of a provisioner that succeeded
            log.warning("packer succeeded with messages on stderr: %s", "; ".join(result.errors[-5:]))
        if code != 0:
            detail = "\n".join(result.errors or result.tail[-20:])
            raise PackerError(f"packer build failed (exit {code}):\n{detail}")
        if not result.artifacts:
            raise PackerError("packer build produced no artifact (does -only match a build in the template?)")
        return result

    @staticmethod
    def _consume(raw: str, result: PackerResult, emit: Callable[[str], None]) -> None:
        line = parse_machine_line(raw)
        if line is None:
            if raw.strip():
                emit(raw.rstrip())
                result.tail = [*result.tail[-49:], raw.rstrip()]
            return
        if line.kind == "ui" and line.data:
            text = line.message
            emit(text)
            result.tail = [*result.tail[-49:], text]
            if line.data[0] == "error":
                result.errors.append(text)
        elif line.kind == "artifact" and len(line.data) >= 3 and line.data[1] == "id":
            for artifact_id in line.data[2].split(","):
                result.artifacts.append({"build": line.target, "id": artifact_id})
        elif line.kind == "error":
            result.errors.append(line.message)

    def cancel(self) -> None:
        """Cancel a running build cleanly (SIGTERM to packer; it removes what it created)."""
        process = self._process
        if process is not None and process.poll() is None:
            log.warning("stopping packer (pid %s)", process.pid)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, SENSITIVE)
    return text


def _declared(template: Path) -> list[str]:
    try:
        return template_variables(template)
    except (OSError, UnicodeDecodeError, HclError):
        return []  # check_variables reports it
