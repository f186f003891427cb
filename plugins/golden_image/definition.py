"""The definition digest: everything that defines a family's image, hashed part by part.

A merged change to a family must rebuild it (GitOps), so the rebuild decision compares the
published image's digest with the current one and names what changed. The parts:

* ``spec.<field>``: each field of the resolved family spec that shapes the image (not the ones
  that only say when or where it runs: ``IGNORED_SPEC_FIELDS``);
* the Packer template and every file it names under ``${path.root}`` (its scripts);
* the playbook, the files it imports, ``requirements.yml`` (its collections), ``group_vars`` /
  ``host_vars`` beside it and every role it uses, with the roles' dependencies, file by file;
* the validation suites (Testinfra files and, when hygiene is on, the built-in hygiene suite).

Files are read as bytes and never executed or templated; references that leave ``include/``
or do not exist are left out (the spec's own checks report those).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from golden_image.errors import UserError
from golden_image.spec import FamilySpec
from golden_image.yamlload import load_yaml

IGNORED_SPEC_FIELDS: frozenset[tuple[str, ...]] = frozenset(
    {
        ("schedule",),
        ("retention",),
        ("owners",),
        ("description",),
        ("patch_policy",),
        ("distribution",),
        ("validation", "vulnerabilities"),  # the gate's policy judges an image, it does not shape it
        ("provides",),  # what the image offers applications (golden coverage) describes it
        *(
            ("aws", key)
            for key in (
                "aws_conn_id",
                "address",
                "subnet_id",
                "security_group_ids",
                "instance_profile",
                "instance_types",
                "organizations",
                "organizational_units",
                "deferrable",
                "poll_interval_s",
                "wait_timeout_minutes",
            )
        ),
    }
)
"""When to rebuild, how long to keep, where to share, how to reach and wait for the builder, and
the gate's policy, and ``provides`` (what ``golden coverage`` matches applications against):
changing them rebuilds nothing (a new account, organisation or region is
served by the next share). What is left of ``aws`` (``kms_keys``, ``ssh_user``) shapes the image."""
HYGIENE_SUITE = Path(__file__).resolve().parent / "validation" / "test_hygiene.py"
WINDOWS_HYGIENE_SUITE = Path(__file__).resolve().parent / "validation" / "Hygiene.Tests.ps1"
"""The built-in suites, by os (the Windows one is a Pester suite run over WinRM)."""
PATH_ROOT_REF = re.compile(r"\$\{path\.root\}/([^\"'\s}]+)")
ROLE_KEYS = ("include_role", "import_role", "ansible.builtin.include_role", "ansible.builtin.import_role")
FILE_KEYS = (
    "import_playbook",
    "ansible.builtin.import_playbook",
    "include_tasks",
    "import_tasks",
    "ansible.builtin.include_tasks",
    "ansible.builtin.import_tasks",
    "include_vars",
    "ansible.builtin.include_vars",
    "vars_files",
)
MAX_FILES = 5000
"""A definition larger than this is refused rather than hashed (a symlink loop, a huge tree)."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def definition_parts(spec: FamilySpec, include: Path) -> dict[str, str]:
    """Part name -> sha256 (file parts are named by their path under ``include``)."""
    parts: dict[str, str] = {}
    data = spec.model_dump(mode="json")
    for ignored in IGNORED_SPEC_FIELDS:
        *parents, last = ignored
        holder: Any = data
        for key in parents:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict):
            holder.pop(last, None)
    for field, value in sorted(data.items()):
        parts[f"spec.{field}"] = _sha(json.dumps(value, sort_keys=True).encode())
    files: set[Path] = set()
    template = include / spec.packer.template
    files.add(template)
    if template.is_file():
        text = template.read_text(errors="replace")
        files.update(template.parent / ref for ref in PATH_ROOT_REF.findall(text))
    root = include.resolve()
    if spec.ansible is not None:
        files.update(_ansible_files(include / spec.ansible.playbook, root))
    files.update(include / suite for suite in spec.validation.testinfra)
    files.update(include / suite for suite in spec.validation.pester)
    for file in sorted(_expand(files, root)):
        parts[str(file.relative_to(root))] = _sha(file.read_bytes())
    if spec.validation.hygiene.enabled:
        builtin = WINDOWS_HYGIENE_SUITE if spec.os == "windows" else HYGIENE_SUITE
        if builtin.is_file():
            parts[f"builtin:validation/{builtin.name}"] = _sha(builtin.read_bytes())
    return parts


def template_scripts(spec: FamilySpec, include: Path) -> list[Path]:
    """The files the family's Packer template names under ``${path.root}`` (its scripts) that
    exist inside ``include``."""
    template = include / spec.packer.template
    if not template.is_file():
        return []
    text = template.read_text(errors="replace")
    found = {template.parent / ref for ref in PATH_ROOT_REF.findall(text)}
    return sorted(_expand(found, include.resolve()))


