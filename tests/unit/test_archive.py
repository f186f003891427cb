"""archive.py: apt sources in both formats (and hostile ones), Release files, Packages indexes
reduced by python-debian, and pending updates with real Debian version orderings."""

from __future__ import annotations

import base64
import io
import lzma
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from golden_image import archive
from golden_image.archive import AptSource, ArchiveError, SuiteIndex
from golden_image.decisions import PendingUpdate

DATA = Path(__file__).resolve().parents[1] / "data"

LOCAL_BASE = """\
deb http://deb.debian.org/debian bookworm main

deb http://deb.debian.org/debian bookworm-updates main

deb http://deb.debian.org/debian-security bookworm-security main
"""
"""What mmdebstrap writes for a local base (platforms/local/sources.py passes these three lines)."""

DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
"""Debian 12's own deb822 file (as the debian:bookworm container image ships it)."""

CLOUD_IMAGE_SOURCES = """\
Types: deb deb-src
URIs: mirror+file:///etc/apt/mirrors/debian.list
Suites: bookworm bookworm-updates bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: mirror+file:///etc/apt/mirrors/debian-security.list
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
"""Debian 12 cloud images and AMIs: URIs are mirror lists inside the image."""


def plain(sources: list[AptSource]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(s.uri, s.suite, s.components) for s in sources]


# -- one-line format ----------------------------------------------------------------------------
def test_the_local_base_sources_list() -> None:
    found = archive.parse_sources({"/etc/apt/sources.list": LOCAL_BASE})
    assert plain(found) == [
        ("http://deb.debian.org/debian", "bookworm", ("main",)),
        ("http://deb.debian.org/debian", "bookworm-updates", ("main",)),
        ("http://deb.debian.org/debian-security", "bookworm-security", ("main",)),
    ]
    assert found[2].origin == "/etc/apt/sources.list:5"
    plans = archive.plan_suites(found, ["amd64"])
    assert [p.release_url for p in plans] == [
        "http://deb.debian.org/debian/dists/bookworm/InRelease",
        "http://deb.debian.org/debian/dists/bookworm-updates/InRelease",
        "http://deb.debian.org/debian-security/dists/bookworm-security/InRelease",
    ]
    assert all(p.arches == ("amd64",) and p.keyrings == () for p in plans)


def test_one_line_options_comments_and_deb_src() -> None:
    text = """
# a comment line
deb-src http://deb.debian.org/debian bookworm main
deb [ arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg ] https://d.example/d/ s c #
deb\t[arch+=i386 check-valid-until=no lang=none]\thttp://mirror.example/debian  bookworm-updates   main
deb [signed-by=A7236886F3CCCAAD148A27F80E98404D386FA1D9] http://deb.debian.org/debian-security s main
"""
    found = archive.parse_one_line(text, "/etc/apt/sources.list.d/x.list")
    assert plain(found) == [
        ("https://d.example/d", "s", ("c",)),
        ("http://mirror.example/debian", "bookworm-updates", ("main",)),
        ("http://deb.debian.org/debian-security", "s", ("main",)),
    ]
    first, second, third = found
    assert first.architectures == ("amd64", "arm64")
    assert first.keyrings == ("/usr/share/keyrings/debian-archive-keyring.gpg",)
    assert second.arches_for(["amd64"]) == ["amd64", "i386"] and second.check_valid_until is False
    assert third.fingerprints == ("A7236886F3CCCAAD148A27F80E98404D386FA1D9",) and third.keyrings == ()


# -- deb822 format ------------------------------------------------------------------------------
def test_deb822_sources_of_debian_12() -> None:
    found = archive.parse_sources({"/etc/apt/sources.list.d/debian.sources": DEBIAN_SOURCES})
    assert plain(found) == [
        ("http://deb.debian.org/debian", "bookworm", ("main",)),
        ("http://deb.debian.org/debian", "bookworm-updates", ("main",)),
        ("http://deb.debian.org/debian-security", "bookworm-security", ("main",)),
    ]
    assert {s.keyrings for s in found} == {("/usr/share/keyrings/debian-archive-keyring.gpg",)}
    assert found[0].origin == "/etc/apt/sources.list.d/debian.sources: stanza 1"


def test_deb822_fields_enabled_types_architectures_and_inline_keys() -> None:
    text = """\
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Enabled: no

X-Repolib-Name: vendor
types: deb
uris: https://repo.example/apt http://mirror.example/apt
suites: stable
components: main extra
Architectures: amd64
Architectures-Add: arm64
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZQ==
 =AAAA
 -----END PGP PUBLIC KEY BLOCK-----
