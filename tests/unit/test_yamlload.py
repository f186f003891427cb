from __future__ import annotations

import pytest

from golden_image.yamlload import YamlError, load_yaml


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
