"""AnsibleHook: runs a playbook against one instance with ansible-runner, over SSH (Linux) or
Ansible's ``winrm`` connection (Windows: HTTPS, Basic auth, the pinned certificate as the only CA;
the ``ansible.windows`` modules come with the pinned ``ansible`` package).

Streams Ansible's own output to the task log and returns a per-task summary (ok / changed /
failed / skipped, and the failed task with its message) that goes into the image manifest.

Variables are data: they reach Ansible in a private YAML file (``-e @file``) in which every
string, at any depth and in keys too, is tagged ``!unsafe``, so Ansible never evaluates a
``{{ }}`` or ``{% %}`` in them; ``ansible_*`` names (connection settings) are refused here too
(the spec refuses them at load time). Secret values (``ansible.secret_vars``) travel the same
way and are replaced by ``********`` in every line this hook emits and in the summary.

ansible-playbook runs unprivileged in a private workspace (``hooks/unprivileged.py``) with a copy
of the instance's key, through a wrapper that ansible-runner starts as its ``binary``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from golden_image.errors import AnsibleError, UserError
from golden_image.hooks import unprivileged
from golden_image.hooks.ssh import SSH_OPTIONS
from golden_image.values import Target, WinrmLogin

log = logging.getLogger(__name__)

RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}
RUNNER_ENV = (
    "ANSIBLE_CALLBACK_PLUGINS",
    "ANSIBLE_STDOUT_CALLBACK",
    "ORIGINAL_STDOUT_CALLBACK",
    "ANSIBLE_LOAD_CALLBACK_PLUGINS",
    "AWX_ISOLATED_DATA_DIR",
    "RUNNER_OMIT_EVENTS",
    "RUNNER_ONLY_FAILED_EVENTS",
    "AD_HOC_COMMAND_ID",
    "JOB_ID",
    "PROJECT_UPDATE_ID",
    "MAX_EVENT_RES",
)
"""What ansible-runner sets for its event callback: the wrapper passes these on, nothing else of
the worker's environment."""
CONNECTION_VARS = re.compile(r"ansible_", re.I)
MASK = "********"


class _UnsafeDumper(yaml.SafeDumper):
    """YAML whose every string is ``!unsafe``: Ansible keeps it as data, never a template."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_UnsafeDumper.add_representer(str, lambda dumper, text: dumper.represent_scalar("!unsafe", text))


def unsafe_yaml(variables: dict[str, Any]) -> str:
    """``variables`` as an Ansible vars file in which no string is ever templated."""
    return yaml.dump(variables, Dumper=_UnsafeDumper, default_flow_style=False, allow_unicode=True)


class Redactor:
    """Replaces secret values in text (longest first, also as they look JSON-escaped)."""

    def __init__(self, secrets: list[str]) -> None:
        forms = {form for value in secrets if value for form in (value, json.dumps(value)[1:-1])}
        self.forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self.forms:
            text = text.replace(form, MASK)
        return text


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

    def record(self, event: dict[str, Any], redact: Callable[[str], str] = str) -> None:
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
            "task": redact(str(data.get("task", "?"))),
            "host": data.get("host", "?"),
            "status": "changed" if outcome == "ok" and changed else outcome,
        }
        ignored = bool(data.get("ignore_errors"))
        if outcome in {"failed", "unreachable"} and not ignored:
            message = redact(_result_message(result))
            item["message"] = message
            self.failed_task = self.failed_task or item["task"]
            self.failed_message = self.failed_message or message
        self.tasks.append(item)


def _result_message(result: Any) -> str:
    if not isinstance(result, dict):
        return str(result)[:2000]
    parts = [str(result.get("msg", "")).strip()]
    if result.get("rc") not in (None, 0, "0"):  # "unexpected rc from ...: see rc, stdout, and stderr"
        parts.append(f"rc={result['rc']}")
    items = result.get("results")
    if isinstance(items, list):  # a loop ("One or more items failed"): which items, and why
        for item in items:
            if isinstance(item, dict) and item.get("failed"):
                label = item.get("_ansible_item_label", item.get("item", "?"))
                parts.append(f"item {label}: {_result_message(item)}"[:1000])
        return "\n".join(p for p in parts if p)[:3000]
    for key in ("stderr", "module_stderr", "stdout"):
        value = str(result.get(key) or "").strip()
        if value and value not in parts[0]:
            parts.append(value[-1500:])
            break
    return "\n".join(p for p in parts if p)[:3000]


def winrm_connection(ca_file: str) -> dict[str, Any]:
    """Ansible's ``winrm`` connection to a pipeline instance: HTTPS, Basic auth, only the pinned
    certificate trusted (pywinrm verifies it and the host name against its SANs)."""
    return {
        "ansible_connection": "winrm",
        "ansible_shell_type": "powershell",
        "ansible_winrm_scheme": "https",
        "ansible_winrm_transport": "basic",
        "ansible_winrm_server_cert_validation": "validate",
        "ansible_winrm_ca_trust_path": ca_file,
        "ansible_winrm_operation_timeout_sec": 60,
        "ansible_winrm_read_timeout_sec": 90,
    }


def pinned_binary(name: str) -> str:
    """An ansible-core command (ansible-playbook, ansible-galaxy): the pinned one next to our
    Python, else the first on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise UserError(f"{name} is not installed; run `make setup` (ansible-core is pinned)")
    return found


