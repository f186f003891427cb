"""Small, valid family specs for tests that need one without a YAML file, and test helpers."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from golden_image import paths
from golden_image.spec import FamilySpec


def family_spec(name: str, **fields: Any) -> FamilySpec:
    """A local-platform family with only the required fields, plus ``fields``."""
    data = {
        "schema_version": 1,
        "name": name,
        "description": "test family",
        "owners": ["tests@example.com"],
        "source": {"local": {}},
        **fields,
    }
    return FamilySpec.model_validate(data, context={"include_dir": paths.include_dir()})


def bind_unix_socket(sock: socket.socket, path: Path) -> None:
    """Bind ``sock`` at ``path`` however long the path is (AF_UNIX takes ~107 bytes): by a name
    relative to its directory."""
    here = os.getcwd()
    os.chdir(path.parent)
    try:
        sock.bind(path.name)
    finally:
        os.chdir(here)


def copy_include(directory: Path) -> Path:
    """A copy of the project's include/ tree under ``directory``, to change in a test."""
    import shutil

    copy = directory / "include"
    shutil.copytree(paths.include_dir(), copy)
    return copy


def family_in(include: Path, name: str) -> FamilySpec:
    """Family ``name`` from an include/ tree whose family files must all load."""
    from golden_image.spec import load_families

    found = load_families(include / "images", include)
    assert not found.errors, found.errors
    return found.families[name]


def images_with_change(directory: Path, file: str, old: str, new: str) -> Path:
    """A copy of the project's family files under ``directory`` with ``old`` replaced by ``new``
    in ``file`` (point GOLDEN_IMAGES_DIR at it)."""
    import shutil

    images = directory / "images"
    shutil.copytree(paths.images_dir(), images)
    changed = images / file
    assert old in changed.read_text(), f"{old!r} is not in {file}"
    changed.write_text(changed.read_text().replace(old, new))
    return images
