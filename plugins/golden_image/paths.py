"""Where things live (the project's include/ tree, the local image store), a file's digest and a
lock file."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def project_dir() -> Path:
    """The repository root (override with GOLDEN_PROJECT_DIR, e.g. in a deployed image)."""
    env = os.environ.get("GOLDEN_PROJECT_DIR")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[2]


def include_dir() -> Path:
    return project_dir() / "include"


def images_dir() -> Path:
    return Path(os.environ.get("GOLDEN_IMAGES_DIR") or include_dir() / "images")


def applications_dir() -> Path:
    """``include/applications``: what the images are for (``golden coverage``)."""
    return Path(os.environ.get("GOLDEN_APPLICATIONS_DIR") or include_dir() / "applications")


def golden_home() -> Path:
    """Root of the local image store: catalog, regions, instances, sources (GOLDEN_HOME)."""
    return Path(os.environ.get("GOLDEN_HOME") or "/var/lib/golden-image")


def ansible_cache_dir() -> Path:
    """Where requirements.yml is installed: one directory per requirements digest."""
    return golden_home() / "ansible"


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created with its directory): one process at a time,
    across Airflow tasks and workers of one host."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


SHARED_TMP = Path("/tmp")
"""Where the tools' workspaces go when the unprivileged user cannot reach TMPDIR (the local
janitor sweeps it besides TMPDIR)."""
IN_USE = ".golden-in-use"
"""The file a live tool workspace holds a lock on (the janitor leaves a held one alone)."""
STAGING_PREFIX = ".golden-staging-"
"""A tool workspace's name until it is marked in use (no janitor prefix starts so)."""


@contextlib.contextmanager
def held_workspace(prefix: str, base: Path | None = None) -> Iterator[Path]:
    """A new temporary directory for one tool run, marked as in use (an ``flock`` on its
    :data:`IN_USE` file, released by the kernel even if this process is SIGKILLed) until it
    is removed at the end: a janitor with any TTL, even 0, never deletes it from under the run."""
    # made under a name the janitor does not sweep, marked, then given its name: a janitor never
    # sees it unmarked (a TTL of 0 would count a new, unmarked directory as old)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=base))
    root = staging
    try:
        with (staging / IN_USE).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            root = staging.with_name(prefix + staging.name.removeprefix(STAGING_PREFIX))
            os.mkdir(root, 0o700)  # claims the name (mkdtemp's suffix; refused if taken) ...
            os.replace(staging, root)  # ... then the marked directory takes its place
            yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)


def workspace_in_use(directory: Path) -> bool:
    """Whether a live process holds ``directory``'s :data:`IN_USE` lock."""
    try:
        fd = os.open(directory / IN_USE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # no marker (an older run's, or not ours): judged by age alone
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the lock this took
    return False
