"""Run the build tools (Packer, ansible-playbook) unprivileged on the worker.

A playbook or template is code that runs on the worker as well as on the instance (a
``lookup('pipe', ...)``, a ``local-exec``): it must never run as root there. When the worker is
root, the tools run as the system user :data:`RUNNER_USER` (created by ``scripts/setup.sh``;
``GOLDEN_RUNNER_USER`` names another), through ``setpriv`` with no supplementary groups and
``no_new_privs`` (so not even a setuid ``sudo`` lifts it again). When the worker is not root
(the docker-compose stack's ``airflow`` user) the tools run as that user, as before.

Root and no such user is refused with what to do; ``GOLDEN_ALLOW_ROOT_TOOLS=1`` is the explicit,
logged way to run them as root anyway (a throwaway machine without useradd).

Every run gets a :class:`Workspace`: a private directory owned by that user (mode 0700) with its
own HOME and TMPDIR, into which the instance's SSH key is copied for the run only; the tools get a
small environment (:func:`Workspace.env`), never the worker's, which holds Airflow's own secrets
(database URL, fernet key, ``AIRFLOW_CONN_*``). The directory is removed afterwards.
"""

from __future__ import annotations

import logging
import os
import pwd
import shlex
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from golden_image import paths
from golden_image.errors import UserError

log = logging.getLogger(__name__)

RUNNER_USER = "golden-runner"
USER_ENV = "GOLDEN_RUNNER_USER"
ALLOW_ROOT_ENV = "GOLDEN_ALLOW_ROOT_TOOLS"
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM")
PROXY_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


@dataclass(frozen=True)
class RunAs:
    """Who the tools run as; ``switch`` when that is not the worker's own user."""

    uid: int
    gid: int
    name: str
    switch: bool

    def prefix(self) -> list[str]:
        """The command prefix that becomes this user (empty when the worker already is)."""
        if not self.switch:
            return []
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        return [
            setpriv,
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--no-new-privs",
            "--",
        ]


def run_as() -> RunAs:
    """The user the tools run as on this worker (see the module docstring); UserError if none."""
    euid = os.geteuid()
    if euid != 0:
        return RunAs(euid, os.getegid(), _name(euid), switch=False)
    name = os.environ.get(USER_ENV) or RUNNER_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if os.environ.get(ALLOW_ROOT_ENV) == "1":
            log.warning(
                "running Packer and ansible-playbook AS ROOT on the worker (%s=1): there is no user '%s'; "
                "a playbook's lookup or a template's local command acts as root here",
                ALLOW_ROOT_ENV,
                name,
            )
            return RunAs(0, 0, "root", switch=False)
        raise UserError(
            f"the worker runs as root and there is no user '{name}' to run Packer and ansible-playbook as: "
            f"run scripts/setup.sh (it creates it) or `useradd --system --user-group --no-create-home "
            f"--shell /usr/sbin/nologin {name}`; {ALLOW_ROOT_ENV}=1 runs them as root instead (not "
            "recommended: the playbook's lookups would run as root on the worker)"
        ) from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise UserError(f"{USER_ENV}={name} is root (uid/gid 0); name an unprivileged user")
    return RunAs(entry.pw_uid, entry.pw_gid, name, switch=True)


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def reachable(path: Path, who: RunAs, *, write: bool = False) -> bool:
    """Whether ``who`` can reach ``path`` through its directories and read (or write) it."""
    if not who.switch:
        return True
    path = path.resolve()

    def allows(info: os.stat_result, bits: tuple[int, int, int]) -> bool:
        if info.st_uid == who.uid:
            return bool(info.st_mode & bits[0])
        if info.st_gid == who.gid:
            return bool(info.st_mode & bits[1])
        return bool(info.st_mode & bits[2])

    search = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
    for parent in reversed(path.parents):
        if not allows(parent.stat(), search):
            return False
    wanted = (
        (stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH) if write else (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)
    )
    info = path.stat()
    if not allows(info, wanted):
        return False
    return not stat.S_ISDIR(info.st_mode) or allows(info, search)


def require_reachable(paths: list[Path], who: RunAs, tool: str) -> None:
    for path in paths:
        if not reachable(path, who):
            raise UserError(
                f"{tool} runs as '{who.name}' (uid {who.uid}), who cannot read {path}: make it and its "
                "parent directories readable by others (chmod o+rX), or set "
                f"{USER_ENV} to a user who can read the project"
            )


@dataclass(frozen=True)
class Workspace:
    """A private directory of the run's user: HOME, TMPDIR, the key copy, the tools' input files."""

    root: Path
    who: RunAs

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def chown(self, path: Path) -> None:
        if self.who.switch:
            os.chown(path, self.who.uid, self.who.gid)

    def mkdir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.chown(path)
        return path

    def write(self, name: str, text: str, mode: int = 0o600) -> Path:
        """A file only the run's user (and root) can read."""
        path = self.root / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        self.chown(path)
        return path

    def copy_key(self, key_file: str) -> str:
        """The instance's private key, readable by the run's user only, for this run only."""
        return str(self.write("id_instance", Path(key_file).read_text(encoding="utf-8")))

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The tools' whole environment: a few of the worker's (PATH, locale, proxies) and a
        private HOME/TMPDIR; never the worker's own secrets."""
        passed = {k: os.environ[k] for k in (*PASSED_ENV, *PROXY_ENV) if k in os.environ}
        return {
            **passed,
            "PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "USER": self.who.name,
            "LOGNAME": self.who.name,
            "TMPDIR": str(self.tmp),
            "TMP": str(self.tmp),
            "TEMP": str(self.tmp),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            **(extra or {}),
        }

    def wrapper(self, name: str, binary: str, env: dict[str, str], inherit: tuple[str, ...]) -> str:
        """An executable that runs ``binary`` as the run's user with exactly ``env`` plus the
        variables named in ``inherit`` taken from its caller (ansible-runner's callback settings)."""
        kept = " ".join(f'${{{k}+"{k}=${k}"}}' for k in inherit)
        assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items()))
        command = " ".join(shlex.quote(part) for part in [*self.who.prefix(), binary])
        script = f'#!/bin/sh\nexec /usr/bin/env -i {assignments} {kept} {command} "$@"\n'
        path = self.root / name
        path.write_text(script, encoding="utf-8")
        path.chmod(0o700)  # run by the worker (root), which then drops to the run's user
        return str(path)


def _base_dir(who: RunAs) -> Path:
    """The temp directory, if the run's user can reach into it, else /tmp (sticky, for everyone)."""
    base = Path(tempfile.gettempdir())
    if who.switch and not reachable(base, who, write=False):
        log.debug("%s cannot reach %s; its workspace goes in /tmp", who.name, base)
        base = paths.SHARED_TMP
    return base


@contextmanager
def workspace(prefix: str) -> Iterator[Workspace]:
    """A fresh :class:`Workspace` for one tool run, removed afterwards."""
    who = run_as()
    with paths.held_workspace(prefix, _base_dir(who)) as root:
        space = Workspace(root, who)
        space.chown(root)
        for sub in (space.home, space.tmp):
            sub.mkdir(mode=0o700)
            space.chown(sub)
        yield space
