"""steps.SYSTEM_FACTS, the script capture runs on the builder over SSH, run here as ``sh -c`` with
its ``/etc/`` paths moved under a temporary root: what it records of apt's sources and mirror
lists, and that hostile files there (FIFOs, devices, /proc, huge, many, shell syntax) are skipped
or recorded as plain text, never run, read without bound or waited on."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from golden_image import archive, steps

AMI = Path(__file__).resolve().parents[1] / "data" / "debian12-ami" / "etc" / "apt"


def run_facts(root: Path) -> dict[str, Any]:
    script = steps.SYSTEM_FACTS.replace("/etc/", f"{root}/etc/")
    assert script.count(f"{root}/etc/") >= 6  # every path the script reads, and its /etc/ bound
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30, check=True)
    facts: dict[str, Any] = json.loads(done.stdout)
    return facts


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An /etc/apt laid out as the Debian 12 AMI's (tests/data/debian12-ami)."""
    base = tmp_path.resolve()
    (base / "etc" / "apt" / "sources.list.d").mkdir(parents=True)
    (base / "etc" / "apt" / "mirrors").mkdir()
    for path in AMI.rglob("*"):
        if path.is_file():
            (base / "etc" / "apt" / path.relative_to(AMI)).write_bytes(path.read_bytes())
    (base / "etc" / "os-release").write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    return base


def test_the_ami_layout_is_recorded_as_the_reader_reads_it(root: Path) -> None:
    facts = run_facts(root)
    mirrors = {path.replace(str(root), ""): text for path, text in facts["apt_mirrors"].items()}
    sources = {path.replace(str(root), ""): text for path, text in facts["apt_sources"].items()}
    assert mirrors == {
        "/etc/apt/mirrors/debian-security.list": "https://cdn-aws.deb.debian.org/debian-security\n",
        "/etc/apt/mirrors/debian.list": "https://cdn-aws.deb.debian.org/debian\n",
    }
    assert list(sources) == ["/etc/apt/sources.list.d/debian.sources"]
    found = archive.parse_sources(sources, mirrors)
    assert {s.uri for s in found} == {
        "https://cdn-aws.deb.debian.org/debian",
        "https://cdn-aws.deb.debian.org/debian-security",
    }


def test_hostile_files_under_etc_apt_mirrors(root: Path, tmp_path: Path) -> None:
    mirrors = root / "etc" / "apt" / "mirrors"
    os.mkfifo(mirrors / "fifo.list")  # opened without O_NONBLOCK, reading it would hang capture
    (mirrors / "zero.list").symlink_to("/dev/zero")
    (mirrors / "environ.list").symlink_to("/proc/self/environ")
    outside = tmp_path / "outside.txt"
    outside.write_text("http://secret.example/\n")
    (mirrors / "outside.list").symlink_to(outside)
    (mirrors / "inside.list").symlink_to("debian.list")
    (mirrors / "dangling.list").symlink_to("nowhere.list")
    (mirrors / "directory.list").mkdir()
    (mirrors / "huge.list").write_bytes(b"#" * (archive.MAX_MIRROR_BYTES + 1))
    (mirrors / "exact.list").write_bytes(b"#" * archive.MAX_MIRROR_BYTES)
    (mirrors / "latin1.list").write_bytes(b"http://h\xe9.example/debian\n")
    (mirrors / "notes.txt").write_text("not a .list\n")
    shell = "$(touch /tmp/golden-facts-pwned) `id` ${HOME} 'PY'\nPY\nEOF\n"
    (mirrors / "shell.list").write_text(shell)

    facts = run_facts(root)
    recorded = {Path(p).name: text for p, text in facts["apt_mirrors"].items()}
    assert set(recorded) == {
        "debian-security.list",
        "debian.list",
        "exact.list",
        "inside.list",
        "latin1.list",
        "shell.list",
    }
    assert recorded["inside.list"] == recorded["debian.list"]
    assert len(recorded["exact.list"]) == archive.MAX_MIRROR_BYTES
    assert recorded["latin1.list"] == "http://h\ufffd.example/debian\n"
    assert recorded["shell.list"] == shell and not Path("/tmp/golden-facts-pwned").exists()
    assert facts["architecture"] and facts["apt_sources"]


def test_at_most_sixteen_mirror_lists_in_name_order(root: Path) -> None:
    mirrors = root / "etc" / "apt" / "mirrors"
    for n in range(20):
        (mirrors / f"a{n:02}.list").write_text(f"http://m{n}.example/debian\n")
    recorded = sorted(Path(p).name for p in run_facts(root)["apt_mirrors"])
    assert recorded == [f"a{n:02}.list" for n in range(archive.MAX_MIRROR_FILES)]


def test_the_script_and_the_reader_share_their_bounds() -> None:
    assert f"[:{archive.MAX_MIRROR_FILES}]" in steps.SYSTEM_FACTS
    assert f"read_small(path, {archive.MAX_MIRROR_BYTES})" in steps.SYSTEM_FACTS
    assert "<<'PY'" in steps.SYSTEM_FACTS  # a quoted heredoc: the shell expands nothing in it


def test_hostile_files_among_the_sources_are_skipped_not_waited_on(root: Path) -> None:
    parts = root / "etc" / "apt" / "sources.list.d"
    os.mkfifo(parts / "fifo.list")  # a plain open() would block capture forever
    (parts / "zero.sources").symlink_to("/dev/zero")
    (parts / "huge.list").write_bytes(b"#" * ((1 << 20) + 1))
    sources = {Path(p).name for p in run_facts(root)["apt_sources"]}
    assert sources == {"debian.sources"}
