"""Pending updates from the package archive's own indexes: no instance, no I/O (pure).

An image's manifest records its installed packages, dpkg architecture and apt sources
(``/etc/apt/sources.list``, ``sources.list.d/*.list`` one-line entries and ``*.sources`` deb822
stanzas) and the mirror lists apt's ``mirror+file:`` method reads (``/etc/apt/mirrors/*.list``,
as Debian's cloud images and AMIs use them). This module turns the sources, a mirror list
resolved the way apt's mirror method picks its mirrors, into the index locations apt itself would read
(``<uri>/dists/<suite>/InRelease`` and ``<component>/binary-<arch>/Packages``), reads a verified
Release file and a Packages index into small values, and computes what ``apt-get dist-upgrade``
would upgrade: for each installed package, the highest version of that name for its
architecture (or ``all``) across the image's suites, when higher than the installed one. The
downloads, the signature check and the cache are ``hooks/apt_archive.py``'s.

Whatever it cannot answer faithfully (no sources recorded, a scheme other than http/https, a
mirror list that is not recorded or names mirrors it cannot read, a flat repository, options that
change what apt trusts or fetches, hostile sizes) raises
:class:`ArchiveError` with the reason: the caller then checks with a throwaway instance instead.

Parsing of deb822 paragraphs (``.sources`` files, Release, Packages) and every version
comparison are python-debian's (imported inside the functions: DAG parsing never loads it).
"""

from __future__ import annotations

import base64
import ipaddress
import posixpath
import re
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from golden_image.decisions import PendingUpdate

MAX_SOURCES_BYTES = 1 << 20
"""All apt source files of one image together (real ones are a few hundred bytes)."""
MAX_ENTRIES = 64
"""(uri, suite) pairs after expansion; more than this is not a real image's sources."""
MAX_INDEXES = 256
MAX_LINE_BYTES = 1 << 20
"""One line of a Packages index (the longest in bookworm main is ~75 KB)."""
MAX_INDEX_BYTES = 1 << 30
"""A decompressed Packages index (bookworm main amd64 is ~50 MB)."""
SCHEMES = ("http", "https")
METADATA_HOSTS = {
    "fd00:ec2::254",  # EC2's instance metadata over IPv6 (a unique-local address, not link-local)
    "100.100.100.200",  # Alibaba Cloud's metadata (shared address space)
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
}
"""Cloud metadata endpoints that are not link-local addresses (169.254.169.254 and fe80::/10 are
refused as link-local): a source or mirror naming one is never fetched by the worker."""
MIRROR_DIR = "/etc/apt/mirrors/"
MAX_MIRROR_FILES = 16
"""Mirror lists the capture records (``/etc/apt/mirrors/*.list``, in name order)."""
MAX_MIRROR_BYTES = 64 << 10
"""One mirror list (Debian's AMIs: 38 bytes, one URI; apt itself reads at most 1 MiB)."""
MAX_MIRRORS = 16
"""Usable entries in one mirror list."""
MIRROR_TRIES = 3
"""Mirrors of one list tried for a suite's InRelease before the check gives up (apt tries all)."""
MIRROR_SELECTORS = {"Architecture", "Codename", "Component", "Language", "Release", "Suite"}
"""apt's mirror-method tags that pick a different mirror per file (not modelled: refused)."""
KEYRING_DIRS = ("/usr/share/keyrings/", "/etc/apt/keyrings/", "/etc/apt/trusted.gpg.d/")
"""Where a ``signed-by`` keyring path may point for the worker to use its copy."""
WEAK_HASHES = {"1", "2", "3"}
"""OpenPGP hash algorithm ids apt refuses for Release signatures: MD5, SHA1, RIPEMD160."""

# one-line options and deb822 fields (lower case) that do not change what is fetched or trusted
HARMLESS = {"lang", "languages", "target", "targets", "pdiffs", "by-hash", "check-date", "date-max-future",
            "valid-until-min", "valid-until-max", "enabled", "types", "uris", "suites", "components",
            "architectures", "arch", "arch+", "arch-", "architectures-add", "architectures-remove",
            "signed-by", "check-valid-until"}  # fmt: skip
# options that change trust or what is fetched: apt would accept things this reader cannot check
REFUSED = {
    "trusted": "trusted=yes makes apt accept the archive without a valid signature",
    "allow-insecure": "allow-insecure lets apt use an unsigned archive",
    "allow-weak": "allow-weak lets apt accept weak signatures",
    "allow-downgrade-to-insecure": "allow-downgrade-to-insecure lets apt accept an unsigned archive",
    "inrelease-path": "inrelease-path moves the Release file",
    "snapshot": "snapshot= reads a dated snapshot of the archive",
}
SUITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*(/[A-Za-z0-9][A-Za-z0-9._+~-]*)*$")
COMPONENT = SUITE
ARCH = re.compile(r"^[a-z0-9][a-z0-9-]*$")
FINGERPRINT = re.compile(r"^[0-9A-Fa-f]{16}([0-9A-Fa-f]{24})?!?$")


