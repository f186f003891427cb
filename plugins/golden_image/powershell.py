"""PowerShell syntax checks without PowerShell: every ``.ps1`` parsed by a real PowerShell grammar.

No Windows host and no PowerShell run here, so scripts (Pester suites, provisioning and
user-data scripts) are parsed with tree-sitter's PowerShell grammar (``tree-sitter-powershell``
on PyPI, with the ``tree-sitter`` bindings; both pinned). A file with an ERROR or MISSING node
is refused, each problem named by file, line and column (1-based). Pure: reads files, runs
nothing; the grammar is imported on first use, so importing this module costs nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_SCRIPT_BYTES = 4 << 20
"""A script larger than this is refused rather than parsed."""
MAX_PROBLEMS = 20
"""Per file: the first few problems say enough."""


@dataclass(frozen=True)
class SyntaxProblem:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


@functools.lru_cache(maxsize=1)
def _parser() -> Any:
    try:
        import tree_sitter
        import tree_sitter_powershell
    except ImportError as exc:  # pragma: no cover - both are in requirements.txt
        raise RuntimeError(
            f"the PowerShell grammar is not installed ({exc}); pip install -r requirements.txt "
            "(tree-sitter, tree-sitter-powershell)"
        ) from None
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


def check_source(source: bytes, name: str = "<script>") -> list[SyntaxProblem]:
    """The syntax errors of one PowerShell script's text (empty: it parses)."""
    tree = _parser().parse(source)
    if not tree.root_node.has_error:
        return []
    lines = source.split(b"\n")
    problems = []
    for node in _bad_nodes(tree.root_node):
        row, column = node.start_point
        if node.is_missing:
            message = f"missing {node.type!r}"
        else:
            text = (
                lines[row][column : column + 40].decode("utf-8", "replace").strip()
                if row < len(lines)
                else ""
            )
            message = "syntax error" + (f" at {text!r}" if text else "")
        problems.append(SyntaxProblem(name, row + 1, column + 1, message))
        if len(problems) >= MAX_PROBLEMS:
            break
    return problems or [SyntaxProblem(name, 1, 1, "syntax error")]


def _bad_nodes(root: Any) -> Iterator[Any]:
    """ERROR and MISSING nodes, outermost first, without descending into an ERROR node."""
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            yield node
            continue
        if node.has_error:
            stack.extend(reversed(node.children))


def check_file(path: Path, shown: str | None = None) -> list[SyntaxProblem]:
    name = shown or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_SCRIPT_BYTES:
            return [SyntaxProblem(name, 0, 0, f"{size} bytes: larger than {MAX_SCRIPT_BYTES}, not parsed")]
        data = path.read_bytes()
    except OSError as exc:
        return [SyntaxProblem(name, 0, 0, f"cannot be read: {exc.strerror or exc}")]
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark (Windows editors write one)
        data = data[3:]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            data = data.decode("utf-16").encode()
        except UnicodeDecodeError:
            return [SyntaxProblem(name, 0, 0, "not valid UTF-16")]
    return check_source(data, name)


def check_files(paths: Iterable[Path], root: Path | None = None) -> list[SyntaxProblem]:
    """Every problem of every file, each named relative to ``root`` when it is under it."""
    problems: list[SyntaxProblem] = []
    for path in sorted(set(paths)):
        shown = str(path)
        if root is not None and path.is_relative_to(root):
            shown = str(path.relative_to(root))
        problems += check_file(path, shown)
    return problems
