"""Strict, safe YAML reading that remembers where every value came from.

PyYAML's safe loader still accepts duplicate keys (last one wins) and expands aliases without
limit ("billion laughs"). Here we compose the node tree ourselves so that duplicate keys, alias
bombs, tabs and non-string keys are errors, and every field path maps to its line number.

:func:`merge` deep-merges one document over another (for family files that ``extend`` another)
and keeps, for every path of the result, the file and line it came from.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

try:  # libyaml is 5-10x faster; fall back to pure Python where it is missing
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

MAX_FILE_BYTES = 256 * 1024
MAX_NODES = 20_000
"""Upper bound on values after alias expansion; a real family file has a few hundred."""
MAX_DEPTH = 32
"""Upper bound on nesting (mappings and lists inside each other); a real family file has about 6."""

Path_ = tuple[str | int, ...]


class YamlError(ValueError):
    """A YAML problem with the line it was found on (1-based, 0 when unknown)."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class LoadedYaml:
    """Parsed data plus where each path came from: ``lines`` per path, ``file`` for all of them
    unless ``files`` names another one (only merged documents have ``files``)."""

    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    file: str = ""
    files: dict[Path_, str] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int:
        """Line of the deepest known prefix of ``path`` (pydantic paths may go deeper than YAML)."""
        return self.origin_of(path)[1]

    def origin_of(self, path: Path_) -> tuple[str, int]:
        """File and line of the deepest known prefix of ``path``; line 0 when none is known."""
        for end in range(len(path), -1, -1):
            prefix = tuple(path[:end])
            line = self.lines.get(prefix)
            if line:
                return self.files.get(prefix, self.file), line
        return self.file, 0


@dataclass(frozen=True)
class MergeRules:
    """Exceptions to :func:`merge`'s rule (mappings merge key by key, everything else replaces)."""

    replace: frozenset[Path_] = frozenset()
    """Mappings that ``over`` replaces as a whole instead of merging into."""
    drop: frozenset[Path_] = frozenset()
    """Paths never taken from ``base``."""
    keep_null: frozenset[Path_] = frozenset()
    """Paths where a null in ``over`` is a value; elsewhere it removes the key."""


def merge(base: LoadedYaml, over: LoadedYaml, rules: MergeRules = MergeRules()) -> LoadedYaml:
    """``over`` deep-merged onto ``base`` (two mappings), remembering each path's file and line.

    Mappings merge key by key, recursively; lists and scalars in ``over`` replace; a null in
    ``over`` removes the key (see :class:`MergeRules` for the exceptions). Neither input is
    modified; the result shares unchanged values with them.
    """
    out = LoadedYaml(data=None, file=over.file)
    out.data = _Merger(base, over, rules, out).mapping(base.data, over.data, ())
    return out


