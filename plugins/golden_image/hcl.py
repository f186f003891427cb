"""The variables a Packer template declares, read without Packer and without a dependency.

A small scanner, not an HCL parser: it skips comments (``#``, ``//``, ``/* */``), quoted strings
(with their ``${ }`` / ``%{ }`` interpolations, which may hold strings of their own), heredocs and
everything inside braces, and collects the labels of the top-level ``variable "<name>" {`` blocks.
``*.pkr.json`` templates are read as JSON (``{"variable": {"<name>": {...}}}``). Anything it cannot
scan raises :class:`HclError`: the caller then refuses the template rather than guessing.

This module is at the bottom of the import graph (it imports nothing of the project): the spec
loader checks ``packer.vars`` with it at load time and the Packer hook again before a build.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["HclError", "declared_variables", "template_variables"]

_VARIABLE = re.compile(r'variable[ \t]+(?:"([^"\\\n]*)"|([A-Za-z_][A-Za-z0-9_-]*))[ \t]*\{')
_HEREDOC = re.compile(r"<<-?([A-Za-z_][A-Za-z0-9_-]*)[ \t]*\n")
_WORD = re.compile(r"[A-Za-z0-9_-]+")


class HclError(ValueError):
    """The text is not HCL this scanner can read (unterminated string, comment or block)."""


def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _skip_string(text: str, start: int) -> int:
    """Index after the quoted string that opens at ``start`` (a ``"``)."""
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
        elif text.startswith(("$${", "%%{"), i):
            i += 3
        elif text.startswith(("${", "%{"), i):
            i = _skip_interpolation(text, i + 2)
        elif c == '"':
            return i + 1
        elif c == "\n":
            break
        else:
            i += 1
    raise HclError(f"unterminated string at line {_line(text, start)}")


def _skip_interpolation(text: str, start: int) -> int:
    """Index after the ``}`` that closes an interpolation whose body starts at ``start``."""
    depth, i = 1, start
    while i < len(text):
        c = text[i]
        if c == '"':
            i = _skip_string(text, i)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise HclError(f"unterminated interpolation at line {_line(text, start)}")


def declared_variables(text: str) -> list[str]:
    """Names of the top-level ``variable`` blocks of an HCL2 template, in file order."""
    names: list[str] = []
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "#" or text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise HclError(f"unterminated comment at line {_line(text, i)}")
            i = end + 2
        elif c == '"':
            i = _skip_string(text, i)
        elif c == "<" and (heredoc := _HEREDOC.match(text, i)):
            closing = re.compile(rf"^[ \t]*{re.escape(heredoc.group(1))}[ \t]*$", re.M)
            found = closing.search(text, heredoc.end())
            if found is None:
                raise HclError(f"unterminated heredoc at line {_line(text, i)}")
            i = found.end()
        elif c in "{[(":
            depth += 1
            i += 1
        elif c in "}])":
            depth -= 1
            if depth < 0:
                raise HclError(f"unbalanced '{c}' at line {_line(text, i)}")
            i += 1
        elif _WORD.match(c):
            block = _VARIABLE.match(text, i) if depth == 0 else None
            if block is not None:
                names.append(block.group(1) if block.group(1) is not None else block.group(2))
                i = block.end() - 1  # the "{" opens the block
            else:
                word = _WORD.match(text, i)
                assert word is not None
                i = word.end()
        else:
            i += 1
    if depth != 0:
        raise HclError("unbalanced braces: a block is not closed at the end of the file")
    return names


def template_variables(path: Path) -> list[str]:
    """The variables ``path`` declares (``.pkr.hcl`` scanned, ``.pkr.json`` parsed)."""
    text = path.read_text(encoding="utf-8")
    if path.name.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise HclError(f"not JSON: {exc}") from None
        variables = data.get("variable", {}) if isinstance(data, dict) else {}
        if not isinstance(variables, dict):
            raise HclError('"variable" must be an object of variable blocks')
        return list(variables)
    return declared_variables(text)