def definition_digest(spec: FamilySpec, include: Path) -> dict[str, Any]:
    """``{"sha256": <digest of all parts>, "parts": {...}}``, as recorded in the manifest."""
    parts = definition_parts(spec, include)
    return {"sha256": _sha(json.dumps(parts, sort_keys=True).encode()), "parts": parts}


def changed_parts(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str] | None:
    """What differs between a recorded digest and the current one (added, removed or changed
    parts, sorted); ``None`` when nothing was recorded (an image from before digests)."""
    if not recorded or not isinstance(recorded.get("parts"), dict):
        return None
    if recorded.get("sha256") == current["sha256"]:
        return []
    old, new = recorded["parts"], current["parts"]
    return sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))


def _expand(paths: set[Path], root: Path) -> Iterator[Path]:
    """Existing regular files (directories walked, symlinked ones too) that resolve inside
    ``root``; caches (``__pycache__``, ``*.pyc``) left out."""
    seen = 0
    for path in paths:
        for candidate in _walk(path):
            if candidate.suffix == ".pyc" or "__pycache__" in candidate.parts:
                continue
            try:
                resolved = candidate.resolve()
            except (OSError, RuntimeError):
                continue
            if resolved.is_file() and resolved.is_relative_to(root):
                seen += 1
                if seen > MAX_FILES:
                    raise UserError(
                        f"the definition under {root} names more than {MAX_FILES} files (from {path}); "
                        "a symlink loop or a huge tree? Point the family at smaller directories"
                    )
                yield resolved


def _walk(path: Path) -> Iterator[Path]:
    """``path`` itself, or every file under it following symlinked directories (each real
    directory once, so a link loop ends)."""
    if not path.is_dir():
        yield path
        return
    visited: set[Path] = set()
    for top, dirs, names in os.walk(path, followlinks=True):
        real = Path(top).resolve()
        if real in visited:
            dirs[:] = []
            continue
        visited.add(real)
        dirs.sort()
        for name in sorted(names):
            yield Path(top) / name


def _ansible_files(playbook: Path, root: Path) -> set[Path]:
    """The playbook and what it pulls in: imported files, requirements, vars, ``files`` and
    ``templates`` beside it, vendored collections, and the roles it uses (with their
    dependencies). Only YAML inside ``root`` is read."""
    here = playbook.parent
    files = {
        playbook,
        *(here / name for name in ("requirements.yml", "group_vars", "host_vars", "files", "templates")),
        here / "collections",
    }
    pending = [playbook]
    roles_done: set[str] = set()
    while pending and len(files) < MAX_FILES:
        current = pending.pop()
        for kind, name in _references(_load_yaml(current, root)):
            if kind == "file":
                target = (current.parent / name) if not Path(name).is_absolute() else Path(name)
                if target not in files:
                    files.add(target)
                    if target.suffix in (".yml", ".yaml"):
                        pending.append(target)
            elif name not in roles_done:
                roles_done.add(name)
                role = here / "roles" / name  # a collection's role (ns.coll.role) is under collections/
                files.add(role)
                pending.extend(sorted(role.glob("*/main.y*ml")))
    return files


def _load_yaml(path: Path, root: Path) -> Any:
    """A YAML file inside ``root``, read by the family loader's strict reader (bounded size,
    depth and nodes: an alias bomb is refused, not expanded), or None."""
    try:
        if not path.is_file() or not path.resolve().is_relative_to(root):
            return None
        return load_yaml(path.read_text(errors="replace"), str(path)).data
    except (OSError, ValueError):
        return None  # the playbook's own syntax check reports it; the file itself is still hashed


def _references(node: Any, depth: int = 0) -> Iterator[tuple[str, str]]:
    """("role", name) and ("file", relative path) references anywhere in a YAML document."""
    if depth > 64:
        return
    if isinstance(node, list):
        for item in node:
            yield from _references(item, depth + 1)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("roles", "dependencies") and isinstance(value, list):
            for role in value:
                name = role if isinstance(role, str) else (role or {}).get("role") or (role or {}).get("name")
                if isinstance(name, str) and _plain(name):
                    yield ("role", name)
        elif key in ROLE_KEYS and isinstance(value, dict) and isinstance(value.get("name"), str):
            if _plain(value["name"]):
                yield ("role", value["name"])
        elif key in FILE_KEYS:
            for item in value if isinstance(value, list) else [value]:
                ref = item.get("file") if isinstance(item, dict) else item
                if isinstance(ref, str) and "{{" not in ref and "{%" not in ref:
                    yield ("file", ref)
        yield from _references(value, depth + 1)


def _plain(role: str) -> bool:
    """A role name that can be a directory of the project's roles/ (``webserver``, a vendored
    ``acme.ntp``), not a path or a template."""
    return bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", role)) and ".." not in role