class ArchiveError(Exception):
    """The archive's indexes cannot answer for this image; the message says why (the caller
    falls back to a throwaway instance)."""


@dataclass(frozen=True)
class AptSource:
    """One ``deb`` entry: a URI and suite with its components and the options that matter here."""

    uri: str
    suite: str
    components: tuple[str, ...]
    architectures: tuple[str, ...] = ()
    """From ``arch=`` / ``Architectures``; empty means the image's own architectures."""
    arch_add: tuple[str, ...] = ()
    arch_remove: tuple[str, ...] = ()
    keyrings: tuple[str, ...] = ()
    """``signed-by`` keyring paths."""
    fingerprints: tuple[str, ...] = ()
    """``signed-by`` key fingerprints (a signature must come from one of them)."""
    inline_key: str = ""
    """A deb822 ``Signed-By`` that holds an armored key block itself."""
    check_valid_until: bool = True
    origin: str = ""
    """``file:line`` it came from, for messages."""
    mirrors: tuple[str, ...] = ()
    """From a mirror list: the other mirrors apt would try after ``uri``, in order."""
    mirror_list: str = ""
    """The ``mirror+file:`` URI of the source when ``uri`` came from a mirror list."""

    def arches_for(self, image_arches: Sequence[str]) -> list[str]:
        base = list(self.architectures) or list(image_arches)
        wanted = [*base, *(a for a in self.arch_add if a not in base)]
        return [a for a in wanted if a not in self.arch_remove]


@dataclass(frozen=True)
class SuitePlan:
    """One (uri, suite) of the image's sources, its entries merged: what to fetch and trust."""

    uri: str
    suite: str
    components: tuple[str, ...]
    arches: tuple[str, ...]
    keyrings: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()
    inline_key: str = ""
    check_valid_until: bool = True
    origins: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()
    """Mirrors to try, in order, when ``uri`` (the first of the mirror list) cannot be reached."""
    mirror_list: str = ""
    """The ``mirror+file:`` URI the source names, when it has one."""

    @property
    def name(self) -> str:
        return f"{self.uri} {self.suite}"

    @property
    def candidates(self) -> tuple[str, ...]:
        """``uri`` and then the mirror list's other mirrors (at most :data:`MIRROR_TRIES`)."""
        return (self.uri, *self.mirrors)[:MIRROR_TRIES]

    @property
    def release_url(self) -> str:
        return release_url(self.uri, self.suite)


def release_url(uri: str, suite: str) -> str:
    return f"{uri}/dists/{suite}/InRelease"


