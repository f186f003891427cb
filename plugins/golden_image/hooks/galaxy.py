"""Roles and collections the Ansible way: vendored directories, ``requirements.yml``, ansible-galaxy.

Next to the playbooks (``include/ansible/``):

* ``roles/<name>/`` and ``collections/ansible_collections/<namespace>/<name>/``: vendored, reviewed
  in git, always first on Ansible's search paths (Ansible itself searches a playbook's adjacent
  ``roles/`` and ``collections/`` first; a vendored copy is how a team overrides a requirement);
* ``requirements.yml`` (ansible-galaxy's format: ``roles:`` and ``collections:``): installed by the
  pinned ``ansible-galaxy`` into ``$GOLDEN_HOME/ansible/<key>/{roles,collections}``, where the key
  is a sha256 of the file, the source setting, ansible-core's version and (directory source) the
  tarballs it resolves to. Reused while they are unchanged; installed into a partial directory that
  is renamed into place, under a lock per key, so concurrent tasks install once.

Where Galaxy names come from is ``GOLDEN_ANSIBLE_SOURCE``:

* unset or ``galaxy``: ansible-galaxy's own default (its config, normally galaxy.ansible.com);
* ``galaxy:https://galaxy.example.com/``: that Galaxy (or Automation Hub / Pulp) server;
* ``dir:/path``: a directory of tarballs, no network: a collection ``ns.name`` version ``V`` is
  ``ns-name-V.tar.gz`` (what ``ansible-galaxy collection build`` and ``collection download``
  write), a role ``ns.role`` version ``V`` is ``ns.role-V.tar.gz`` (a tar of the role directory);
  without a pinned version the highest one there. Dependencies are not fetched: list them all.

Entries that are not Galaxy names (``src: git+https://...``, URLs, paths, ``type: git|url|file``)
are passed to ansible-galaxy unchanged with every source.

:func:`check_playbook` is the static half of ``golden validate --deep``: every role and collection
the playbook (and the roles it uses) names must be vendored, installed, built in, or required.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from golden_image import paths
from golden_image.errors import UserError
from golden_image.paths import sha256_file

log = logging.getLogger(__name__)
Emit = Callable[[str], None]

REQUIREMENTS = "requirements.yml"
SOURCE_ENV = "GOLDEN_ANSIBLE_SOURCE"
BUILTIN_COLLECTIONS = ("ansible.builtin", "ansible.legacy")
_GALAXY_NAME = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")  # ns.name: a role or a collection
_FQCN = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_.]*$")
_INCLUDE_ROLE = {
    f"{prefix}{verb}"
    for prefix in ("", "ansible.builtin.", "ansible.legacy.")
    for verb in ("include_role", "import_role")
}
_TASK_LISTS = ("tasks", "pre_tasks", "post_tasks", "handlers")
_BLOCK_LISTS = ("block", "rescue", "always")
_ARCHIVE = re.compile(r"\.(tar\.gz|tgz|tar|zip)$")


# -- the source setting ------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    kind: str = "galaxy"  # galaxy | dir
    location: str = ""  # server URL (galaxy, "" = ansible-galaxy's default) or directory (dir)

    @classmethod
    def parse(cls, text: str | None) -> Source:
        text = (text or "").strip()
        if text in ("", "galaxy"):
            return cls()
        kind, sep, location = text.partition(":")
        if sep and kind == "galaxy" and location.startswith(("http://", "https://")):
            return cls("galaxy", location)
        if sep and kind == "dir" and location:
            folder = Path(location)
            folder = folder if folder.is_absolute() else paths.project_dir() / folder
            return cls("dir", str(folder))
        raise UserError(
            f"{SOURCE_ENV}={text!r}: expected 'galaxy', 'galaxy:https://server/' or 'dir:/path/to/tarballs' "
            "(git repositories need no setting: `src: git+https://...` in requirements.yml)"
        )

    @classmethod
    def from_env(cls) -> Source:
        return cls.parse(os.environ.get(SOURCE_ENV))

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}" if self.location else self.kind


# -- requirements.yml --------------------------------------------------------------------------
@dataclass(frozen=True)
class Requirements:
    file: Path
    text: str = ""
    roles: tuple[dict[str, Any], ...] = ()
    collections: tuple[dict[str, Any], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.roles and not self.collections

    def role_names(self) -> set[str]:
        return {role_name(entry) for entry in self.roles}

    def collection_names(self) -> set[str]:
        return {name for entry in self.collections if (name := collection_name(entry))}


def _role_entry(item: Any, where: str) -> dict[str, Any]:
    if isinstance(item, str):  # "src[,version[,name]]"
        parts = [p.strip() for p in item.split(",")]
        entry = {"src": parts[0]}
        if len(parts) > 1 and parts[1]:
            entry["version"] = parts[1]
        if len(parts) > 2 and parts[2]:
            entry["name"] = parts[2]
        return entry
    if isinstance(item, dict) and (item.get("src") or item.get("name")):
        return {str(k): v for k, v in item.items()}
    raise UserError(f"{where}: a role entry needs `src` or `name`, got {item!r}")


def _collection_entry(item: Any, where: str) -> dict[str, Any]:
    if isinstance(item, str):
        return {"name": item}
    if isinstance(item, dict) and item.get("name"):
        return {str(k): v for k, v in item.items()}
    raise UserError(f"{where}: a collection entry needs `name`, got {item!r}")


def load_requirements(ansible_dir: Path) -> Requirements:
    """``<ansible_dir>/requirements.yml``; a missing or empty file requires nothing."""
    path = ansible_dir / REQUIREMENTS
    if not path.is_file():
        return Requirements(path)
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not YAML: {exc}") from exc
    if data is None:
        return Requirements(path, text)
    if isinstance(data, list):  # the old roles-only format
        data = {"roles": data}
    if not isinstance(data, dict) or set(data) - {"roles", "collections"}:
        raise UserError(f"{path}: expected `roles:` and/or `collections:` lists (ansible-galaxy's format)")
    roles = data.get("roles") or []
    collections = data.get("collections") or []
    if not isinstance(roles, list) or not isinstance(collections, list):
        raise UserError(f"{path}: `roles` and `collections` must be lists")
    return Requirements(
        path,
        text,
        tuple(_role_entry(r, f"{path}: roles") for r in roles),
        tuple(_collection_entry(c, f"{path}: collections") for c in collections),
    )


def _is_galaxy_role(entry: dict[str, Any]) -> bool:
    src = str(entry.get("src") or entry.get("name") or "")
    return entry.get("scm") is None and bool(_GALAXY_NAME.match(src))


def role_name(entry: dict[str, Any]) -> str:
    """The directory ansible-galaxy installs a role entry as (its ``repo_url_to_role_name``)."""
    if entry.get("name"):
        return str(entry["name"])
    src = str(entry["src"])
    if _is_galaxy_role(entry):
        return src
    tail = src.rstrip("/").split("/")[-1].split(",")[0]
    tail = tail.removesuffix(".git")
    return _ARCHIVE.sub("", tail)


def _is_galaxy_collection(entry: dict[str, Any]) -> bool:
    kind = entry.get("type", "galaxy")
    return kind == "galaxy" and bool(_GALAXY_NAME.match(str(entry["name"])))


def collection_name(entry: dict[str, Any]) -> str | None:
    """``ns.name`` of a collection entry, when it can be told without installing it."""
    name = str(entry["name"])
    if _is_galaxy_collection(entry):
        return name
    tail = _ARCHIVE.sub("", name.rstrip("/").split("/")[-1].split(",")[0].removesuffix(".git"))
    if _GALAXY_NAME.match(tail):  # a git repository named ns.name
        return tail
    found = re.match(r"^([a-z0-9_]+)-([a-z0-9_]+)-\d", tail)  # ns-name-1.2.3(.tar.gz)
    return f"{found[1]}.{found[2]}" if found else None


# -- the directory source ----------------------------------------------------------------------
def _version_key(text: str) -> tuple[Any, ...]:
    from packaging.version import InvalidVersion, Version  # ansible-core depends on packaging

    try:
        return (1, Version(text.lstrip("v")))
    except InvalidVersion:
        return (0, text)


def _pick(folder: Path, stem: str, sep: str, version: Any, what: str, entry: Any) -> Path:
    """``<folder>/<stem><sep><version>.tar.gz``; no or a range version: the highest there."""
    if version is not None and re.match(r"^v?\d[\w.+-]*$", str(version)):
        path = folder / f"{stem}{sep}{version}.tar.gz"
        if path.is_file():
            return path
        candidates = []
    else:
        candidates = sorted(folder.glob(f"{glob_escape(stem)}{sep}*.tar.gz"))
        if version not in (None, "", "*"):
            from packaging.specifiers import InvalidSpecifier, SpecifierSet

            try:
                wanted = SpecifierSet(str(version))
            except InvalidSpecifier as exc:
                raise UserError(f"{what} {entry}: version {version!r} is not a version or a range") from exc
            candidates = [
                c for c in candidates if wanted.contains(_version_of(c, stem, sep), prereleases=True)
            ]
        if candidates:
            return max(candidates, key=lambda c: _version_key(_version_of(c, stem, sep)))
        unversioned = folder / f"{stem}.tar.gz"
        if version in (None, "", "*") and unversioned.is_file():
            return unversioned
    present = sorted(p.name for p in folder.glob("*.tar.gz")) if folder.is_dir() else None
    wanted_name = f"{stem}{sep}{version if version not in (None, '') else '<version>'}.tar.gz"
    raise UserError(
        f"{what} {entry}: {folder}/{wanted_name} not found in the directory source "
        f"({SOURCE_ENV}=dir:{folder}); "
        + (f"it holds: {', '.join(present) or 'no tarballs'}" if present is not None else "no such directory")
    )


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _version_of(path: Path, stem: str, sep: str) -> str:
    return path.name.removesuffix(".tar.gz")[len(stem) + len(sep) :]


def resolve(requirements: Requirements, source: Source) -> tuple[dict[str, Any], list[Path]]:
    """The requirements document to hand ansible-galaxy, and the local tarballs it names."""
    if source.kind != "dir":
        return {"roles": list(requirements.roles), "collections": list(requirements.collections)}, []
    folder = Path(source.location)
    tarballs: list[Path] = []
    roles = []
    for entry in requirements.roles:
        if _is_galaxy_role(entry):
            src = str(entry.get("src") or entry["name"])
            tarball = _pick(folder, src, "-", entry.get("version"), "role", src)
            tarballs.append(tarball)
            version = _version_of(tarball, src, "-") if tarball.name != f"{src}.tar.gz" else ""
            entry = {
                "src": str(tarball),
                "name": role_name(entry),
                **({"version": version} if version else {}),
            }
        roles.append(entry)
    collections = []
    for entry in requirements.collections:
        if _is_galaxy_collection(entry):
            namespace, name = str(entry["name"]).split(".")
            tarball = _pick(
                folder, f"{namespace}-{name}", "-", entry.get("version"), "collection", entry["name"]
            )
            tarballs.append(tarball)
            entry = {"name": str(tarball), "type": "file"}
        collections.append(entry)
    return {"roles": roles, "collections": collections}, tarballs


def cache_key(requirements: Requirements, source: Source, tarballs: list[Path]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        core = version("ansible-core")
    except PackageNotFoundError:  # pragma: no cover - the venv pins it
        core = "?"
    digest = hashlib.sha256()
    for part in ("golden-ansible-requirements/1", requirements.text, str(source), core):
        digest.update(part.encode() + b"\0")
    for tarball in tarballs:
        digest.update(f"{tarball.name}:{sha256_file(tarball)}\0".encode())
    return digest.hexdigest()[:20]


# -- the cache ---------------------------------------------------------------------------------
@dataclass
class Installed:
    """One installed requirement set (or nothing to install)."""

    requirements: str
    source: str
    key: str | None = None
    path: Path | None = None
    installed: bool = False  # True: this call ran ansible-galaxy; False: reused or nothing required
    roles: dict[str, str] = field(default_factory=dict)  # name -> version installed
    collections: dict[str, str] = field(default_factory=dict)

    @property
    def roles_dir(self) -> Path | None:
        return self.path / "roles" if self.path else None

    @property
    def collections_dir(self) -> Path | None:
        return self.path / "collections" if self.path else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "requirements": self.requirements,
            "source": self.source,
            "key": self.key,
            "path": str(self.path) if self.path else None,
            "installed": self.installed,
            "roles": self.roles,
            "collections": self.collections,
        }


def _contents(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    roles = {}
    for role in sorted((path / "roles").glob("*/")):
        info = role / "meta" / ".galaxy_install_info"
        version = ""
        with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
            version = str((yaml.safe_load(info.read_text()) or {}).get("version") or "")
        roles[role.name] = version
    collections = {}
    for manifest in sorted((path / "collections" / "ansible_collections").glob("*/*/MANIFEST.json")):
        with contextlib.suppress(OSError, ValueError, KeyError):
            collections[f"{manifest.parent.parent.name}.{manifest.parent.name}"] = json.loads(
                manifest.read_text()
            )["collection_info"]["version"]
    return roles, collections


def _chmod_readable(top: Path) -> None:
    """Readable by every user (the controller may run unprivileged); mkdtemp made it 0700."""
    for folder, dirs, files in os.walk(top):
        os.chmod(folder, 0o755)  # noqa: S103 - roles and collections are code, not secrets
        for name in files:
            file = Path(folder) / name
            if not file.is_symlink():
                file.chmod(file.stat().st_mode | 0o444)
        dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]


class GalaxyHook:
    """Installs ``requirements.yml`` with the pinned ansible-galaxy into the cache."""

    @staticmethod
    def galaxy_binary() -> str:
        from golden_image.hooks.ansible import pinned_binary

        return pinned_binary("ansible-galaxy")

    def installed(
        self, ansible_dir: Path, *, source: Source | None = None, cache: Path | None = None
    ) -> Installed | None:
        """The cache entry for the current requirements if it is complete; never installs."""
        try:
            requirements = load_requirements(ansible_dir)
            if requirements.empty:
                return None
            source = source or Source.from_env()
            _, tarballs = resolve(requirements, source)
            key = cache_key(requirements, source, tarballs)
        except (UserError, OSError):
            return None
        final = (cache or paths.ansible_cache_dir()) / key
        if not final.is_dir():
            return None
        roles, collections = _contents(final)
        return Installed(str(requirements.file), str(source), key, final, False, roles, collections)

    def ensure(
        self,
        ansible_dir: Path,
        *,
        source: Source | None = None,
        cache: Path | None = None,
        emit: Emit | None = None,
    ) -> Installed:
        """Install the requirements next to the playbooks unless the cache has them already."""
        say = emit or (lambda text: log.info("%s", text))
        requirements = load_requirements(ansible_dir)
        source = source or Source.from_env()
        if requirements.empty:
            return Installed(str(requirements.file), str(source))
        document, tarballs = resolve(requirements, source)
        key = cache_key(requirements, source, tarballs)
        root = cache or paths.ansible_cache_dir()
        final = root / key
        if not final.is_dir():
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(
                    f"cannot create the Ansible requirements cache {root}: {exc}; set GOLDEN_HOME to a "
                    "directory this user can write"
                ) from exc
            with paths.exclusive_lock(root / f".{key}.lock"):
                if not final.is_dir():  # another task may have installed it while we waited
                    self._install(requirements, document, source, root, key, say)
                    roles, collections = _contents(final)
                    return Installed(
                        str(requirements.file), str(source), key, final, True, roles, collections
                    )
        roles, collections = _contents(final)
        say(f"ansible requirements: {requirements.file} already installed in {final}")
        return Installed(str(requirements.file), str(source), key, final, False, roles, collections)

    def _install(
        self,
        requirements: Requirements,
        document: dict[str, Any],
        source: Source,
        root: Path,
        key: str,
        say: Emit,
    ) -> None:
        for leftover in root.glob(f"{key}.partial-*"):  # a killed install of this key (we hold the lock)
            shutil.rmtree(leftover, ignore_errors=True)
        partial = Path(tempfile.mkdtemp(prefix=f"{key}.partial-", dir=root))
        try:
            resolved = partial / REQUIREMENTS
            resolved.write_text(yaml.safe_dump(document, sort_keys=False))
            (partial / "source").write_text(f"{source}\n")
            shutil.copyfile(requirements.file, partial / "requirements.original.yml")
            server = ["--server", source.location] if source.kind == "galaxy" and source.location else []
            offline = source.kind == "dir"
            env = {
                **os.environ,
                "ANSIBLE_ROLES_PATH": str(partial / "roles"),
                "ANSIBLE_COLLECTIONS_PATH": str(partial / "collections"),
                "ANSIBLE_GALAXY_CACHE_DIR": str(partial / ".galaxy-cache"),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
            }
            started = time.monotonic()
            say(f"ansible requirements: installing {requirements.file} from {source} into {root / key}")
            if document["roles"]:
                no_deps = ["--no-deps"] if offline else []  # a directory source: every role is listed
                self._galaxy(
                    ["role", "install", "-r", str(resolved), "-p", str(partial / "roles"), *server, *no_deps],
                    env,
                    requirements,
                    source,
                    say,
                )
            if document["collections"]:
                self._galaxy(
                    [
                        "collection",
                        "install",
                        "-r",
                        str(resolved),
                        "-p",
                        str(partial / "collections"),
                        *server,
                        *(["--offline"] if offline else []),
                    ],
                    env,
                    requirements,
                    source,
                    say,
                )
            shutil.rmtree(partial / ".galaxy-cache", ignore_errors=True)
            _chmod_readable(partial)
            partial.rename(root / key)
            say(f"ansible requirements: installed in {time.monotonic() - started:.1f} s")
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise

    def _galaxy(
        self, args: list[str], env: dict[str, str], requirements: Requirements, source: Source, say: Emit
    ) -> None:
        command = [self.galaxy_binary(), *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800, check=False)
        except subprocess.TimeoutExpired as exc:
            raise UserError(f"{requirements.file}: ansible-galaxy {args[0]} install timed out") from exc
        for line in (done.stdout or "").splitlines():
            say(line)
        if done.returncode != 0:
            said = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise UserError(
                f"{requirements.file}: ansible-galaxy {args[0]} install from {source} failed "
                f"(rc={done.returncode}): {said}"
            )


def search_paths(playbook: Path) -> tuple[str, str]:
    """ANSIBLE_ROLES_PATH and ANSIBLE_COLLECTIONS_PATH for a playbook: vendored first, then the cache."""
    ansible_dir = playbook.parent
    roles = [ansible_dir / "roles"]
    collections = [ansible_dir / "collections"]
    found = GalaxyHook().installed(ansible_dir)
    if found is not None and found.roles_dir and found.collections_dir:
        roles.append(found.roles_dir)
        collections.append(found.collections_dir)
    return os.pathsep.join(map(str, roles)), os.pathsep.join(map(str, collections))


# -- golden validate --deep: every role and collection is found ---------------------------------
@functools.lru_cache(maxsize=1)
def _builtin() -> tuple[Path | None, frozenset[str]]:
    """ansible-core's package directory and the names its runtime routing knows."""
    from importlib.metadata import PackageNotFoundError, distribution

    # not importlib.util.find_spec("ansible"): Airflow's plugin loader imports plugins/**/ansible.py
    # (our hook) as a top-level module named `ansible`
    try:
        package = Path(str(distribution("ansible-core").locate_file("ansible")))
    except PackageNotFoundError:
        return None, frozenset()
    if not (package / "modules").is_dir():
        return None, frozenset()
    routed: set[str] = set()
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
        routing = yaml.safe_load((package / "config" / "ansible_builtin_runtime.yml").read_text())
        for kind in ("modules", "action"):
            routed |= set((routing.get("plugin_routing") or {}).get(kind) or {})
    return package, frozenset(routed)


