"""Hostile family files: each one is an error (or plain data) for that file only, never a hang,
never a crash of loading, and never hides, replaces or slows down the other families."""

from __future__ import annotations

import os
import random
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from golden_image import spec as spec_module
from golden_image.loader import load_dags
from golden_image.spec import load_families
from golden_image.yamlload import MAX_DEPTH, MAX_FILE_BYTES, YamlError, read_text
from tests.specs import bind_unix_socket

PROJECT = Path(__file__).resolve().parents[2]
REAL = {path.stem for path in (PROJECT / "include" / "images").glob("*.yaml")}  # the examples
MAINTENANCE_DAGS = {"golden_image_janitor", "golden_image_advisory", "golden_image_advisory_feed"}
REAL_DAGS = {"golden_image__" + n.replace("-", "_") for n in REAL} | MAINTENANCE_DAGS


@pytest.fixture
def include(tmp_path: Path) -> Path:
    """A copy of the project's include/ with its real families."""
    root = tmp_path / "include"
    shutil.copytree(PROJECT / "include", root, symlinks=True)
    return root


def real_family_text(name: str = "hostile") -> str:
    text = (PROJECT / "include" / "images" / "debian12-base.yaml").read_text()
    return text.replace("name: debian12-base", f"name: {name}").replace(
        "  pointer: /golden/debian12-base/latest", f"  pointer: /golden/{name}/latest"
    )


def assert_only(include: Path, broken: str, *messages: str) -> None:
    """``broken`` is an error mentioning every message; every real family still loads."""
    found = load_families(include / "images", include)
    assert set(found.families) == REAL, found.errors
    assert set(found.errors) == {broken}
    text = "\n".join(str(e) for e in found.errors[broken])
    for message in messages:
        assert message in text, text


# --- 1. deep nesting, unexpected exceptions ----------------------------------------------------


@pytest.mark.timeout(20)
def test_deep_nesting_is_one_files_error_not_every_dags_disappearance(include: Path) -> None:
    deep = include / "images" / "deep.yaml"
    deep.write_text("schema_version: 1\nname: deep\ndescription:\n  " + "[" * 500 + "]" * 500 + "\n")
    assert deep.stat().st_size < 2048
    assert_only(include, "deep", f"images/deep.yaml:4: (file): nested deeper than {MAX_DEPTH} levels")
    dags = load_dags(include / "images")
    assert set(dags) == REAL_DAGS | {"golden_image__deep"}
    assert "broken" in dags["golden_image__deep"].tags