# -- sources ------------------------------------------------------------------------------------
def _check_uri(uri: str, where: str) -> str:
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise ArchiveError(f"{where}: URI {uri!r} cannot be parsed ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = scheme or "none"
        raise ArchiveError(f"{where}: URI scheme {shown!r} ({uri[:80]}) is not read from the archive indexes")
    if parts.username or parts.password:
        raise ArchiveError(f"{where}: a source URI with credentials is not fetched by the worker")
    if not parts.hostname or parts.query or parts.fragment:
        raise ArchiveError(f"{where}: URI {uri[:80]!r} has no host, or a query or fragment")
    address = _host_address(parts.hostname)
    if address is not None and (address.is_link_local or address.is_multicast or address.is_unspecified):
        raise ArchiveError(f"{where}: {parts.hostname} is a link-local or special address; not fetched")
    if parts.hostname.rstrip(".") in METADATA_HOSTS or str(address) in METADATA_HOSTS:
        raise ArchiveError(f"{where}: {parts.hostname} is a cloud metadata endpoint; not fetched")
    return uri.rstrip("/")


def _host_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a URI's host is, as the resolver would read it: dotted quads, but also the
    decimal, octal, hex and short spellings ``inet_aton`` accepts (``2852039166`` is
    169.254.169.254), and an IPv4-mapped IPv6 address as the IPv4 one. ``None`` for a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if ":" in host or not re.fullmatch(r"[0-9a-fA-FxX.]+", host):
            return None
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# -- mirror lists (apt-transport-mirror) ---------------------------------------------------------
def mirror_list_path(uri: str, where: str) -> str | None:
    """The local file a ``mirror+file:`` source URI names (``mirror+file:/p`` or
    ``mirror+file:///p``), or ``None`` when the URI is not a mirror-method one. Remote mirror lists
    (``mirror://``, ``mirror+http(s)://``) and other wrappings are refused."""
    scheme, sep, rest = uri.partition(":")
    scheme = scheme.lower()
    if not sep or "mirror" not in scheme.split("+"):
        return None
    if scheme != "mirror+file":
        raise ArchiveError(
            f"{where}: URI scheme {scheme[:40]!r} ({uri[:80]}): only a local mirror+file: list is "
            "resolved; a remote or wrapped mirror list is not fetched"
        )
    if rest.startswith("//"):
        host, slash, tail = rest[2:].partition("/")
        if host:
            raise ArchiveError(f"{where}: mirror list URI {uri[:80]!r} names a host; not read")
        rest = slash + tail
    path = unquote(rest.rstrip("/"))
    if not path.startswith("/") or "\x00" in path or posixpath.normpath(path) != path:
        raise ArchiveError(f"{where}: mirror list URI {uri[:80]!r} is not a plain absolute path")
    return path


def _mirror_type_and_priority(tags: str, where: str) -> tuple[set[str], int]:
    """apt's metadata after the tab: ``key:value`` items separated by spaces or tabs. ``priority``
    orders the mirrors, ``type`` limits them to index files or packages; the tags that select a
    mirror per file (arch, codename, component, lang, release, suite) are refused; other keys and
    items without a colon are ignored, as apt ignores them."""
    types: set[str] = set()
    priority = 1 << 64  # apt: no priority sorts after every explicit one
    for item in tags.split():
        name, colon, value = item.partition(":")
        if not colon or not name:
            continue
        if name == "priority":
            if not re.fullmatch(r"[0-9]{1,19}", value):
                raise ArchiveError(f"{where}: mirror priority {value[:20]!r} is not a number")
            priority = int(value)
            continue
        key = {"arch": "Architecture", "lang": "Language"}.get(name, name[0].upper() + name[1:])
        if key in MIRROR_SELECTORS:
            raise ArchiveError(
                f"{where}: mirror tag {item[:40]!r} makes apt choose a mirror per file; not modelled"
            )
        if key == "Type":
            types.add(value)
    return types, priority


def parse_mirror_list(text: str, path: str) -> list[str]:
    """The archive URIs apt's mirror method would try for index files, in its order.

    The format (``man apt-transport-mirror``): one URI a line; empty lines and lines starting
    with ``#`` ignored; optional metadata after a tab. apt tries the lowest ``priority`` first
    (none: last) and picks at random among equal ones: this keeps the file's order there, one of
    apt's choices (every mirror serves the same signed indexes). Entries limited to ``type:deb``
    serve no index file and are skipped. Every other entry must be one the worker may fetch
    (http/https, no credentials, no link-local or metadata host): with one it cannot read, apt
    might read that mirror, so the whole list is refused."""
    if len(text) > MAX_MIRROR_BYTES or len(text.encode("utf-8", "replace")) > MAX_MIRROR_BYTES:
        raise ArchiveError(f"{path}: the mirror list is over {MAX_MIRROR_BYTES} bytes; not read")
    entries: list[tuple[int, int, str]] = []
    for number, line in enumerate(text.split("\n"), 1):
        where = f"{path}:{number}"
        if not line or line.startswith("#"):
            continue
        uri, _tab, tags = line.partition("\t")
        if not uri or any(c.isspace() or not c.isprintable() or not c.isascii() for c in uri):
            raise ArchiveError(
                f"{where}: {uri[:80]!r} is not a URI apt can use (spaces, controls or non-ASCII)"
            )
        types, priority = _mirror_type_and_priority(tags, where)
        if types and "index" not in types:
            continue
        if mirror_list_path(uri, where) is not None:
            raise ArchiveError(f"{where}: a mirror list cannot name another mirror list (apt refuses it too)")
        entries.append((priority, number, _check_uri(uri, where)))
        if len(entries) > MAX_MIRRORS:
            raise ArchiveError(f"{path}: more than {MAX_MIRRORS} mirrors; not read")
    if not entries:
        raise ArchiveError(f"{path}: the mirror list names no mirror for index files (apt fails on it too)")
    return list(dict.fromkeys(uri for _, _, uri in sorted(entries)))


def _resolve(uri: str, where: str, mirrors: Mapping[str, str] | None) -> dict[str, Any]:
    """The AptSource fields of one source URI: itself when plain http(s), else the mirrors of the
    recorded mirror list it names."""
    path = mirror_list_path(uri, where)
    if path is None:
        return {"uri": _check_uri(uri, where)}
    if mirrors is None:
        raise ArchiveError(
            f"{where}: {uri[:80]} is a mirror list and the image manifest records none "
            "(captured before apt_mirrors were recorded)"
        )
    if not isinstance(mirrors, Mapping):
        raise ArchiveError("the manifest's apt_mirrors is not a mapping of file -> text")
    text = mirrors.get(path)
    if text is None:
        raise ArchiveError(
            f"{where}: mirror list {path[:80]} is not recorded (capture records at most "
            f"{MAX_MIRROR_FILES} files of {MAX_MIRROR_BYTES} bytes as {MIRROR_DIR}*.list)"
        )
    if not isinstance(text, str):
        raise ArchiveError(f"{path}: not text")
    first, *others = parse_mirror_list(text, path)
    return {"uri": first, "mirrors": tuple(others), "mirror_list": f"mirror+file:{path}"}


def _check_suite(suite: str, components: Sequence[str], where: str) -> None:
    if suite.endswith("/"):
        raise ArchiveError(f"{where}: flat repository {suite!r} (no dists/ layout) is not read")
    if not SUITE.match(suite) or ".." in suite:
        raise ArchiveError(f"{where}: suite {suite[:80]!r} is not a plain suite name")
    if not components:
        raise ArchiveError(f"{where}: no components")
    for component in components:
        if not COMPONENT.match(component) or ".." in component:
            raise ArchiveError(f"{where}: component {component[:80]!r} is not a plain name")


def _arches(value: str, where: str) -> tuple[str, ...]:
    found = tuple(a for a in re.split(r"[,\s]+", value.strip()) if a)
    for arch in found:
        if not ARCH.match(arch):
            raise ArchiveError(f"{where}: architecture {arch[:40]!r} is not a dpkg architecture")
    return found


def _signed_by(value: str, where: str) -> dict[str, Any]:
    """``signed-by``: keyring paths, fingerprints, or (deb822 only) an armored key block."""
    if "BEGIN PGP PUBLIC KEY BLOCK" in value:
        return {"inline_key": value}
    keyrings, fingerprints = [], []
    for item in (i for i in re.split(r"[,\s]+", value.strip()) if i):
        if FINGERPRINT.match(item):
            fingerprints.append(item.rstrip("!").upper())
        elif item.startswith("/"):
            keyrings.append(item)
        else:
            raise ArchiveError(f"{where}: signed-by {item[:80]!r} is not a keyring path or a fingerprint")
    return {"keyrings": tuple(keyrings), "fingerprints": tuple(fingerprints)}


def _options(options: Mapping[str, str], where: str) -> dict[str, Any]:
    """The options (one-line ``key=value`` or deb822 fields, keys lower case) as AptSource fields."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in REFUSED:
            if key in ("trusted", "allow-insecure", "allow-weak", "allow-downgrade-to-insecure") and (
                value.strip().lower() in ("no", "false", "0")
            ):
                continue
            raise ArchiveError(f"{where}: {REFUSED[key]}; checked with an instance instead")
        if key not in HARMLESS and not key.startswith("x-"):
            raise ArchiveError(f"{where}: option {key[:40]!r} is not known to the archive index reader")
        if key in ("arch", "architectures"):
            out["architectures"] = _arches(value, where)
        elif key in ("arch+", "architectures-add"):
            out["arch_add"] = _arches(value, where)
        elif key in ("arch-", "architectures-remove"):
            out["arch_remove"] = _arches(value, where)
        elif key == "signed-by":
            out.update(_signed_by(value, where))
        elif key == "check-valid-until":
            out["check_valid_until"] = value.strip().lower() not in ("no", "false", "0")
    return out


def parse_one_line(text: str, path: str, mirrors: Mapping[str, str] | None = None) -> list[AptSource]:
    """``deb [ key=value ... ] uri suite component...`` lines; ``deb-src`` and comments skipped.
    ``mirrors``: the recorded mirror lists a ``mirror+file:`` URI is resolved from."""
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{path}:{number}"
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, *tail = line.split(None, 1)
        rest = tail[0] if tail else ""
        if kind == "deb-src":
            continue
        if kind != "deb":
            raise ArchiveError(f"{where}: entry type {kind[:40]!r} is not known (deb, deb-src)")
        rest = rest.strip()
        options: dict[str, str] = {}
        if rest.startswith("["):
            close = rest.find("]")
            if close < 0:
                raise ArchiveError(f"{where}: '[' of the options is never closed")
            for item in rest[1:close].split():
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise ArchiveError(f"{where}: option {item[:40]!r} is not key=value")
                key = key.lower()
                if key.endswith(("+", "-")) and key[:-1] == "arch":
                    pass
                elif key.endswith(("+", "-")):
                    raise ArchiveError(f"{where}: option {key[:40]!r} is not known to the index reader")
                options[key] = value
            rest = rest[close + 1 :].strip()
        fields = rest.split()
        if len(fields) < 2:
            raise ArchiveError(f"{where}: a deb line needs a URI and a suite")
        uri, suite, components = fields[0], fields[1], tuple(fields[2:])
        resolved = _resolve(uri, where, mirrors)
        _check_suite(suite, components, where)
        found.append(
            AptSource(
                suite=suite, components=components, origin=where, **resolved, **_options(options, where)
            )
        )
    return found


def parse_deb822(text: str, path: str, mirrors: Mapping[str, str] | None = None) -> list[AptSource]:
    """``.sources`` stanzas (Types, URIs, Suites, Components, Enabled, Architectures, Signed-By,
    ...); one stanza may name several URIs and suites. ``Enabled: no`` and deb-src only are skipped."""
    from debian.deb822 import Deb822

    found = []
    stanzas = Deb822.iter_paragraphs(text.splitlines(), use_apt_pkg=False)
    for n, stanza in enumerate(stanzas, 1):
        where = f"{path}: stanza {n}"
        fields = {key.lower(): value for key, value in stanza.items()}
        if fields.get("enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        types = fields.get("types", "").split()
        if not types:
            raise ArchiveError(f"{where}: no Types")
        unknown = [t for t in types if t not in ("deb", "deb-src")]
        if unknown:
            raise ArchiveError(f"{where}: type {unknown[0][:40]!r} is not known (deb, deb-src)")
        if "deb" not in types:
            continue
        uris, suites = fields.get("uris", "").split(), fields.get("suites", "").split()
        if not uris or not suites:
            raise ArchiveError(f"{where}: a stanza needs URIs and Suites")
        components = tuple(fields.get("components", "").split())
        if len(uris) * len(suites) > MAX_ENTRIES:
            raise ArchiveError(f"{where}: {len(uris)} URIs x {len(suites)} suites; not read")
        options = _options(fields, where)
        for uri in uris:
            resolved = _resolve(uri, where, mirrors)
            for suite in suites:
                _check_suite(suite, components, where)
                found.append(
                    AptSource(suite=suite, components=components, origin=where, **resolved, **options)
                )
    return found


def parse_sources(
    apt_sources: Mapping[str, str] | None, apt_mirrors: Mapping[str, str] | None = None
) -> list[AptSource]:
    """Every ``deb`` entry of the manifest's ``apt_sources`` ({path: text}), in apt's file order;
    ``mirror+file:`` URIs resolved from its ``apt_mirrors`` ({path: text})."""
    if apt_sources is None:
        raise ArchiveError("the image manifest records no apt sources (captured before they were recorded)")
    if not isinstance(apt_sources, Mapping):
        raise ArchiveError("the manifest's apt_sources is not a mapping of file -> text")
    total = sum(len(str(text)) for text in apt_sources.values())
    if total > MAX_SOURCES_BYTES:
        raise ArchiveError(f"the image's apt sources are {total} bytes (over {MAX_SOURCES_BYTES}); not read")
    found: list[AptSource] = []
    for path in sorted(apt_sources, key=lambda p: (p != "/etc/apt/sources.list", p)):
        text = apt_sources[path]
        if not isinstance(text, str):
            raise ArchiveError(f"{path}: not text")
        if path == "/etc/apt/sources.list" or path.endswith(".list"):
            found += parse_one_line(text, path, apt_mirrors)
        elif path.endswith(".sources"):
            found += parse_deb822(text, path, apt_mirrors)
        # apt ignores other names in sources.list.d (.save, .disabled, ...): so does this
    if len(found) > MAX_ENTRIES:
        raise ArchiveError(f"the image lists more than {MAX_ENTRIES} deb entries; not read")
    return found


def plan_suites(sources: Sequence[AptSource], image_arches: Sequence[str]) -> list[SuitePlan]:
    """The sources grouped by (uri, suite) as apt merges them: components and architectures
    together; their signed-by must agree (apt refuses conflicting values too)."""
    grouped: dict[tuple[str, str], list[AptSource]] = {}
    for source in sources:  # apt keys a source by the URI it names: a mirror list's, or the archive's
        grouped.setdefault((source.mirror_list or source.uri, source.suite), []).append(source)
    plans, indexes = [], 0
    for (named, suite), entries in grouped.items():
        uri, mirrors = entries[0].uri, entries[0].mirrors
        trust = {(e.keyrings, e.fingerprints, e.inline_key) for e in entries}
        if len(trust) > 1:
            raise ArchiveError(f"{named} {suite}: its entries name different signed-by keys")
        keyrings, fingerprints, inline_key = trust.pop()
        components = tuple(dict.fromkeys(c for e in entries for c in e.components))
        arches = tuple(dict.fromkeys(a for e in entries for a in e.arches_for(image_arches)))
        indexes += len(components) * max(1, len(arches))
        if indexes > MAX_INDEXES:
            raise ArchiveError(f"the image's sources name more than {MAX_INDEXES} Packages indexes; not read")
        plans.append(
            SuitePlan(
                uri,
                suite,
                components,
                arches,
                keyrings,
                fingerprints,
                inline_key,
                all(e.check_valid_until for e in entries),
                tuple(e.origin for e in entries),
                mirrors,
                entries[0].mirror_list,
            )
        )
    return plans


def image_architectures(manifest: Mapping[str, Any]) -> list[str]:
    """The dpkg architecture, then every other architecture a package is installed for (multiarch)."""
    native = str(manifest.get("architecture") or "")
    if not ARCH.match(native):
        raise ArchiveError("the image manifest records no dpkg architecture")
    foreign = sorted(
        {str(p.get("architecture")) for p in manifest.get("packages", [])} - {native, "all", "", "None"}
    )
    return [native, *(a for a in foreign if ARCH.match(a))]


# -- Release ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexFile:
    path: str
    """Relative to ``dists/<suite>/``, e.g. ``main/binary-amd64/Packages.xz``."""
    sha256: str
    size: int
    uncompressed_size: int | None


@dataclass(frozen=True)
class ReleaseFacts:
    """What a verified Release file says that the check needs."""

    suite: str
    codename: str
    label: str
    origin: str
    date: float | None
    valid_until: float | None
    not_automatic: bool
    but_automatic_upgrades: bool
    acquire_by_hash: bool
    architectures: tuple[str, ...]
    no_arch_all_packages: bool
    """``No-Support-for-Architecture-all: Packages``: arch ``all`` is inside binary-<arch>."""
    files: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    """path -> (sha256, size) from the SHA256 field."""

    @property
    def security(self) -> bool:
        """A security suite: ``Label: Debian-Security`` or a suite/codename ending in -security."""
        return self.label == "Debian-Security" or any(
            n.endswith("-security") for n in (self.suite, self.codename) if n
        )

    def index_file(self, component: str, arch: str) -> IndexFile | None:
        """The Packages index of ``component``/``arch`` apt would fetch (xz, else gz, else plain)."""
        base = f"{component}/binary-{arch}/Packages"
        plain = self.files.get(base)
        for candidate in (f"{base}.xz", f"{base}.gz", base):
            if candidate in self.files:
                digest, size = self.files[candidate]
                return IndexFile(candidate, digest, size, plain[1] if plain else None)
        return None


def _date(value: str | None, what: str) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value.strip()).timestamp()
    except (TypeError, ValueError, IndexError):
        raise ArchiveError(f"Release {what} {value[:60]!r} is not a date") from None


def parse_release(text: str) -> ReleaseFacts:
    """A Release file (the verified content of an InRelease) as :class:`ReleaseFacts`."""
    from debian.deb822 import Release

    try:
        release = Release(text)
    except (ValueError, EOFError) as exc:
        raise ArchiveError(f"the Release file cannot be parsed ({exc})") from None
    files: dict[str, tuple[str, int]] = {}
    for entry in release.get("SHA256") or []:
        try:
            digest, size, name = entry["sha256"].lower(), int(entry["size"]), entry["name"]
        except (KeyError, ValueError, TypeError):
            continue
        if re.fullmatch(r"[0-9a-f]{64}", digest):
            files[name] = (digest, size)
    if not files:
        raise ArchiveError("the Release file lists no SHA256 sums")
    return ReleaseFacts(
        suite=release.get("Suite", ""),
        codename=release.get("Codename", ""),
        label=release.get("Label", ""),
        origin=release.get("Origin", ""),
        date=_date(release.get("Date"), "Date"),
        valid_until=_date(release.get("Valid-Until"), "Valid-Until"),
        not_automatic=release.get("NotAutomatic", "").strip().lower() == "yes",
        but_automatic_upgrades=release.get("ButAutomaticUpgrades", "").strip().lower() == "yes",
        acquire_by_hash=release.get("Acquire-By-Hash", "").strip().lower() == "yes",
        architectures=tuple(release.get("Architectures", "").split()),
        no_arch_all_packages="Packages" in release.get("No-Support-for-Architecture-all", "").split(),
        files=files,
    )


def check_release(facts: ReleaseFacts, suite: str, *, now: float, check_valid_until: bool = True) -> None:
    """Refuse a Release that is expired or that is another suite's (a mirror cannot hand out
    bookworm's signed Release for bookworm-security and hide its updates)."""
    if suite not in (facts.suite, facts.codename):
        raise ArchiveError(
            f"the signed Release for {suite} is for suite {facts.suite!r} / codename {facts.codename!r}"
        )
    if check_valid_until and facts.valid_until is not None and facts.valid_until < now:
        raise ArchiveError(f"the Release file of {suite} expired (Valid-Until passed): the mirror is stale")


def index_files(facts: ReleaseFacts, component: str, arches: Sequence[str]) -> list[tuple[str, IndexFile]]:
    """(arch, file) of each Packages index apt reads for ``component``: one per architecture the
    Release supports, plus binary-all when the archive keeps arch ``all`` apart."""
    wanted = [a for a in arches if not facts.architectures or a in facts.architectures]
    if "all" in facts.architectures and not facts.no_arch_all_packages:
        wanted.append("all")
    found = []
    for arch in dict.fromkeys(wanted):
        index = facts.index_file(component, arch)
        if index is not None:
            found.append((arch, index))
    return found


def by_hash_path(index: IndexFile) -> str:
    directory = index.path.rsplit("/", 1)[0]
    return f"{directory}/by-hash/SHA256/{index.sha256}"


# -- Packages -----------------------------------------------------------------------------------
Reduced = dict[str, dict[str, str]]
"""A Packages index reduced to package name -> {architecture: highest version}."""


def _lines(stream: IO[bytes], limit: int) -> Iterator[bytes]:
    total = 0
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES:
            raise ArchiveError(f"a Packages index line is longer than {MAX_LINE_BYTES} bytes; refused")
        total += len(line)
        if total > limit:
            raise ArchiveError(f"a Packages index is larger than {limit} bytes decompressed; refused")
        yield line


def reduce_packages(stream: IO[bytes], *, limit: int = MAX_INDEX_BYTES) -> Reduced:
    """Name -> {arch: highest version} of a (decompressed) Packages index, parsed by python-debian."""
    from debian.deb822 import Deb822
    from debian.debian_support import version_compare

    reduced: Reduced = {}
    wanted = ["Package", "Version", "Architecture"]
    for paragraph in Deb822.iter_paragraphs(_lines(stream, limit), fields=wanted, use_apt_pkg=False):
        name, version, arch = (paragraph.get(k, "").strip() for k in wanted)
        if not (name and version and arch):
            continue
        versions = reduced.setdefault(name, {})
        known = versions.get(arch)
        if known is None:
            versions[arch] = version
            continue
        try:
            if version_compare(version, known) > 0:
                versions[arch] = version
        except ValueError:  # not a Debian version (apt would not offer it): keep the valid one
            if not _valid(known):
                versions[arch] = version
    return reduced


def _valid(version: str) -> bool:
    from debian.debian_support import Version

    try:
        Version(version)
    except ValueError:
        return False
    return True


# -- pending updates ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SuiteIndex:
    """One suite of the image's sources with its Packages indexes merged over components."""

    name: str
    """``<uri> <suite>``"""
    security: bool
    packages: Mapping[str, Mapping[str, str]]
    automatic: bool = True
    """False for ``NotAutomatic: yes`` suites (backports, experimental): apt never moves an
    installed package to them by itself."""
    but_automatic_upgrades: bool = False
    """``ButAutomaticUpgrades: yes``: packages installed from this suite follow its upgrades."""


def merge_indexes(indexes: Iterable[Reduced]) -> Reduced:
    """Components of one suite together (highest version per name and architecture)."""
    from debian.debian_support import version_compare

    merged: Reduced = {}
    for index in indexes:
        for name, versions in index.items():
            into = merged.setdefault(name, {})
            for arch, version in versions.items():
                known = into.get(arch)
                if known is None or _newer(version, known, version_compare):
                    into[arch] = version
    return merged


def _newer(a: str, b: str, compare: Any) -> bool:
    try:
        return bool(compare(a, b) > 0)
    except ValueError:
        return False


def pending_updates(
    installed: Iterable[Mapping[str, Any]], suites: Sequence[SuiteIndex], native: str
) -> list[PendingUpdate]:
    """What ``apt-get dist-upgrade`` would upgrade, as :class:`~golden_image.decisions.PendingUpdate`.

    For each installed package: the highest version of its name for its architecture (an arch
    ``all`` or native package may also move to the other) across the suites, if higher than the
    installed one. Candidates from ``NotAutomatic`` suites only count for packages that suite's
    ``ButAutomaticUpgrades`` follows (the installed version is in no automatic suite). Security:
    a security suite offers a version higher than the installed one.
    """
    from debian.debian_support import version_compare

    automatic = [s for s in suites if s.automatic]
    followers = [s for s in suites if not s.automatic and s.but_automatic_upgrades]
    pending = []
    for package in installed:
        name, version, arch = (str(package.get(k) or "") for k in ("name", "version", "architecture"))
        if not (name and version and arch):
            continue
        arches = (native, "all") if arch in (native, "all") else (arch,)
        offered: list[tuple[str, SuiteIndex]] = []
        in_automatic = False
        for suite in automatic:
            for candidate_arch in arches:
                candidate = suite.packages.get(name, {}).get(candidate_arch)
                if candidate is None:
                    continue
                try:
                    order = version_compare(candidate, version)
                except ValueError:
                    continue
                if order > 0:
                    offered.append((candidate, suite))
                elif order == 0:
                    in_automatic = True
        if not in_automatic:
            for suite in followers:
                for candidate_arch in arches:
                    candidate = suite.packages.get(name, {}).get(candidate_arch)
                    if candidate is not None and _newer(candidate, version, version_compare):
                        offered.append((candidate, suite))
        if not offered:
            continue
        best = offered[0][0]
        for candidate, _ in offered[1:]:
            if version_compare(candidate, best) > 0:
                best = candidate
        pending.append(
            PendingUpdate(
                package=name if arch in (native, "all") else f"{name}:{arch}",
                current=version,
                candidate=best,
                security=any(suite.security for _, suite in offered),
            )
        )
    return sorted(pending, key=lambda u: u.package)


# -- keys ---------------------------------------------------------------------------------------
def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def dearmor(text: str) -> bytes:
    """An ASCII-armored public key block (as a deb822 ``Signed-By`` holds it, empty lines written
    as ``.``) as the binary keyring gpgv reads; its CRC24 checksum must match."""
    lines = [line.strip() for line in text.splitlines()]
    lines = ["" if line == "." else line for line in lines]
    try:
        start = lines.index("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        end = lines.index("-----END PGP PUBLIC KEY BLOCK-----", start)
    except ValueError:
        raise ArchiveError("the inline Signed-By key is not an armored public key block") from None
    block = lines[start + 1 : end]
    if "" in block:  # armor headers (Comment:, Version:) end at the first empty line
        block = block[block.index("") + 1 :]
    checksum = next((line for line in block if line.startswith("=")), None)
    body = "".join(line for line in block if line and not line.startswith("="))
    try:
        data = base64.b64decode(body, validate=True)
    except ValueError:
        raise ArchiveError("the inline Signed-By key is not valid base64") from None
    if checksum is not None:
        try:
            expected = int.from_bytes(base64.b64decode(checksum[1:], validate=True), "big")
        except ValueError:
            raise ArchiveError("the inline Signed-By key's checksum is not valid base64") from None
        if _crc24(data) != expected:
            raise ArchiveError("the inline Signed-By key's checksum does not match")
    if not data:
        raise ArchiveError("the inline Signed-By key is empty")
    return data


def gpgv_verdict(status: str, fingerprints: Sequence[str] = ()) -> str | None:
    """``None`` when gpgv's ``--status-fd`` output shows a good signature apt would accept
    (a GOODSIG and a VALIDSIG with a strong hash, no BADSIG, from one of ``fingerprints`` when
    the source names keys), else why not."""
    good, valid, bad = False, [], []
    for line in status.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "[GNUPG:]":
            continue
        kind = words[1]
        if kind == "GOODSIG":
            good = True
        elif kind == "VALIDSIG" and len(words) >= 10:
            primary = words[11] if len(words) > 11 else words[2]
            valid.append((words[2].upper(), primary.upper(), words[9]))
        elif kind in ("BADSIG", "EXPKEYSIG", "REVKEYSIG", "EXPSIG"):
            bad.append(kind)
    if "BADSIG" in bad:
        return "the InRelease signature is BAD (tampered or corrupt)"
    strong = [(fpr, primary) for fpr, primary, algo in valid if algo not in WEAK_HASHES]
    if not good or not strong:
        why = f" ({', '.join(sorted(set(bad)))})" if bad else ""
        return f"no good signature from a trusted key on the InRelease{why}"
    if fingerprints:
        wanted = {f.upper() for f in fingerprints}
        if not any(
            fpr in wanted or primary in wanted or fpr.endswith(tuple(wanted)) for fpr, primary in strong
        ):
            return "the InRelease is not signed by a key its signed-by names"
    return None
