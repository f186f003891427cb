"""Where things live (the project's include/ tree, the local image store) and a file's digest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def project_dir() -> Path:
    """The repository root (override with GOLDEN_PROJECT_DIR, e.g. in a deployed image)."""
    env = os.environ.get("GOLDEN_PROJECT_DIR")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[2]


def include_dir() -> Path:
    return project_dir() / "include"


def images_dir() -> Path:
    return Path(os.environ.get("GOLDEN_IMAGES_DIR") or include_dir() / "images")


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
