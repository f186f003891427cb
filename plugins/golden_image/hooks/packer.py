"""PackerHook: runs the Packer CLI (validate / build -machine-readable) and parses its output.

Templates are HCL2 that both Debian's Packer 1.6.6 and current Packer accept. Variables go in a
generated ``*.pkrvars.hcl`` file (JSON values are valid HCL expressions). Output is parsed
line by line and streamed to the task log; the artifact ids are read from Packer's own output.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golden_image.errors import PackerError

log = logging.getLogger(__name__)

COMMA = "%!(PACKER_COMMA)"


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


def hcl_var_file(variables: dict[str, Any]) -> str:
    lines = []
    for name, value in sorted(variables.items()):
        if not name.isidentifier():
            raise PackerError(f"Packer variable name '{name}' is not a valid identifier")
        lines.append(f"{name} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


class PackerHook:
    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("packer") or ""
        self._process: subprocess.Popen[str] | None = None
        if not self.binary:
            raise PackerError("packer is not installed; run `apt-get install -y packer` (or `make setup`)")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("CHECKPOINT_DISABLE", "1")  # no phone-home
        env.setdefault("PACKER_NO_COLOR", "1")
        return env

    def validate(self, template: Path, variables: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory(prefix="golden-packer-") as tmp:
            var_file = Path(tmp) / "golden.pkrvars.hcl"
            var_file.write_text(hcl_var_file(variables))
            done = subprocess.run(
                [self.binary, "validate", f"-var-file={var_file}", template.name],
                cwd=template.parent,
                capture_output=True,
                text=True,
                env=self._env(),
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
    ) -> PackerResult:
        """``packer build -machine-readable``; raises :class:`PackerError` with Packer's own error."""
        emit = on_line or (lambda text: log.info("%s", text))
        result = PackerResult()
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="golden-packer-") as tmp:
            var_file = Path(tmp) / "golden.pkrvars.hcl"
            var_file.write_text(hcl_var_file(variables))
            command = [
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
                env=self._env(),
                start_new_session=True,
            )
            assert self._process.stdout is not None
            for raw in self._process.stdout:
                self._consume(raw, result, emit)
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