"""
    found = archive.parse_deb822(text, "/etc/apt/sources.list.d/vendor.sources")
    assert plain(found) == [
        ("https://repo.example/apt", "stable", ("main", "extra")),
        ("http://mirror.example/apt", "stable", ("main", "extra")),
    ]
    assert found[0].arches_for(["i386"]) == ["amd64", "arm64"]
    assert "BEGIN PGP PUBLIC KEY BLOCK" in found[0].inline_key


A_SOURCES = "Types: deb\nURIs: http://a.example/d\nSuites: s\nComponents: c\n"


def test_sources_files_are_read_in_apt_order_and_other_names_ignored() -> None:
    found = archive.parse_sources(
        {
            "/etc/apt/sources.list.d/b.list": "deb http://b.example/debian bookworm main\n",
            "/etc/apt/sources.list.d/a.sources": A_SOURCES,
            "/etc/apt/sources.list": "deb http://first.example/debian bookworm main\n",
            "/etc/apt/sources.list.d/old.list.save": "deb cdrom:[x]/ bookworm main\n",
        }
    )
    assert [s.uri for s in found] == [
        "http://first.example/debian",
        "http://a.example/d",
        "http://b.example/debian",
    ]


def test_entries_of_one_suite_are_merged_and_must_agree_on_keys() -> None:
    text = "deb http://h.example/d s main\ndeb [arch=i386] http://h.example/d s contrib\n"
    (plan,) = archive.plan_suites(archive.parse_one_line(text, "f"), ["amd64"])
    assert plan.components == ("main", "contrib") and plan.arches == ("amd64", "i386")
    conflicting = text + "deb [signed-by=/usr/share/keyrings/x.gpg] http://h.example/d s main\n"
    with pytest.raises(ArchiveError, match="different signed-by"):
        archive.plan_suites(archive.parse_one_line(conflicting, "f"), ["amd64"])


# -- what falls back, and why -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sources", "why"),
    [
        (None, "records no apt sources"),
        (["deb http://x/ s main"], "not a mapping"),
        ({"/etc/apt/sources.list.d/debian.sources": CLOUD_IMAGE_SOURCES}, "the image manifest records none"),
        ({"/etc/apt/sources.list": "deb cdrom:[Debian 12]/ bookworm main\n"}, "scheme 'cdrom'"),
        ({"/etc/apt/sources.list": "deb file:/srv/repo bookworm main\n"}, "scheme 'file'"),
        ({"/etc/apt/sources.list": "deb copy:///srv/repo bookworm main\n"}, "scheme 'copy'"),
        ({"/etc/apt/sources.list": "deb tor+http://x.onion/debian bookworm main\n"}, "scheme 'tor+http'"),
        ({"/etc/apt/sources.list": "deb ftp://ftp.debian.org/debian bookworm main\n"}, "scheme 'ftp'"),
        ({"/etc/apt/sources.list": "deb [trusted=yes] http://h.example/d s main\n"}, "trusted=yes"),
        ({"/etc/apt/sources.list": "deb [allow-insecure=yes] http://h.example/d s main\n"}, "unsigned"),
        ({"/etc/apt/sources.list": "deb [snapshot=20260101] http://h.example/d s main\n"}, "snapshot"),
        ({"/etc/apt/sources.list": "deb [frobnicate=1] http://h.example/d s main\n"}, "'frobnicate' is not"),
        ({"/etc/apt/sources.list": "deb [arch*=i386] http://h.example/d s main\n"}, "not known"),
        ({"/etc/apt/sources.list": "deb [arch=amd64 http://h.example/d s main\n"}, "never closed"),
        ({"/etc/apt/sources.list": "deb [arch] http://h.example/d s main\n"}, "not key=value"),
        ({"/etc/apt/sources.list": "deb [arch=AMD$(64)] http://h/d s main\n"}, "not a dpkg architecture"),
        ({"/etc/apt/sources.list": "deb [signed-by=keyring.gpg] http://h.example/d s main\n"}, "signed-by"),
        ({"/etc/apt/sources.list": "rpm http://h.example/d s main\n"}, "type 'rpm'"),
        ({"/etc/apt/sources.list": "deb http://h.example/d\n"}, "needs a URI and a suite"),
        ({"/etc/apt/sources.list": "deb http://h.example/d ./\n"}, "flat repository"),
        ({"/etc/apt/sources.list": "deb http://h.example/d ../../etc main\n"}, "not a plain suite"),
        ({"/etc/apt/sources.list": "deb http://h.example/d s ma/../in\n"}, "not a plain name"),
        ({"/etc/apt/sources.list": "deb http://h.example/d s\n"}, "no components"),
        ({"/etc/apt/sources.list": "deb http://user:secret@h.example/d s main\n"}, "credentials"),
        ({"/etc/apt/sources.list": "deb http://169.254.169.254/latest s main\n"}, "link-local"),
        ({"/etc/apt/sources.list": "deb http://[fe80::1]/d s main\n"}, "link-local"),
        ({"/etc/apt/sources.list": "deb http://2852039166/latest s main\n"}, "link-local"),
        ({"/etc/apt/sources.list": "deb http://[fd00:ec2::254]/latest s main\n"}, "metadata endpoint"),
        ({"/etc/apt/sources.list": "deb http:///d s main\n"}, "no host"),
        ({"/etc/apt/sources.list": "deb http://h.example/d?x=1 s main\n"}, "query"),
        ({"/etc/apt/sources.list": "deb http://[::1 s main\n"}, "cannot be parsed"),
        ({"/etc/apt/sources.list": "deb http://h.example/d s main\n" * 70}, "more than 64 deb entries"),
        ({"/etc/apt/sources.list": "deb http://h.example/d s main\n" * 40_000}, "bytes"),
        ({"/etc/apt/sources.list": 42}, "not text"),
        ({"/x.sources": "Types: deb\nURIs: http://h.example/d\nComponents: main\n"}, "URIs and Suites"),
        ({"/x.sources": "URIs: http://h.example/d\nSuites: s\nComponents: main\n"}, "no Types"),
        ({"/x.sources": "Types: deb rpm\nURIs: http://h/d\nSuites: s\nComponents: c\n"}, "type 'rpm'"),
        ({"/x.sources": "Types: deb\nURIs: http://h/d\nSuites: s\nComponents: c\nTrusted: yes\n"}, "trusted"),
        ({"/x.sources": "Types: deb\nURIs: http://h/d\nSuites: s\nComponents: c\nInRelease-Path: x"},
         "moves"),
        (
            {"/x.sources": "Types: deb\nURIs: " + " ".join(f"http://h{i}.example/" for i in range(20))
             + "\nSuites: " + " ".join(f"s{i}" for i in range(20)) + "\nComponents: main\n"},
            "20 URIs x 20 suites",
        ),
    ],
)  # fmt: skip
def test_what_the_index_reader_refuses_says_why(sources: object, why: str) -> None:
    with pytest.raises(ArchiveError, match=re.escape(why)):
        archive.parse_sources(sources)  # type: ignore[arg-type]


# -- mirror lists (mirror+file:, Debian's cloud images and AMIs) --------------------------------
AMI = DATA / "debian12-ami"


def ami_files(under: str) -> dict[str, str]:
    """The recorded files of the Debian 12 AMI fixture below ``etc/apt/<under>``, by their path."""
    return {
        "/" + str(path.relative_to(AMI)): path.read_text()
        for path in sorted((AMI / "etc" / "apt" / under).iterdir())
    }


def ami_manifest() -> dict[str, dict[str, str]]:
    return {"apt_sources": ami_files("sources.list.d"), "apt_mirrors": ami_files("mirrors")}


def test_the_debian_ami_reads_its_mirror_lists() -> None:
    recorded = ami_manifest()
    assert recorded["apt_mirrors"] == {
        "/etc/apt/mirrors/debian-security.list": "https://cdn-aws.deb.debian.org/debian-security\n",
        "/etc/apt/mirrors/debian.list": "https://cdn-aws.deb.debian.org/debian\n",
    }
    assert recorded["apt_sources"]["/etc/apt/sources.list.d/debian.sources"] == CLOUD_IMAGE_SOURCES
    found = archive.parse_sources(recorded["apt_sources"], recorded["apt_mirrors"])
    assert plain(found) == [
        ("https://cdn-aws.deb.debian.org/debian", "bookworm", ("main",)),
        ("https://cdn-aws.deb.debian.org/debian", "bookworm-updates", ("main",)),
        ("https://cdn-aws.deb.debian.org/debian", "bookworm-backports", ("main",)),
        ("https://cdn-aws.deb.debian.org/debian-security", "bookworm-security", ("main",)),
    ]
    assert {s.mirror_list for s in found} == {
        "mirror+file:/etc/apt/mirrors/debian.list",
        "mirror+file:/etc/apt/mirrors/debian-security.list",
    }
    plans = archive.plan_suites(found, ["amd64"])
    assert [p.release_url for p in plans] == [
        "https://cdn-aws.deb.debian.org/debian/dists/bookworm/InRelease",
        "https://cdn-aws.deb.debian.org/debian/dists/bookworm-updates/InRelease",
        "https://cdn-aws.deb.debian.org/debian/dists/bookworm-backports/InRelease",
        "https://cdn-aws.deb.debian.org/debian-security/dists/bookworm-security/InRelease",
    ]
    assert plans[0].keyrings == ("/usr/share/keyrings/debian-archive-keyring.gpg",)
    assert plans[0].candidates == ("https://cdn-aws.deb.debian.org/debian",)


def test_both_mirror_file_spellings_and_the_one_line_format() -> None:
    mirrors = {"/etc/apt/mirrors/debian.list": "http://deb.debian.org/debian/\n"}
    text = (
        "deb mirror+file:/etc/apt/mirrors/debian.list bookworm main\n"
        "deb mirror+file:///etc/apt/mirrors/debian.list/ bookworm-updates main\n"
        "deb MIRROR+FILE:/etc/apt/mirrors/debian%2elist bookworm-backports main\n"
    )
    found = archive.parse_sources({"/etc/apt/sources.list": text}, mirrors)
    assert {s.uri for s in found} == {"http://deb.debian.org/debian"}
    assert {s.mirror_list for s in found} == {"mirror+file:/etc/apt/mirrors/debian.list"}
    assert len(archive.plan_suites(found, ["amd64"])) == 3


def test_mirror_order_is_apts_priority_then_the_file() -> None:
    text = (
        "# Debian mirrors, nearest first\n"
        "\n"
        "http://no-priority.example/debian\n"
        "http://second.example/debian\tpriority:2\n"
        "http://packages-only.example/debian\tpriority:0 type:deb\n"
        "http://first.example/debian/\tpriority:1\ttype:index type:deb country:de\n"
        "http://also-second.example/debian\tpriority:2 no-colon :empty-name\n"
        "http://no-priority.example/debian\n"
    )
    assert archive.parse_mirror_list(text, "/etc/apt/mirrors/x.list") == [
        "http://first.example/debian",
        "http://second.example/debian",
        "http://also-second.example/debian",
        "http://no-priority.example/debian",
    ]
    sources = archive.parse_sources(
        {"/etc/apt/sources.list": "deb mirror+file:/etc/apt/mirrors/x.list bookworm main\n"},
        {"/etc/apt/mirrors/x.list": text},
    )
    (plan,) = archive.plan_suites(sources, ["amd64"])
    assert plan.uri == "http://first.example/debian" and len(plan.mirrors) == 3
    assert plan.candidates == (
        "http://first.example/debian",
        "http://second.example/debian",
        "http://also-second.example/debian",
    )  # at most MIRROR_TRIES


def test_entries_through_one_mirror_list_must_agree_on_keys() -> None:
    mirrors = {"/etc/apt/mirrors/debian.list": "http://deb.debian.org/debian\n"}
    text = (
        "deb mirror+file:/etc/apt/mirrors/debian.list bookworm main\n"
        "deb [signed-by=/etc/apt/keyrings/other.gpg] mirror+file:/etc/apt/mirrors/debian.list bookworm c\n"
    )
    sources = archive.parse_sources({"/etc/apt/sources.list": text}, mirrors)
    with pytest.raises(
        ArchiveError, match=r"^mirror\+file:/etc/apt/mirrors/debian\.list bookworm: .*different"
    ):
        archive.plan_suites(sources, ["amd64"])


LIST = "/etc/apt/mirrors/debian.list"
VIA_LIST = {"/etc/apt/sources.list": f"deb mirror+file://{LIST} bookworm main\n"}


@pytest.mark.parametrize(
    ("mirror_list", "why"),
    [
        # what the reader never fetches, wherever it sits in the list
        ("http://169.254.169.254/latest/meta-data\n", "link-local"),
        ("http://deb.debian.org/debian\nhttp://169.254.169.254/\n", "link-local"),
        ("http://2852039166/debian\n", "link-local"),  # 169.254.169.254 as the resolver reads it
        ("http://0xA9FEA9FE/debian\n", "link-local"),
        ("http://169.254.43518/debian\n", "link-local"),
        ("http://[::ffff:169.254.169.254]/debian\n", "link-local"),
        ("http://[fe80::1%25eth0]/debian\n", "link-local"),
        ("http://[fd00:ec2::254]/latest\n", "metadata endpoint"),
        ("http://metadata.google.internal/computeMetadata/v1\n", "metadata endpoint"),
        ("http://instance-data./latest\n", "metadata endpoint"),
        ("http://224.0.0.1/debian\n", "link-local or special"),
        ("https://user:secret@mirror.example/debian\n", "credentials"),
        ("https://token@mirror.example/debian\n", "credentials"),
        ("file:/srv/mirror/debian\n", "scheme 'file'"),
        ("file:///srv/mirror/debian\tpriority:1\n", "scheme 'file'"),
        ("copy:/srv/mirror/debian\n", "scheme 'copy'"),
        ("ftp://ftp.debian.org/debian\n", "scheme 'ftp'"),
        ("tor+http://debian.onion/debian\n", "scheme 'tor+http'"),
        ("cdrom:[Debian 12]/\n", "spaces"),
        ("mirror+file:/etc/apt/mirrors/other.list\n", "cannot name another mirror list"),
        ("mirror+http://lists.example/debian.list\n", "remote or wrapped"),
        ("http://mirror.example/debian?token=1\n", "query"),
        ("http:///debian\n", "no host"),
        # what apt would read differently, or not at all
        ("http://deb.debian.org/debian priority:1\n", "spaces"),  # metadata needs a tab
        ("http://deb.debian.org/debian\r\n", "controls"),
        (" http://deb.debian.org/debian\n", "spaces"),
        ("http://déb.example/debian\n", "non-ASCII"),
        ("http://deb.debian.org/debian\tarch:amd64\n", "per file"),
        ("http://deb.debian.org/debian\tcodename:bookworm\n", "per file"),
        ("http://deb.debian.org/debian\tComponent:main\n", "per file"),
        ("http://deb.debian.org/debian\tlang:en\n", "per file"),
        ("http://deb.debian.org/debian\tpriority:first\n", "not a number"),
        ("", "names no mirror"),
        ("# nothing but a comment\n\n", "names no mirror"),
        ("http://deb.debian.org/debian\ttype:deb\n", "names no mirror"),
        ("".join(f"http://m{i}.example/debian\n" for i in range(17)), "more than 16 mirrors"),
        ("http://deb.debian.org/debian\n" + "#" * archive.MAX_MIRROR_BYTES, "over 65536 bytes"),
        (42, "not text"),
    ],
)  # fmt: skip
def test_hostile_mirror_lists_are_refused_with_the_reason(mirror_list: object, why: str) -> None:
    with pytest.raises(ArchiveError, match=re.escape(why)):
        archive.parse_sources(VIA_LIST, {LIST: mirror_list})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("uri", "mirrors", "why"),
    [
        (f"mirror+file:{LIST}", None, "the image manifest records none"),
        (f"mirror+file:{LIST}", ["not", "a", "mapping"], "not a mapping"),
        (f"mirror+file:{LIST}", {}, f"mirror list {LIST} is not recorded"),
        ("mirror+file:/etc/apt/mirrors/debian.list.gz", {LIST: "http://h.example/d\n"}, "not recorded"),
        ("mirror+file:/srv/lists/debian.txt", {LIST: "http://h.example/d\n"}, "not recorded"),
        ("mirror+file:/etc/apt/mirrors/../../shadow", {}, "not a plain absolute path"),
        ("mirror+file:etc/apt/mirrors/debian.list", {}, "not a plain absolute path"),
        ("mirror+file:/etc/apt/mirrors/a%00.list", {}, "not a plain absolute path"),
        ("mirror+file://evil.example/etc/apt/mirrors/debian.list", {}, "names a host"),
        ("mirror://lists.example/debian.list", {}, "remote or wrapped mirror list is not fetched"),
        ("mirror+https://lists.example/debian.list", {}, "'mirror+https'"),
        ("mirror+copy:/etc/apt/mirrors/debian.list", {}, "'mirror+copy'"),
        ("tor+mirror+file:/etc/apt/mirrors/debian.list", {}, "'tor+mirror+file'"),
    ],
)  # fmt: skip
def test_mirror_sources_the_reader_cannot_resolve_say_why(uri: str, mirrors: object, why: str) -> None:
    stanza = f"Types: deb\nURIs: {uri}\nSuites: bookworm\nComponents: main\n"
    sources = {"/etc/apt/sources.list.d/debian.sources": stanza}
    with pytest.raises(ArchiveError, match=re.escape(why)):
        archive.parse_sources(sources, mirrors)  # type: ignore[arg-type]


def test_a_huge_mirror_list_is_refused_before_it_is_parsed() -> None:
    huge = "http://deb.debian.org/debian\n" * 1_000_000  # 29 MB: refused by its length, never split
    with pytest.raises(ArchiveError, match="over 65536 bytes"):
        archive.parse_mirror_list(huge, LIST)


def test_too_many_indexes_are_refused() -> None:
    components = " ".join(f"c{i}" for i in range(60))
    sources = archive.parse_one_line(
        "".join(f"deb [arch=amd64,arm64,i386] http://h.example/d s{n} {components}\n" for n in range(2)), "f"
    )
    with pytest.raises(ArchiveError, match="more than 256 Packages indexes"):
        archive.plan_suites(sources, ["amd64"])


def test_trusted_no_is_not_a_refusal() -> None:
    (found,) = archive.parse_one_line("deb [trusted=no] http://h.example/d s main\n", "f")
    assert found.suite == "s"


def test_image_architectures() -> None:
    manifest = {
        "architecture": "amd64",
        "packages": [{"architecture": a} for a in ("amd64", "all", "i386", "i386")],
    }
    assert archive.image_architectures(manifest) == ["amd64", "i386"]
    with pytest.raises(ArchiveError, match="no dpkg architecture"):
        archive.image_architectures({"packages": []})


# -- Release ------------------------------------------------------------------------------------
def signed_text(name: str) -> str:
    """The signed part of a recorded InRelease (what gpgv writes out; tests/unit/test_apt_archive.py
    checks the signature itself)."""
    text = (DATA / name).read_text()
    body = text.split("\n\n", 1)[1]  # after the armor's Hash: header
    return body.split("\n-----BEGIN PGP SIGNATURE-----", 1)[0] + "\n"


def test_release_of_bookworm_updates() -> None:
    facts = archive.parse_release(signed_text("bookworm-updates.InRelease"))
    assert (facts.suite, facts.codename, facts.label) == ("oldstable-updates", "bookworm-updates", "Debian")
    assert not facts.security and facts.acquire_by_hash and facts.no_arch_all_packages
    assert facts.valid_until is None and facts.date is not None and not facts.not_automatic
    index = facts.index_file("main", "amd64")
    assert index is not None and index.path == "main/binary-amd64/Packages.xz"
    assert len(index.sha256) == 64 and index.uncompressed_size and index.uncompressed_size > index.size
    assert archive.by_hash_path(index) == f"main/binary-amd64/by-hash/SHA256/{index.sha256}"
    assert [a for a, _ in archive.index_files(facts, "main", ["amd64", "hurd-i386"])] == ["amd64"]
    archive.check_release(facts, "bookworm-updates", now=4e9)  # no Valid-Until: never expires
    archive.check_release(facts, "oldstable-updates", now=4e9)
    with pytest.raises(ArchiveError, match="is for suite 'oldstable-updates'"):
        archive.check_release(facts, "bookworm-security", now=0)


def test_release_of_bookworm_security_expires() -> None:
    facts = archive.parse_release(signed_text("bookworm-security.InRelease"))
    assert facts.label == "Debian-Security" and facts.security
    assert facts.valid_until is not None and facts.date is not None and facts.valid_until > facts.date
    archive.check_release(facts, "bookworm-security", now=facts.date + 3600)
    with pytest.raises(ArchiveError, match="expired"):
        archive.check_release(facts, "bookworm-security", now=facts.valid_until + 1)
    archive.check_release(facts, "bookworm-security", now=facts.valid_until + 1, check_valid_until=False)
    # the security archive keeps arch all inside binary-<arch> and lists no "all" architecture
    assert [a for a, _ in archive.index_files(facts, "main", ["amd64"])] == ["amd64"]


def test_binary_all_is_read_when_the_archive_keeps_it_apart() -> None:
    digest = "ab" * 32
    text = f"""Suite: s
