from __future__ import annotations

from pathlib import Path

import pytest

from golden_image.yamlload import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    LoadedYaml,
    MergeRules,
    YamlError,
    load_yaml,
    merge,
    read_text,
)


def test_lines_are_tracked_per_path() -> None:
    loaded = load_yaml("a: 1\nb:\n  c: [x, y]\n  d:\n    - e: 2\n")
    assert loaded.data == {"a": 1, "b": {"c": ["x", "y"], "d": [{"e": 2}]}}
    assert loaded.line_of(("b", "d", 0, "e")) == 5
    assert loaded.line_of(("b", "c", 1)) == 3
    assert loaded.line_of(("b", "zzz", "deeper")) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("base: &b {x: 1}\nother:\n  <<: *b\n", "merge keys (<<) are not supported"),
        ("1: x\n", "must be a string"),
        ("", "file is empty"),
        ("a: !!python/object:os.system x\n", "not valid YAML"),
    ],
)
def test_refused(text: str, message: str) -> None:
    with pytest.raises(YamlError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_yaml(text)


def _merged(base: str, over: str, rules: MergeRules = MergeRules()) -> LoadedYaml:
    return merge(load_yaml(base, "base.yaml"), load_yaml(over, "over.yaml"), rules)


def test_merge_mappings_key_by_key_lists_and_scalars_replace() -> None:
    out = _merged(
        "a: 1\nm:\n  x: [1, 2, 3]\n  y: {p: 1, q: 2}\nkeep: base\n",
        "a: 2\nm:\n  x: [9]\n  y: {q: 3}\nnew: over\n",
    )
    assert out.data == {"a": 2, "m": {"x": [9], "y": {"p": 1, "q": 3}}, "keep": "base", "new": "over"}
    assert out.origin_of(("m", "y", "p")) == ("base.yaml", 4)
    assert out.origin_of(("m", "y", "q")) == ("over.yaml", 4)
    assert out.origin_of(("m", "x", 0)) == ("over.yaml", 3)
    assert out.origin_of(("m", "x", 2)) == ("over.yaml", 3)  # base's longer list left no lines behind
    assert out.origin_of(("keep", "deeper")) == ("base.yaml", 5)
    assert out.origin_of(("nowhere",)) == ("over.yaml", 1)
    assert out.file == "over.yaml" and out.line_of(("a",)) == 1


def test_merge_null_removes_and_the_rules_make_exceptions() -> None:
    rules = MergeRules(
        replace=frozenset({("whole",)}),
        drop=frozenset({("own",), ("m", "mine")}),
        keep_null=frozenset({("kept",)}),
    )
    out = _merged(
        "gone: 1\nkept: 1\nwhole: {a: 1, b: 2}\nown: x\nm: {mine: 1, shared: 2}\ntags: {t: 1, u: 2}\n",
        "gone: null\nkept: null\nwhole: {a: 5}\ntags: {t: null}\n",
        rules,
    )
    assert out.data == {"kept": None, "whole": {"a": 5}, "m": {"shared": 2}, "tags": {"u": 2}}
    assert out.origin_of(("gone",)) == ("over.yaml", 1)  # an error about the removed key: the null
    assert out.origin_of(("whole", "b")) == ("over.yaml", 3)
    assert out.origin_of(("m", "shared")) == ("base.yaml", 5)


def test_merge_does_not_modify_its_inputs() -> None:
    base, over = load_yaml("m: {a: 1}\n"), load_yaml("m: {b: 2}\n")
    assert merge(base, over).data == {"m": {"a": 1, "b": 2}}
    assert base.data == {"m": {"a": 1}} and over.data == {"m": {"b": 2}}


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        (
            "a:\n  b: " + "[" * 40 + "]" * 40 + "\n",
            f"nested deeper than {MAX_DEPTH} levels (at a.b[0][0] ...)",
            2,
        ),
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", f"nested deeper than {MAX_DEPTH} levels", 1),
        ("x: &a [*a]\n", "nested deeper than", 1),
        ("a: 1\nb: !!python/object/apply:os.system [id]\n", "tag 'tag:yaml.org,2002:python/object/apply", 2),
        ("a: !!set {x, y}\n", "tag 'tag:yaml.org,2002:set' is not supported", 1),
        ("a: 1\nwhen: 2024-13-45\n", "not a valid timestamp (month must be in 1..12)", 2),
        ("n: " + "9" * 5000 + "\n", "not a valid int", 1),
    ],
)
def test_hostile_structures_are_refused_with_a_line(text: str, message: str, line: int) -> None:
    with pytest.raises(YamlError) as caught:
        load_yaml(text)
    assert message in caught.value.message and caught.value.line == line


def test_nesting_up_to_the_limit_loads() -> None:
    assert load_yaml("x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n").data["x"]


@pytest.mark.timeout(10)
def test_read_text_reads_only_small_regular_files(tmp_path: Path) -> None:
    import os

    good = tmp_path / "good.yaml"
    good.write_bytes(b"\xef\xbb\xbfa: 1\r\n")
    assert read_text(good) == "a: 1\r\n"  # the BOM is dropped
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "link.yaml").symlink_to(good)
    (tmp_path / "big.yaml").write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    (tmp_path / "bin.yaml").write_bytes(b"a: 1\n\xff\xfe\n")
    cases = {
        "fifo.yaml": "a FIFO (named pipe), not a regular file",
        "dir.yaml": "a directory, not a regular file",
        "big.yaml": "file is larger than 256 KiB",
        "bin.yaml": "not UTF-8 text (byte 0xff at offset 5)",
        "missing.yaml": "cannot read file: No such file or directory",
    }
    for name, message in cases.items():
        with pytest.raises(YamlError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_text(tmp_path / name)
    with pytest.raises(YamlError, match="is a symlink that leads outside its directory"):
        read_text(tmp_path / "link.yaml")  # no root given: no symlink is followed
    assert read_text(tmp_path / "link.yaml", root=tmp_path) == "a: 1\r\n"
    with pytest.raises(YamlError, match="is a symlink that leads outside sub/"):
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "out.yaml").symlink_to(good)
        read_text(tmp_path / "sub" / "out.yaml", root=tmp_path / "sub")