class _Merger:
    def __init__(self, base: LoadedYaml, over: LoadedYaml, rules: MergeRules, out: LoadedYaml) -> None:
        self.base, self.over, self.rules, self.out = base, over, rules, out

    def mapping(self, base: dict[str, Any], over: dict[str, Any], path: Path_) -> dict[str, Any]:
        self._mark(self.base, path)
        self._mark(self.over, path)
        result: dict[str, Any] = {}
        for key in {**base, **over}:
            at = (*path, key)
            if key not in over:
                if at in self.rules.drop:
                    continue
                if isinstance(base[key], dict) and self._drops_below(at):
                    result[key] = self.mapping(base[key], {}, at)
                else:
                    result[key] = self._take(self.base, base[key], at)
                continue
            value = over[key]
            inherited = base.get(key) if at not in self.rules.drop else None
            if value is None and at not in self.rules.keep_null:
                self._mark(self.over, at)  # an error about the removed key points at the null
            elif isinstance(value, dict) and isinstance(inherited, dict) and at not in self.rules.replace:
                result[key] = self.mapping(inherited, value, at)
            else:
                result[key] = self._take(self.over, value, at)
        return result

    def _drops_below(self, path: Path_) -> bool:
        return any(len(d) > len(path) and d[: len(path)] == path for d in self.rules.drop)

    def _mark(self, source: LoadedYaml, path: Path_) -> None:
        line = source.lines.get(path)
        if line:
            self.out.lines[path] = line
            self.out.files[path] = source.files.get(path, source.file)

    def _take(self, source: LoadedYaml, value: Any, path: Path_) -> Any:
        self._mark(source, path)
        if isinstance(value, dict):
            for key, item in value.items():
                self._take(source, item, (*path, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._take(source, item, (*path, index))
        return value


def read_text(path: Path, root: Path | None = None, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The text of ``path`` if it is a small, regular, UTF-8 file; :class:`YamlError` saying why not.

    Never blocks and never reads more than ``max_bytes + 1`` bytes: a FIFO, socket, device or
    directory is refused from ``fstat`` before reading (opened with ``O_NONBLOCK``, so a FIFO
    without a writer cannot hang us). A symlink is followed only when ``root`` is given and the
    file it finally resolves to is inside ``root``; the resolved file is then opened with
    ``O_NOFOLLOW``. A UTF-8 byte order mark is dropped.
    """
    try:
        link = stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError as exc:
        raise YamlError(f"cannot read file: {exc.strerror or exc}") from None
    target = path
    if link:
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise YamlError(
                "cannot read file: a symlink that leads nowhere (a loop or a missing target)"
            ) from None
        if root is None or not target.is_relative_to(root.resolve()):
            raise YamlError(
                f"is a symlink that leads outside {root.name + '/' if root else 'its directory'}; "
                "a family file must be a regular file (a symlink only to one in the same directory tree)"
            )
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        raise YamlError(f"cannot read file: {_kind_of(target) or exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise YamlError(f"cannot read file: {_kind(info.st_mode)}, not a regular file")
        if info.st_size > max_bytes:
            raise YamlError(f"file is larger than {max_bytes // 1024} KiB; a family file should be small")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise YamlError(f"cannot read file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:  # it grew while we looked
        raise YamlError(f"file is larger than {max_bytes // 1024} KiB; a family file should be small")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); is this a binary file?",
            line,
        ) from None


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _kind_of(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return ""
    return "" if stat.S_ISREG(mode) else f"{_kind(mode)}, not a regular file"


def load_yaml(text: str, file: str = "") -> LoadedYaml:
    """Parse one YAML document strictly; raise :class:`YamlError` with a line number.

    ``file`` is only recorded (as :attr:`LoadedYaml.file`), for errors that name it later.
    """
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise YamlError(f"file is larger than {MAX_FILE_BYTES // 1024} KiB; a family file should be small")
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.lstrip(" ")
        if stripped.startswith("\t"):
            raise YamlError("tab used for indentation; YAML needs spaces", number)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except RecursionError:  # the pure-Python composer recurses; libyaml stops at 1000 levels itself
        raise YamlError(f"nested deeper than {MAX_DEPTH} levels; flatten the structure") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = exc.problem or exc.context
        if problem and "maximum nesting depth" in problem:  # libyaml's own limit (1000 levels)
            problem = f"nested deeper than {MAX_DEPTH} levels; flatten the structure"
            raise YamlError(problem, line) from None
        raise YamlError(f"not valid YAML: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"not valid YAML: {exc}") from None
    if node is None:
        raise YamlError("file is empty; expected a mapping with schema_version, name, ...", 1)
    builder = _Builder()
    data = builder.build(node, ())
    return LoadedYaml(data=data, lines=builder.lines, file=file)


class _Builder:
    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}
        self.count = 0
        self._constructor = yaml.SafeLoader.__new__(yaml.SafeLoader)
        yaml.constructor.SafeConstructor.__init__(self._constructor)

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise YamlError(
                f"more than {MAX_NODES} values after expanding aliases; anchors/aliases that "
                "multiply in size are not allowed",
                node.start_mark.line + 1,
            )
        self.lines.setdefault(path, node.start_mark.line + 1)
        if len(path) >= MAX_DEPTH and isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            shown = _dotted(path[:4]) + (" ..." if len(path) > 4 else "")
            raise YamlError(
                f"nested deeper than {MAX_DEPTH} levels (at {shown}); a family file is a few levels "
                "of plain settings, flatten the structure",
                node.start_mark.line + 1,
            )
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _PLAIN_TAGS:
            raise YamlError(
                f"tag '{node.tag}' is not supported; a family file holds plain mappings, lists and values",
                node.start_mark.line + 1,
            )
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise YamlError("merge keys (<<) are not supported", key_node.start_mark.line + 1)
                key = self._scalar(key_node)
                if not isinstance(key, str):
                    raise YamlError(
                        f"key {key!r} at {_dotted(path) or 'top level'} must be a string",
                        key_node.start_mark.line + 1,
                    )
                if key in result:
                    first = self.lines.get((*path, key), 0)
                    raise YamlError(
                        f"duplicate key '{_dotted((*path, key))}' (first defined on line {first})",
                        key_node.start_mark.line + 1,
                    )
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                result[key] = self.build(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            return self._constructor.construct_object(node)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            raise YamlError(f"not valid YAML: {problem}", node.start_mark.line + 1) from None
        except (ValueError, OverflowError, TypeError) as exc:  # 2001-13-14, 5000-digit ints, '0x'
            tag = node.tag.rsplit(":", 1)[-1]
            raise YamlError(
                f"not a valid {tag} ({str(exc)[:100]}); quote the value if it is meant as text",
                node.start_mark.line + 1,
            ) from None


_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


dotted_path = _dotted