class AnsibleHook:
    def __init__(self) -> None:
        self._cancelled = threading.Event()

    @staticmethod
    def playbook_binary() -> str:
        return pinned_binary("ansible-playbook")

    def syntax_check(self, playbook: Path) -> None:
        import subprocess

        with unprivileged.workspace("golden-ansible-") as space:
            unprivileged.require_reachable([playbook, playbook.parent], space.who, "ansible-playbook")
            done = subprocess.run(
                [
                    *space.who.prefix(),
                    self.playbook_binary(),
                    "--syntax-check",
                    "-i",
                    "localhost,",
                    str(playbook),
                ],
                cwd=playbook.parent,
                capture_output=True,
                text=True,
                env=space.env(self._settings(playbook, space)),
                check=False,
            )
        if done.returncode != 0:
            raise UserError(
                f"ansible-playbook --syntax-check {playbook.name}: {(done.stderr or done.stdout).strip()}"
            )

    @staticmethod
    def _settings(playbook: Path, space: unprivileged.Workspace) -> dict[str, str]:
        from golden_image.hooks.galaxy import search_paths

        roles, collections = search_paths(playbook)  # vendored, then the installed requirements.yml
        home = space.home / ".ansible"
        return {
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_ROLES_PATH": roles,
            "ANSIBLE_COLLECTIONS_PATH": collections,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_DISPLAY_ARGS_TO_STDOUT": "False",
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=30s",
            "ANSIBLE_HOME": str(home),
            "ANSIBLE_LOCAL_TEMP": str(space.tmp / "ansible-local"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(home / "cp"),
            "ANSIBLE_ASYNC_DIR": str(home / "async"),
            "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR": str(home / "pc"),
            # ansible-playbook's own interpreter: the pinned one next to us
            "PATH": f"{Path(AnsibleHook.playbook_binary()).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def run_playbook(
        self,
        target: Target,
        playbook: Path,
        extra_vars: dict[str, Any],
        *,
        secrets: dict[str, Any] | None = None,
        on_line: Callable[[str], None] | None = None,
        login: WinrmLogin | None = None,
    ) -> AnsibleSummary:
        """Apply ``playbook`` to the instance; raise :class:`AnsibleError` with the failed task.

        ``extra_vars`` and ``secrets`` are data (never templated); ``secrets``' values never
        appear in what this hook emits or returns. A WinRM target (``login``) is reached with
        Ansible's ``winrm`` connection (pywinrm): Basic auth over HTTPS, the pinned certificate
        as the only CA (``ansible_winrm_ca_trust_path``), the password in the private vars file
        (``!unsafe``: a password with ``{{`` in it stays a password) and masked like a secret."""
        import ansible_runner  # heavy; never at DAG parse time

        secrets = secrets or {}
        connection = sorted(k for k in [*extra_vars, *secrets] if CONNECTION_VARS.match(str(k)))
        if connection:
            raise AnsibleError(
                f"{playbook.name}: refusing connection variables {connection} from the spec", AnsibleSummary()
            )
        if target.communicator == "winrm" and login is None:
            raise AnsibleError(f"{playbook.name}: a WinRM target needs its login", AnsibleSummary())
        redact = Redactor([str(v) for v in secrets.values()] + ([login.password] if login else []))
        emit_line = on_line or (lambda text: log.info("%s", text))
        summary = AnsibleSummary()
        tail: list[str] = []

        def on_event(event: dict[str, Any]) -> bool:
            text = redact((event.get("stdout") or "").rstrip())
            if text:
                for line in text.splitlines():
                    emit_line(line)
                tail[:] = [*tail, *text.splitlines()][-20:]
            summary.record(event, redact)
            return False  # the summary keeps what we need; no event files on disk

        binary = self.playbook_binary()
        with unprivileged.workspace("golden-ansible-") as space:
            unprivileged.require_reachable(
                [playbook, playbook.parent, Path(binary)], space.who, "ansible-playbook"
            )
            reach: dict[str, Any] = {
                "ansible_host": target.host,
                "ansible_port": target.port,
                "ansible_user": target.user,
            }
            connection_secrets: dict[str, str] = {}
            if login is not None:
                pinned = space.write("winrm-ca.pem", Path(login.ca_file).read_text(encoding="ascii"))
                reach.update(winrm_connection(str(pinned)))
                connection_secrets["ansible_password"] = login.password
            else:
                reach.update(
                    {
                        "ansible_become": target.escalates,  # cloud images log in as admin/ec2-user
                        "ansible_ssh_private_key_file": space.copy_key(target.key_file),
                        "ansible_ssh_common_args": " ".join(SSH_OPTIONS),
                        "ansible_python_interpreter": "/usr/bin/python3",
                    }
                )
            inventory = {"all": {"hosts": {target.instance_id: reach}}}
            inventory_file = space.write("inventory.json", json.dumps(inventory))
            vars_file = space.write("vars.yml", unsafe_yaml({**extra_vars, **secrets, **connection_secrets}))
            private = space.mkdir("runner")
            for sub in ("runner/artifacts", "runner/artifacts/run", "runner/artifacts/run/job_events"):
                space.mkdir(sub)  # the event callback (in ansible-playbook) writes there
            space.mkdir("runner/env")  # no artifacts/stdout copy: a careless task may print a secret
            space.write("runner/env/settings", "suppress_output_file: true\n")
            env = space.env(self._settings(playbook, space))
            wrapper = space.wrapper("ansible-playbook", binary, env, RUNNER_ENV)
            runner = ansible_runner.run(
                private_data_dir=str(private),
                ident="run",
                binary=wrapper,
                cmdline=f"-e {shlex.quote('@' + str(vars_file))} {shlex.quote(str(playbook))}",
                project_dir=str(playbook.parent),
                inventory=str(inventory_file),
                envvars=env,
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
