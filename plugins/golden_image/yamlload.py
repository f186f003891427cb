"""Strict, safe YAML reading that remembers where every value came from.

PyYAML's safe loader still accepts duplicate keys (last one wins) and expands aliases without
limit ("billion laughs"). Here we compose the node tree ourselves so that duplicate keys, alias
bombs, tabs and non-string keys are errors, and every field path maps to its line number.

:func:`merge` deep-merges one document over another (for family files that ``extend`` another)
and keeps, for every path of the result, the file and line it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

try:  # libyaml is 5-10x faster; fall back to pure Python where it is missing
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

MAX_FILE_BYTES = 256 * 1024
MAX_NODES = 20_000
"""Upper bound on values after alias expansion; a real family file has a few hundred."""

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
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise YamlError(f"not valid YAML: {exc.problem or exc.context}", line) from None
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


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


dotted_path = _dotted
