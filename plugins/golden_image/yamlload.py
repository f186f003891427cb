"""Strict, safe YAML reading that remembers where every value came from.

PyYAML's safe loader still accepts duplicate keys (last one wins) and expands aliases without
limit ("billion laughs"). Here we compose the node tree ourselves so that duplicate keys, alias
bombs, tabs and non-string keys are errors, and every field path maps to its line number.
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
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int:
        """Line of the deepest known prefix of ``path`` (pydantic paths may go deeper than YAML)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line:
                return line
        return 0


def load_yaml(text: str) -> LoadedYaml:
    """Parse one YAML document strictly; raise :class:`YamlError` with a line number."""
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
    return LoadedYaml(data=data, lines=builder.lines)


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
