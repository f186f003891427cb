"""Where things live: the project's include/ tree and the local image store."""

from __future__ import annotations

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