Codename: c
Architectures: amd64 all
SHA256:
 {digest} 10 main/binary-amd64/Packages.gz
 {digest} 11 main/binary-all/Packages
"""
    facts = archive.parse_release(text)
    assert [(a, f.path) for a, f in archive.index_files(facts, "main", ["amd64"])] == [
        ("amd64", "main/binary-amd64/Packages.gz"),
        ("all", "main/binary-all/Packages"),
    ]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Suite: s\n", "no SHA256"),
        ("Suite: s\nSHA256:\n nothex 1 main/binary-amd64/Packages\n", "no SHA256"),
        ("Suite: s\nValid-Until: someday\nSHA256:\n " + "0" * 64 + " 1 x\n", "not a date"),
    ],
)
def test_bad_release_files(text: str, why: str) -> None:
    with pytest.raises(ArchiveError, match=why):
        archive.parse_release(text)


# -- Packages -----------------------------------------------------------------------------------
PACKAGES = b"""Package: libc6
Version: 2.36-9+deb12u4
Architecture: amd64
Description: GNU C Library
 a continuation line: Version: 99

Package: libc6
Version: 2.36-9+deb12u10
Architecture: amd64

Package: libc6
Version: 2.36-9+deb12u9
Architecture: amd64

Package: libc6
Version: 2.36-9+deb12u7
Architecture: i386

