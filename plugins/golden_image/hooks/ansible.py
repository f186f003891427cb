"""AnsibleHook: runs a playbook against one instance with ansible-runner over SSH.

Streams Ansible's own output to the task log and returns a per-task summary (ok / changed /
failed / skipped, and the failed task with its message) that goes into the image manifest.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golden_image.errors import AnsibleError, UserError
from golden_image.hooks.ssh import SSH_OPTIONS
from golden_image.values import Target

log = logging.getLogger(__name__)

RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}


@dataclass
class AnsibleSummary:
    status: str = "unknown"
    rc: int | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    failed_task: str | None = None
    failed_message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "rc": self.rc,
            "stats": self.stats,
            "tasks": self.tasks,
            "failed_task": self.failed_task,
            "failed_message": self.failed_message,
        }

    def record(self, event: dict[str, Any]) -> None:
        if event.get("event") == "playbook_on_stats":
            data = event.get("event_data", {})
            self.stats = {
                key: sum((data.get(key) or {}).values())
                for key in ("ok", "changed", "failures", "skipped", "dark")
            }
            return
        outcome = RESULT_EVENTS.get(event.get("event", ""))
        if outcome is None:
            return
        data = event.get("event_data", {})
        result = data.get("res") or {}
        changed = bool(result.get("changed")) if isinstance(result, dict) else False
        item = {
            "task": data.get("task", "?"),
            "host": data.get("host", "?"),
            "status": "changed" if outcome == "ok" and changed else outcome,
        }
        ignored = bool(data.get("ignore_errors"))
        if outcome in {"failed", "unreachable"} and not ignored:
            message = _result_message(result)
            item["message"] = message
            self.failed_task = self.failed_task or item["task"]
            self.failed_message = self.failed_message or message
        self.tasks.append(item)


def _result_message(result: Any) -> str:
    if not isinstance(result, dict):
        return str(result)[:2000]
    parts = [str(result.get("msg", "")).strip()]
    for key in ("stderr", "module_stderr", "stdout"):
        value = str(result.get(key) or "").strip()
        if value and value not in parts[0]:
            parts.append(value[-1500:])
            break
    return "\n".join(p for p in parts if p)[:3000]


class AnsibleHook:
    def __init__(self) -> None:
        self._cancelled = threading.Event()

    @staticmethod
    def playbook_binary() -> str:
        local = Path(sys.executable).parent / "ansible-playbook"
        found = str(local) if local.exists() else shutil.which("ansible-playbook")
        if not found:
            raise UserError("ansible-playbook is not installed; run `make setup` (ansible-core is pinned)")
        return found

    def syntax_check(self, playbook: Path) -> None:
        import subprocess

        done = subprocess.run(
            [self.playbook_binary(), "--syntax-check", "-i", "localhost,", str(playbook)],
            capture_output=True,
            text=True,
            env={**os.environ, **self._env(playbook)},
            check=False,
        )
        if done.returncode != 0:
            raise UserError(
                f"ansible-playbook --syntax-check {playbook.name}: {(done.stderr or done.stdout).strip()}"
            )

    @staticmethod
    def _env(playbook: Path) -> dict[str, str]:
        roles = playbook.parent / "roles"
        return {
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_ROLES_PATH": str(roles),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_DISPLAY_ARGS_TO_STDOUT": "False",
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=30s",
            # ansible-runner starts `ansible-playbook` from PATH: make it the pinned one next to us
            "PATH": f"{Path(AnsibleHook.playbook_binary()).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def run_playbook(
        self,
        target: Target,
        playbook: Path,
        extra_vars: dict[str, Any],
        *,
        on_line: Callable[[str], None] | None = None,
    ) -> AnsibleSummary:
        """Apply ``playbook`` to the instance; raise :class:`AnsibleError` with the failed task."""
        import ansible_runner  # heavy; never at DAG parse time

        emit = on_line or (lambda text: log.info("%s", text))
        summary = AnsibleSummary()
        tail: list[str] = []

        def on_event(event: dict[str, Any]) -> bool:
            text = (event.get("stdout") or "").rstrip()
            if text:
                for line in text.splitlines():
                    emit(line)
                tail[:] = [*tail, *text.splitlines()][-20:]
            summary.record(event)
            return False  # the summary keeps what we need; no event files on disk

        inventory = {
            "all": {
                "hosts": {
                    target.instance_id: {
                        "ansible_host": target.host,
                        "ansible_port": target.port,
                        "ansible_user": target.user,
                        "ansible_become": target.escalates,  # cloud images log in as admin/ec2-user
                        "ansible_ssh_private_key_file": target.key_file,
                        "ansible_ssh_common_args": " ".join(SSH_OPTIONS),
                        "ansible_python_interpreter": "/usr/bin/python3",
                    }
                }
            }
        }
        with tempfile.TemporaryDirectory(prefix="golden-ansible-") as private:
            runner = ansible_runner.run(
                private_data_dir=private,
                playbook=str(playbook),
                project_dir=str(playbook.parent),
                inventory=inventory,
                extravars=extra_vars,
                envvars=self._env(playbook),
                event_handler=on_event,
                cancel_callback=self._cancelled.is_set,
                quiet=True,
                suppress_env_files=True,
                timeout=3600,
            )
        summary.status = runner.status
        summary.rc = runner.rc
        log.info(
            "ansible: %s (rc=%s) ok=%s changed=%s failed=%s unreachable=%s skipped=%s",
            runner.status,
            runner.rc,
            summary.stats.get("ok"),
            summary.stats.get("changed"),
            summary.stats.get("failures"),
            summary.stats.get("dark"),
            summary.stats.get("skipped"),
        )
        if runner.status != "successful":
            if self._cancelled.is_set():
                raise AnsibleError("ansible-playbook was cancelled", summary)
            if summary.failed_task:
                failed = f"task '{summary.failed_task}' failed: {summary.failed_message}"
            else:  # failed before any task ran (syntax, unreachable): Ansible's own last words
                failed = (
                    f"ansible-playbook ended with status {runner.status} (rc={runner.rc}):\n"
                    + "\n".join(tail)
                )
            raise AnsibleError(f"{playbook.name}: {failed}", summary)
        return summary

    def cancel(self) -> None:
        self._cancelled.set()