def _has_plugin(collection_dir: Path, parts: list[str], routed: set[str] | frozenset[str]) -> bool:
    sub, name = parts[:-1], parts[-1]
    for kind in ("modules", "action"):
        folder = collection_dir.joinpath("plugins", kind, *sub)
        if folder.is_dir() and any(p.stem == name for p in folder.iterdir()):
            return True
    return ".".join(parts) in routed


@functools.lru_cache(maxsize=64)
def _collection_routing(collection_dir: Path) -> frozenset[str]:
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
        runtime = yaml.safe_load((collection_dir / "meta" / "runtime.yml").read_text()) or {}
        routing = runtime.get("plugin_routing") or {}
        return frozenset(set(routing.get("modules") or {}) | set(routing.get("action") or {}))
    return frozenset()


@dataclass
class _Checker:
    ansible_dir: Path
    include: Path
    requirements: Requirements
    installed: Installed | None
    problems: list[str] = field(default_factory=list)
    walked: set[Path] = field(default_factory=set)

    def show(self, path: Path) -> str:
        """A file as the family file names it (relative to include/)."""
        with contextlib.suppress(ValueError):
            return str(path.resolve().relative_to(self.include.resolve()))
        return str(path)

    def where(self, path: Path, node: yaml.Node) -> str:
        return f"{self.show(path)}:{node.start_mark.line + 1}"

    def _not_found(self, what: str, vendored: Path) -> str:
        return (
            f"{what} is not vendored in {self.show_dir(vendored)} and not in "
            f"{self.show_dir(self.requirements.file)}"
        )

    def show_dir(self, path: Path) -> str:
        """A directory as a person finds it (relative to the repository)."""
        with contextlib.suppress(ValueError):
            return str(path.resolve().relative_to(self.include.parent.resolve()))
        return str(path)

    # where things are
    def role_dir(self, name: str) -> Path | None:
        for base in (self.ansible_dir / "roles", self.installed.roles_dir if self.installed else None):
            if base is not None and (base / name).is_dir():
                return base / name
        return None

    def collection_dir(self, name: str) -> Path | None:
        namespace, coll = name.split(".")
        bases = [self.ansible_dir / "collections"]
        if self.installed and self.installed.collections_dir:
            bases.append(self.installed.collections_dir)
        bases += [Path(p) for p in sys.path if p]  # collections installed with Python (the `ansible` package)
        for base in bases:
            found = base / "ansible_collections" / namespace / coll
            if found.is_dir():
                return found
        return None

    # what is checked
    def playbook(self, path: Path, node: yaml.Node | None = None) -> None:
        root = self.load(path)
        if not isinstance(root, yaml.SequenceNode):
            return
        for play in root.value:
            if not isinstance(play, yaml.MappingNode):
                continue
            items = {k.value: v for k, v in play.value if isinstance(k, yaml.ScalarNode)}
            for key in ("import_playbook", "ansible.builtin.import_playbook"):
                target = items.get(key)
                if isinstance(target, yaml.ScalarNode) and "{{" not in target.value:
                    nested = (path.parent / target.value).resolve()
                    if nested.is_file():
                        self.playbook(nested)
            search = self.collections_keyword(items.get("collections"), path)
            roles = items.get("roles")
            if isinstance(roles, yaml.SequenceNode):
                for entry in roles.value:
                    self.role_ref(entry, path, search, ("role", "name"))
            for section in _TASK_LISTS:
                self.tasks(items.get(section), path, search)

    def load(self, path: Path) -> yaml.Node | None:
        if path in self.walked:
            return None
        self.walked.add(path)
        try:
            return yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
        except (OSError, yaml.YAMLError) as exc:
            self.problems.append(f"{self.show(path)}: cannot read: {exc}")
            return None

    def collections_keyword(self, node: yaml.Node | None, path: Path) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            return ()
        names = []
        for item in node.value:
            if isinstance(item, yaml.ScalarNode) and _GALAXY_NAME.match(item.value):
                self.collection(
                    item.value, path, item, f"collection '{item.value}' (the `collections` keyword)"
                )
                names.append(item.value)
        return tuple(names)

    def tasks(self, node: yaml.Node | None, path: Path, search: tuple[str, ...]) -> None:
        if not isinstance(node, yaml.SequenceNode):
            return
        for task in node.value:
            if not isinstance(task, yaml.MappingNode):
                continue
            items = {k.value: (k, v) for k, v in task.value if isinstance(k, yaml.ScalarNode)}
            inner = search + self.collections_keyword(items.get("collections", (None, None))[1], path)
            for key, (key_node, value) in items.items():
                if key in _BLOCK_LISTS:
                    self.tasks(value, path, inner)
                elif key in _INCLUDE_ROLE:
                    self.role_ref(value, path, inner, ("name",), key_node)
                elif key in ("action", "local_action"):
                    module = (
                        value.value.split()[0] if isinstance(value, yaml.ScalarNode) and value.value else ""
                    )
                    if isinstance(value, yaml.MappingNode):
                        module = next((v.value for k, v in value.value if k.value == "module"), "")
                    if _FQCN.match(module):
                        self.module(module, path, key_node)
                elif key.startswith("with_") and _FQCN.match(key[5:]):
                    lookup = key[5:]
                    self.collection(".".join(lookup.split(".")[:2]), path, key_node, f"lookup '{lookup}'")
                elif _FQCN.match(key):
                    self.module(key, path, key_node)

    def role_ref(
        self,
        entry: yaml.Node,
        path: Path,
        search: tuple[str, ...],
        keys: tuple[str, ...],
        at: yaml.Node | None = None,
    ) -> None:
        name_node: yaml.Node | None = entry if isinstance(entry, yaml.ScalarNode) else None
        if isinstance(entry, yaml.MappingNode):
            name_node = next(
                (v for k, v in entry.value if isinstance(k, yaml.ScalarNode) and k.value in keys), None
            )
        if not isinstance(name_node, yaml.ScalarNode) or not name_node.value or "{{" in name_node.value:
            return
        self.role(name_node.value, path, at or name_node, search)

    def role(self, name: str, path: Path, node: yaml.Node, search: tuple[str, ...]) -> None:
        if "/" in name:  # a path to a role directory
            folder = (path.parent / name).resolve()
            if folder.is_dir():
                self.walk_role(folder)
            else:
                self.problems.append(f"{self.where(path, node)}: role '{name}': no such directory")
            return
        if name.count(".") >= 2:  # a role in a collection: ns.coll.role
            collection, role = ".".join(name.split(".")[:2]), name.split(".", 2)[2]
            found = self.collection(collection, path, node, f"role '{name}'")
            if found is not None and not (found / "roles" / role).is_dir():
                self.problems.append(
                    f"{self.where(path, node)}: role '{name}': collection {collection} "
                    f"({self.show_dir(found)}) has no role '{role}'"
                )
            return
        found_role = self.role_dir(name)
        if found_role is not None:
            self.walk_role(found_role)
            return
        if name in self.requirements.role_names():
            return  # required; installed at bake time (Ansible's syntax check needs it installed)
        for collection in search:  # a short name resolved through the `collections` keyword
            found = self.collection_dir(collection)
            if found is None or (found / "roles" / name).is_dir():
                return
        self.problems.append(
            f"{self.where(path, node)}: " + self._not_found(f"role '{name}'", self.ansible_dir / "roles")
        )

    def walk_role(self, folder: Path) -> None:
        for section in ("tasks", "handlers"):
            for file in sorted((folder / section).rglob("*.y*ml")) if (folder / section).is_dir() else []:
                root = self.load(file)
                self.tasks(root, file, ())
        meta = folder / "meta" / "main.yml"
        root = self.load(meta) if meta.is_file() else None
        if isinstance(root, yaml.MappingNode):
            items = {k.value: v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
            search = self.collections_keyword(items.get("collections"), meta)
            dependencies = items.get("dependencies")
            if isinstance(dependencies, yaml.SequenceNode):
                for entry in dependencies.value:
                    self.role_ref(entry, meta, search, ("role", "name", "src"))

    def module(self, fqcn: str, path: Path, node: yaml.Node) -> None:
        parts = fqcn.split(".")
        collection = ".".join(parts[:2])
        if collection in BUILTIN_COLLECTIONS:
            package, routed = _builtin()
            module_file = (package / "modules").joinpath(*parts[2:-1], f"{parts[-1]}.py") if package else None
            if (
                collection == "ansible.builtin"
                and package is not None
                and not _has_plugin(package, parts[2:], routed)
                and not (module_file and module_file.is_file())
            ):
                self.problems.append(
                    f"{self.where(path, node)}: module '{fqcn}' is not one of ansible-core's"
                )
            return
        found = self.collection(collection, path, node, f"module '{fqcn}'")
        if found is not None and not _has_plugin(found, parts[2:], _collection_routing(found)):
            self.problems.append(
                f"{self.where(path, node)}: module '{fqcn}': collection {collection} "
                f"({self.show_dir(found)}) has no module or action '{'.'.join(parts[2:])}'"
            )

    def collection(self, name: str, path: Path, node: yaml.Node, what: str) -> Path | None:
        if name in BUILTIN_COLLECTIONS:
            return None
        found = self.collection_dir(name)
        if found is not None:
            return found
        if name in self.requirements.collection_names():
            return None
        subject = what if what.startswith("collection ") else f"{what}: collection '{name}'"
        self.problems.append(
            f"{self.where(path, node)}: " + self._not_found(subject, self.ansible_dir / "collections")
        )
        return None


def check_playbook(
    playbook: Path, include: Path | None = None, *, installed: Installed | None = None
) -> list[str]:
    """Every role and collection ``playbook`` and its roles use, found; else one line each naming
    the file (and line) that uses it. ``installed``: the cache entry (default: looked up)."""
    include = include or paths.include_dir()
    ansible_dir = playbook.parent
    requirements = load_requirements(ansible_dir)
    if installed is None:
        installed = GalaxyHook().installed(ansible_dir)
    checker = _Checker(ansible_dir, include, requirements, installed)
    checker.playbook(playbook)
    return list(dict.fromkeys(checker.problems))


_ANSIBLE_ERROR = re.compile(
    r"(?:the role '(?P<role>[^']+)' was not found|couldn't resolve module/action '(?P<module>[^']+)')"
)
_ORIGIN = re.compile(r"Origin: (?P<file>\S+?):(?P<line>\d+)(?::\d+)?")


def explain(message: str, include: Path | None = None) -> str:
    """Ansible's raw 'role not found' / 'couldn't resolve module' as a line naming the file and what."""
    found = _ANSIBLE_ERROR.search(message)
    if found is None:
        return message
    include = include or paths.include_dir()
    origin = _ORIGIN.search(message[found.end() :])
    where = ""
    if origin is not None:
        file = Path(origin["file"])
        with contextlib.suppress(ValueError):
            file = file.resolve().relative_to(include.resolve())
        where = f"{file}:{origin['line']}: "
    if found["role"]:
        return (
            f"{where}role '{found['role']}' was not found: vendor it in include/ansible/roles, or list it "
            f"in include/ansible/requirements.yml and make sure it installs (source: {Source.from_env()})"
        )
    return (
        f"{where}module '{found['module']}' was not found: vendor its collection in "
        "include/ansible/collections, or list the collection in include/ansible/requirements.yml"
    )