Package: tzdata
Version: 2025b-0+deb12u1
Architecture: all

Package: broken
Architecture: amd64

Package: weird
Version: not a version!
Architecture: amd64

Package: weird
Version: 1.0
Architecture: amd64
"""


def test_reduce_keeps_the_highest_version_per_name_and_architecture() -> None:
    reduced = archive.reduce_packages(io.BytesIO(lzma.decompress(lzma.compress(PACKAGES))))
    assert reduced == {
        "libc6": {"amd64": "2.36-9+deb12u10", "i386": "2.36-9+deb12u7"},
        "tzdata": {"all": "2025b-0+deb12u1"},
        "weird": {"amd64": "1.0"},  # the one that is a Debian version
    }


def test_reduce_refuses_huge_lines_and_indexes() -> None:
    with pytest.raises(ArchiveError, match="longer than"):
        archive.reduce_packages(
            io.BytesIO(b"Package: x\nDescription: " + b"a" * (archive.MAX_LINE_BYTES + 1))
        )
    with pytest.raises(ArchiveError, match="larger than 100 bytes"):
        archive.reduce_packages(io.BytesIO(PACKAGES), limit=100)


# -- pending updates ----------------------------------------------------------------------------
def suite(name: str, packages: dict[str, dict[str, str]], **kwargs: object) -> SuiteIndex:
    return SuiteIndex(name=name, security=name.endswith("-security"), packages=packages, **kwargs)  # type: ignore[arg-type]


def installed(name: str, version: str, arch: str = "amd64") -> dict[str, str]:
    return {"name": name, "version": version, "architecture": arch}


@pytest.mark.parametrize(
    ("have", "offered", "pending"),
    [
        ("2.36-9+deb12u4", "2.36-9+deb12u10", True),  # u10 > u4: numeric, not string order
        ("2.36-9+deb12u10", "2.36-9+deb12u9", False),
        ("1:1.0-1", "2.0-1", False),  # the epoch wins
        ("1.0-1", "1:0.9-1", True),
        ("1.0~rc1-1", "1.0-1", True),  # ~ sorts before the release
        ("1.0-1", "1.0~rc1-1", False),
        ("3.0.11-1~deb12u2", "3.0.11-1~deb12u3", True),
        ("3.0.11-1~deb12u2", "3.0.11-1", True),  # a backport-style ~ is below the real upload
        ("1.2-3", "1.2-3+b1", True),  # binNMU
        ("1.2-3+b1", "1.2-3", False),
        ("1.2-3", "1.2-3", False),
        ("1.0", "1.0-0", False),  # equal in Debian's ordering
        ("7.88.1-10+deb12u8", "7.88.1-10+deb12u12", True),
        ("2024a-0+deb12u1", "2025b-0+deb12u1", True),
    ],
)
def test_real_debian_version_orderings(have: str, offered: str, pending: bool) -> None:
    found = archive.pending_updates(
        [installed("pkg", have)], [suite("bookworm-updates", {"pkg": {"amd64": offered}})], "amd64"
    )
    assert found == ([PendingUpdate("pkg", have, offered, False)] if pending else [])


def test_the_highest_candidate_across_suites_and_the_security_flag() -> None:
    suites = [
        suite("bookworm", {"openssl": {"amd64": "3.0.15-1~deb12u1"}, "tzdata": {"all": "2024a-0+deb12u1"}}),
        suite("bookworm-updates",
              {"tzdata": {"all": "2025b-0+deb12u1"}, "openssl": {"amd64": "3.0.16-1~deb12u1"}}),
        suite("bookworm-security",
              {"openssl": {"amd64": "3.0.17-1~deb12u2"}, "curl": {"amd64": "7.88.1-10+deb12u12"}}),
    ]  # fmt: skip
    image = [
        installed("openssl", "3.0.15-1~deb12u1"),
        installed("tzdata", "2024a-0+deb12u1", "all"),
        installed("curl", "7.88.1-10+deb12u12"),
        installed("local-only", "1.0"),
    ]
    assert archive.pending_updates(image, suites, "amd64") == [
        PendingUpdate("openssl", "3.0.15-1~deb12u1", "3.0.17-1~deb12u2", True),
        PendingUpdate("tzdata", "2024a-0+deb12u1", "2025b-0+deb12u1", False),
    ]
    # a security suite offering a fix below a newer -updates version: still a pending security fix
    suites[2] = suite("bookworm-security", {"openssl": {"amd64": "3.0.15-1~deb12u2"}})
    (openssl, _) = archive.pending_updates(image, suites, "amd64")
    assert openssl == PendingUpdate("openssl", "3.0.15-1~deb12u1", "3.0.16-1~deb12u1", True)


def test_architectures_all_native_and_foreign() -> None:
    suites = [
        suite(
            "s",
            {
                "became-any": {"amd64": "2.0-1"},  # was arch all, now built per architecture
                "libfoo": {"amd64": "1.1", "i386": "1.2"},
                "only-arm": {"arm64": "9.0"},
            },
        )
    ]
    image = [
        installed("became-any", "1.0-1", "all"),
        installed("libfoo", "1.1"),
        installed("libfoo", "1.0", "i386"),
        installed("only-arm", "1.0"),
    ]
    assert archive.pending_updates(image, suites, "amd64") == [
        PendingUpdate("became-any", "1.0-1", "2.0-1", False),
        PendingUpdate("libfoo:i386", "1.0", "1.2", False),
    ]


def test_not_automatic_suites_only_upgrade_what_they_installed() -> None:
    backports = {"kernel": {"amd64": "6.12-1~bpo12+1"}, "tool": {"amd64": "2.0-1~bpo12+1"}}
    stable = {"kernel": {"amd64": "6.1-1"}, "tool": {"amd64": "1.0-1"}}
    image = [installed("kernel", "6.1-1"), installed("tool", "2.0-1~bpo12+0")]
    following = suite("bookworm-backports", backports, automatic=False, but_automatic_upgrades=True)
    assert archive.pending_updates(image, [suite("bookworm", stable), following], "amd64") == [
        PendingUpdate("tool", "2.0-1~bpo12+0", "2.0-1~bpo12+1", False)  # installed from backports: follows it
    ]
    experimental = suite("experimental", backports, automatic=False)
    assert archive.pending_updates(image, [suite("bookworm", stable), experimental], "amd64") == []


def test_invalid_versions_never_count() -> None:
    suites = [suite("s", {"a": {"amd64": "not a version!"}, "b": {"amd64": "2.0"}})]
    image = [installed("a", "1.0"), installed("b", "also not!"), {"name": "c"}]
    assert archive.pending_updates(image, suites, "amd64") == []


def test_merge_keeps_the_highest_version() -> None:
    merged = archive.merge_indexes(
        [{"a": {"amd64": "1.0"}}, {"a": {"amd64": "1:0.1", "all": "3"}, "b": {"all": "1"}}]
    )
    assert merged == {"a": {"amd64": "1:0.1", "all": "3"}, "b": {"all": "1"}}


# -- signatures and keys ------------------------------------------------------------------------
GOOD = (
    "[GNUPG:] NEWSIG\n"
    "[GNUPG:] GOODSIG 6ED0E7B82643E131 Debian Archive Automatic Signing Key (12/bookworm)\n"
    "[GNUPG:] VALIDSIG 4CB50190207B4758A3F73A796ED0E7B82643E131 2026-11-30 1796005338 0 4 0 1 8 01 "
    "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8\n"
)


def test_gpgv_verdicts() -> None:
    assert archive.gpgv_verdict(GOOD) is None
    assert archive.gpgv_verdict(GOOD + "[GNUPG:] NEWSIG\n[GNUPG:] NO_PUBKEY 78DBA3BC47EF2265\n") is None
    assert archive.gpgv_verdict(GOOD, ["B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8"]) is None  # primary key
    assert archive.gpgv_verdict(GOOD, ["6ED0E7B82643E131"]) is None  # long key id of the subkey
    assert "not signed by a key" in str(archive.gpgv_verdict(GOOD, ["0" * 40]))
    assert "BAD" in str(archive.gpgv_verdict(GOOD + "[GNUPG:] BADSIG 78DBA3BC47EF2265 x\n"))
    assert "no good signature" in str(archive.gpgv_verdict("[GNUPG:] NO_PUBKEY 6ED0E7B82643E131\n"))
    sha1 = GOOD.replace(" 1 8 01 ", " 1 2 01 ")
    assert "no good signature" in str(archive.gpgv_verdict(sha1))
    expired = "[GNUPG:] EXPKEYSIG 6ED0E7B82643E131 x\n" + GOOD.splitlines()[2]
    assert "EXPKEYSIG" in str(archive.gpgv_verdict(expired))
    assert archive.gpgv_verdict("") is not None


@pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg makes the reference armor")
def test_dearmor_matches_gpg(tmp_path: Path) -> None:
    keyring = Path("/usr/share/keyrings/debian-archive-bookworm-automatic.gpg")
    if not keyring.exists():
        pytest.skip("no Debian keyring")
    armored = subprocess.run(
        ["gpg", "--homedir", str(tmp_path), "--enarmor"],
        input=keyring.read_bytes(),
        capture_output=True,
        check=True,
    ).stdout.decode()
    block = armored.replace("PGP ARMORED FILE", "PGP PUBLIC KEY BLOCK")
    as_deb822 = "\n".join(
        " " + (line or ".") for line in block.splitlines()
    )  # how a Signed-By field holds it
    assert archive.dearmor(as_deb822) == keyring.read_bytes()
    lines = block.splitlines()
    body = next(i for i, line in enumerate(lines) if line and not line.startswith(("-----", "Comment")))
    lines[body] = ("B" if lines[body][0] != "B" else "C") + lines[body][1:]
    with pytest.raises(ArchiveError, match="checksum does not match"):
        archive.dearmor("\n".join(lines))


def test_dearmor_refuses_what_is_not_a_key_block() -> None:
    with pytest.raises(ArchiveError, match="not an armored public key block"):
        archive.dearmor("-----BEGIN PGP MESSAGE-----\n\nabc\n-----END PGP MESSAGE-----")
    bad = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----"
    with pytest.raises(ArchiveError, match="not valid base64"):
        archive.dearmor(bad)
    data = base64.b64encode(b"key").decode()
    assert (
        archive.dearmor(f"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n{data}\n-----END PGP PUBLIC KEY BLOCK-----")
        == b"key"
    )