@pytest.mark.timeout(20)
def test_an_unexpected_exception_is_contained_to_its_file(
    include: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (include / "images" / "kaboom.yaml").write_text(real_family_text("kaboom"))
    (include / "images" / "kaboom-child.yaml").write_text(
        "schema_version: 1\nname: kaboom-child\nextends: kaboom\n"
    )
    real_load = spec_module._Loader._load

    def load(self: spec_module._Loader, path: Path):  # type: ignore[no-untyped-def]
        if path.stem == "kaboom":
            raise RuntimeError("a bug nobody foresaw")
        return real_load(self, path)

    monkeypatch.setattr(spec_module._Loader, "_load", load)
    found = load_families(include / "images", include)
    assert set(found.families) == REAL
    [error] = found.errors["kaboom"]
    assert "could not be loaded (RuntimeError: a bug nobody foresaw)" in str(error)
    assert "extends family 'kaboom' which has errors of its own" in str(found.errors["kaboom-child"][0])
    dags = load_dags(include / "images")
    assert set(dags) == REAL_DAGS | {"golden_image__kaboom", "golden_image__kaboom_child"}


def test_a_failing_set_wide_load_still_shows_an_error_dag(
    include: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from golden_image import loader

    def explode(*_: object, **__: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(loader, "load_families", explode)
    dags = loader.load_dags(include / "images")
    [dag] = [d for d in dags.values() if d.dag_id not in MAINTENANCE_DAGS]
    assert "broken" in dag.tags and "RecursionError" in dag.doc_md
    # the sweeps do not silently stop: with nothing known, every platform's janitor task is there
    assert sorted(dags["golden_image_janitor"].task_ids) == [
        "remove_stale_instances_aws",
        "remove_stale_instances_local",
    ]


# --- 2. files that are not regular files -------------------------------------------------------


@pytest.mark.timeout(10)
def test_a_fifo_is_refused_without_hanging(include: Path) -> None:
    os.mkfifo(include / "images" / "pipe.yaml")  # no writer: a plain open() would block forever
    assert_only(
        include, "pipe", "images/pipe.yaml: (file): cannot read file: a FIFO (named pipe), not a regular file"
    )


@pytest.mark.timeout(10)
def test_a_symlink_to_dev_zero_is_refused_without_reading_it(include: Path) -> None:
    (include / "images" / "zero.yaml").symlink_to("/dev/zero")
    assert_only(include, "zero", "images/zero.yaml: (file): is a symlink that leads outside images/")


@pytest.mark.timeout(10)
def test_directory_socket_and_dangling_symlink_are_refused(
    include: Path, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    images = include / "images"
    (images / "dir.yaml").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        bind_unix_socket(sock, images / "sock.yaml")
        (images / "gone.yaml").symlink_to(images / "nothing-here.yaml")
        found = load_families(images, include)
    assert set(found.families) == REAL
    assert "cannot read file: a directory, not a regular file" in str(found.errors["dir"][0])
    assert "cannot read file: a socket, not a regular file" in str(found.errors["sock"][0])
    assert "a symlink that leads nowhere" in str(found.errors["gone"][0])


def test_a_symlink_to_a_regular_file_inside_images_is_read(include: Path) -> None:
    images = include / "images"
    (images / "parts").mkdir()
    (images / "parts" / "linked.yaml").write_text(real_family_text("linked"))
    (images / "linked.yaml").symlink_to(Path("parts") / "linked.yaml")
    found = load_families(images, include)
    assert set(found.families) == REAL | {"linked"}


@pytest.mark.timeout(10)
def test_the_size_limit_applies_before_reading(include: Path, tmp_path: Path) -> None:
    big = include / "images" / "big.yaml"
    with big.open("wb") as out:  # sparse: 10 MB that take no disk
        out.truncate(10 * 1024 * 1024)
    assert_only(include, "big", f"images/big.yaml: (file): file is larger than {MAX_FILE_BYTES // 1024} KiB")
    # a file whose size fstat does not know (st_size 0, like /proc files) is read to limit + 1 only
    with pytest.raises(YamlError, match="larger than"):
        read_text(Path("/proc/self/status"), max_bytes=10)


def test_not_utf8_names_the_line(include: Path) -> None:
    (include / "images" / "latin.yaml").write_bytes(b"schema_version: 1\nname: latin\ndescription: caf\xe9\n")
    assert_only(include, "latin", "images/latin.yaml:3: (file): not UTF-8 text (byte 0xe9 at offset 46)")


# --- 6. the sweep ------------------------------------------------------------------------------


def _touched(tmp_path: Path) -> Path:
    return tmp_path / "evaluated"


def _billion_laughs() -> str:
    lines = ["schema_version: 1", "name: hostile", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


HOSTILE: dict[str, tuple[Callable[[Path], bytes], str | None]] = {
    # name: (file contents given tmp_path, expected error text; None: loads as plain data)
    "deep-flow": (
        lambda _: b"schema_version: 1\nname: hostile\nx: " + b"{a: " * 500 + b"1" + b"}" * 500,
        "nested deeper than",
    ),
    "deeper-than-libyaml": (lambda _: b"x: " + b"[" * 5000 + b"]" * 5000, "nested deeper than"),
    "deep-block": (
        lambda _: b"".join(b"  " * i + b"k:\n" for i in range(200)) + b"  " * 200 + b"v\n",
        "nested deeper than",
    ),
    "self-alias": (lambda _: b"schema_version: 1\nname: hostile\nx: &a [*a]\n", "nested deeper than"),
    "huge-flow-sequence": (lambda _: b"x: [" + b"1," * 120_000 + b"1]\n", "more than 20000 values"),
    "billion-laughs": (lambda _: _billion_laughs().encode(), "more than 20000 values"),
    "template-syntax": (
        lambda tmp: (
            real_family_text()
            .replace("description: Debian 12", "description: Debian 12 {{ lookup('pipe', 'id') }}")
            .replace(
                "  compliance: cis-lite",
                f"  compliance: \"{{{{ lookup('pipe', 'touch {_touched(tmp)}') }}}}\"",
            )
            .replace("timezone: Etc/UTC", "timezone: \"{% raw %}{{ lookup('env', 'HOME') }}{% endraw %}\"")
            .encode()
        ),
        None,
    ),
    "homoglyph-key": (
        lambda _: real_family_text().replace("name: hostile", "n\u0430me: hostile").encode(),
        "name: required field is missing",
    ),
    "homoglyph-value": (
        lambda _: real_family_text().replace("name: hostile", "name: hostil\u0435").encode(),
        "name: String should match pattern",
    ),
    "nul-byte": (
        lambda _: real_family_text().replace("timezone: Etc/UTC", "timezone: Etc/UTC\x00").encode(),
        "control characters are not allowed",
    ),
    "bom": (lambda _: b"\xef\xbb\xbf" + real_family_text().encode(), None),
    "crlf": (lambda _: real_family_text().replace("\n", "\r\n").encode(), None),
    "ten-megabytes": (lambda _: b"# padding\n" * (1024 * 1024), "file is larger than"),
    "binary-garbage": (lambda _: random.Random(8).randbytes(4096), "not UTF-8 text"),
    "utf16": (lambda _: real_family_text().encode("utf-16"), "not UTF-8 text"),
    "python-tag": (
        lambda _: b"schema_version: 1\nname: !!python/object/apply:os.system [id]\n",
        "is not supported",
    ),
    "python-scalar-tag": (
        lambda _: b"schema_version: 1\nname: !!python/name:os.system x\n",
        "not valid YAML",
    ),
    "two-documents": (
        lambda _: real_family_text().encode() + b"---\nname: other\n",
        "but found another document",
    ),
    "impossible-date": (
        lambda _: (
            real_family_text()
            .replace("description: Debian", "created: 2024-13-45\ndescription: Debian")
            .encode()
        ),
        "not a valid timestamp",
    ),
    "giant-integer": (
        lambda _: b"schema_version: 1\nname: hostile\nx: " + b"9" * 50_000 + b"\n",
        "not a valid int",
    ),
    "long-line": (
        lambda _: b"schema_version: 1\nname: hostile\ndescription: " + b"x" * 200_000 + b"\n",
        "required field is missing",
    ),
    "many-keys": (lambda _: b"".join(b"k%d: 1\n" % i for i in range(25_000)), "more than 20000 values"),
    "top-level-list": (lambda _: b"- a\n- b\n", "expected a mapping"),
    "only-comments": (lambda _: b"# nothing here\n", "file is empty"),
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_family_files_are_contained(case: str, include: Path, tmp_path: Path) -> None:
    make, expected = HOSTILE[case]
    (include / "images" / "hostile.yaml").write_bytes(make(tmp_path))
    found = load_families(include / "images", include)
    assert set(found.families) >= REAL, found.errors
    if expected is None:
        assert set(found.families) == REAL | {"hostile"} and not found.errors, found.errors
    else:
        assert set(found.families) == REAL
        assert set(found.errors) == {"hostile"}
        text = "\n".join(str(e) for e in found.errors["hostile"])
        assert "images/hostile.yaml" in text and expected in text, text
        assert len(text) < 2000  # the error describes the input, it does not repeat it
    assert not _touched(tmp_path).exists()  # template syntax is data: never evaluated
    if case == "template-syntax":
        spec = found.families["hostile"]
        assert spec.description.startswith("Debian 12 {{ lookup('pipe', 'id') }}")
        assert spec.tags["compliance"] == f"{{{{ lookup('pipe', 'touch {_touched(tmp_path)}') }}}}"
        assert spec.ansible is not None
        assert spec.ansible.extra_vars["timezone"] == "{% raw %}{{ lookup('env', 'HOME') }}{% endraw %}"
