"""hooks/apt_archive.py against a real recorded InRelease (gpgv + Debian's keyring) and a small
archive served over HTTP on 127.0.0.1: signatures, expiry, hash mismatches, 304 revalidation,
the per-run memo, the reduced index on disk; and check_patches choosing its method."""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import json
import lzma
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from golden_image import archive, steps
from golden_image.archive import ArchiveError, SuitePlan
from golden_image.decisions import PendingUpdate, parse_apt_simulation
from golden_image.hooks.apt_archive import DEFAULT_KEYRING, AptArchiveHook
from golden_image.hooks.fetch import FetchHook
from golden_image.values import ImageRecord, SourceImage
from tests.specs import family_spec

DATA = Path(__file__).resolve().parents[1] / "data"
UPDATES = DATA / "bookworm-updates.InRelease"
SECURITY = DATA / "bookworm-security.InRelease"
BOOKWORM_KEY = (
    "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8"  # Debian Archive Automatic Signing Key (12/bookworm)
)
needs_keyring = pytest.mark.skipif(
    shutil.which("gpgv") is None or not DEFAULT_KEYRING.exists(), reason="gpgv and debian-archive-keyring"
)


@pytest.fixture(autouse=True)
def fresh_memos() -> Iterator[None]:
    FetchHook.forget()
    AptArchiveHook.forget()
    yield
    FetchHook.forget()
    AptArchiveHook.forget()


# -- a package archive on 127.0.0.1 -------------------------------------------------------------
class Archive:
    """Files served over HTTP with ETags; every request logged as (path, status)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, int]] = []
        archive_ = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = archive_.files.get(self.path)
                if body is None:
                    status = 404
                    self.send_response(404)
                    self.end_headers()
                else:
                    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                    status = 304 if self.headers.get("If-None-Match") == etag else 200
                    self.send_response(status)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0" if status == 304 else str(len(body)))
                    self.end_headers()
                    if status == 200:
                        self.wfile.write(body)
                archive_.requests.append((self.path, status))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self, status: int | None = None) -> list[str]:
        return [p for p, s in self.requests if status is None or s == status]


class Signer:
    """A throwaway OpenPGP key made with gpg (when gpg is installed) that signs Release files."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="gpg-", dir="/tmp"))  # short: gpg-agent's socket path
        self.home.chmod(0o700)
        self.gpg = [
            "gpg",
            "--homedir",
            str(self.home),
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]
        subprocess.run(
            [
                *self.gpg,
                "--quick-gen-key",
                "Golden Test Archive <archive@example.invalid>",
                "ed25519",
                "sign",
                "never",
            ],
            check=True,
            capture_output=True,
        )
        self.keyring = self.home / "keyring.gpg"
        self.keyring.write_bytes(
            subprocess.run([*self.gpg, "--export"], check=True, capture_output=True).stdout
        )

    def sign(self, text: str) -> bytes:
        done = subprocess.run(
            [*self.gpg, "--digest-algo", "SHA256", "--clearsign"],
            input=text.encode(),
            check=True,
            capture_output=True,
        )
        return done.stdout

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"], check=False)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="module")
def signer() -> Iterator[Signer | None]:
    if shutil.which("gpg") is None or shutil.which("gpgv") is None:
        yield None
        return
    made = Signer()
    yield made
    made.close()


@pytest.fixture
def server() -> Iterator[Archive]:
    served = Archive()
    yield served
    served.close()


PACKAGES = {
    "bookworm": """Package: openssl
Version: 3.0.15-1~deb12u1
Architecture: amd64

Package: tzdata
Version: 2024a-0+deb12u1
Architecture: all

Package: libc6
Version: 2.36-9+deb12u9
Architecture: amd64
""",
    "bookworm-updates": """Package: tzdata
Version: 2025b-0+deb12u1
Architecture: all
""",
    "bookworm-security": """Package: openssl
Version: 3.0.17-1~deb12u2
Architecture: amd64

Package: libc6
Version: 2.36-9+deb12u10
Architecture: amd64
""",
}


def add_suite(
    served: Archive,
    base: str,
    suite: str,
    packages: str,
    signer: Signer | None,
    *,
    label: str = "Debian",
    by_hash: bool = True,
    compress: str = "xz",
    valid_until: float | None = None,
    backports: bool = False,
) -> str:
    """Release + Packages of one suite; returns the sha256 of the compressed index. ``backports``:
    ``NotAutomatic: yes`` and ``ButAutomaticUpgrades: yes``, as bookworm-backports' Release."""
    raw = packages.encode()
    data = lzma.compress(raw) if compress == "xz" else gzip.compress(raw)
    name = f"main/binary-amd64/Packages.{compress}"
    digest = hashlib.sha256(data).hexdigest()
    release = (
        f"Origin: Debian\nLabel: {label}\nSuite: {suite}\nCodename: {suite}\n"
        f"Date: {email.utils.formatdate(time.time() - 60, usegmt=True)}\n"
        + (f"Valid-Until: {email.utils.formatdate(valid_until, usegmt=True)}\n" if valid_until else "")
        + ("Acquire-By-Hash: yes\n" if by_hash else "")
        + ("NotAutomatic: yes\nButAutomaticUpgrades: yes\n" if backports else "")
        + "Architectures: amd64\nComponents: main\nSHA256:\n"
        + f" {hashlib.sha256(raw).hexdigest()} {len(raw)} main/binary-amd64/Packages\n"
        + f" {digest} {len(data)} {name}\n"
    )
    root = f"{base}/dists/{suite}"
    served.files[f"{root}/InRelease"] = signer.sign(release) if signer else release.encode()
    served.files[f"{root}/{name}"] = data
    served.files[f"{root}/main/binary-amd64/by-hash/SHA256/{digest}"] = data
    return digest


@pytest.fixture
def debian(server: Archive, signer: Signer | None, monkeypatch: pytest.MonkeyPatch) -> Archive:
    """bookworm, -updates and -security on 127.0.0.1, signed by the throwaway key (without gpg,
    unsigned and the hook's verify() passes the text through: the recorded InRelease tests below
    cover signatures)."""
    if signer is None:
        monkeypatch.setattr(AptArchiveHook, "verify", lambda self, body, *a: body.decode())
    for suite, text in PACKAGES.items():
        base = "/debian-security" if suite.endswith("security") else "/debian"
        add_suite(
            server, base, suite, text, signer, label="Debian-Security" if "security" in suite else "Debian"
        )
    return server


def sources_list(served: Archive, signer: Signer | None) -> str:
    option = f"[signed-by={signer.keyring}] " if signer else ""
    return (
        f"deb {option}{served.url}/debian bookworm main\n"
        f"deb {option}{served.url}/debian bookworm-updates main\n"
        f"deb {option}{served.url}/debian-security bookworm-security main\n"
    )


def manifest(served: Archive, signer: Signer | None, **extra: Any) -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "packages": [
            {"name": "openssl", "version": "3.0.15-1~deb12u1", "architecture": "amd64"},
            {"name": "tzdata", "version": "2024a-0+deb12u1", "architecture": "all"},
            {"name": "libc6", "version": "2.36-9+deb12u10", "architecture": "amd64"},
        ],
        "apt_sources": {"/etc/apt/sources.list": sources_list(served, signer)},
        **extra,
    }


def make_hook(tmp_path: Path, signer: Signer | None, **kwargs: Any) -> AptArchiveHook:
    dirs = (str(signer.home.resolve()) + "/",) if signer else archive.KEYRING_DIRS
    return AptArchiveHook(
        FetchHook(tmp_path / "http"), index_dir=tmp_path / "index", keyring_dirs=dirs, **kwargs
    )


EXPECTED = [
    PendingUpdate("openssl", "3.0.15-1~deb12u1", "3.0.17-1~deb12u2", True),
    PendingUpdate("tzdata", "2024a-0+deb12u1", "2025b-0+deb12u1", False),
]


# -- the recorded InRelease and Debian's keyring -----------------------------------------------
def plan_for(url: str, suite: str, **kwargs: Any) -> SuitePlan:
    return SuitePlan(url, suite, ("main",), ("amd64",), **kwargs)


@needs_keyring
def test_a_real_inrelease_is_verified_by_gpgv_and_only_its_signed_text_is_read(tmp_path: Path) -> None:
    hook = make_hook(tmp_path, None)
    body = UPDATES.read_bytes()
    text = hook.verify(body, (str(DEFAULT_KEYRING),), b"", (), "bookworm-updates")
    assert "Codename: bookworm-updates" in text and "PGP" not in text
    facts = archive.parse_release(text)
    assert facts.index_file("main", "amd64") is not None
    planted = b"Codename: bookworm-security\nLabel: Debian-Security\n\n"
    around = planted + body + b"\n" + planted
    smuggled = hook.verify(around, (str(DEFAULT_KEYRING),), b"", (), "x")  # gpgv accepts the file...
    assert "bookworm-security" not in smuggled and "Debian-Security" not in smuggled  # ...not the extras


@needs_keyring
def test_a_tampered_inrelease_is_refused(tmp_path: Path) -> None:
    body = UPDATES.read_text()
    line = next(li for li in body.splitlines() if li.endswith("main/binary-amd64/Packages.xz"))
    digest = line.split()[0]
    tampered = body.replace(line, line.replace(digest, digest[:-1] + ("0" if digest[-1] != "0" else "1")))
    with pytest.raises(ArchiveError, match="BAD"):
        make_hook(tmp_path, None).verify(tampered.encode(), (str(DEFAULT_KEYRING),), b"", (), "x")


@needs_keyring
def test_only_the_named_keys_are_trusted(tmp_path: Path) -> None:
    hook = make_hook(tmp_path, None)
    body = UPDATES.read_bytes()
    other = Path("/usr/share/keyrings/debian-archive-bullseye-security-automatic.gpg")
    if other.exists():
        with pytest.raises(ArchiveError, match="no good signature"):
            hook.verify(body, (str(other),), b"", (), "x")
    assert hook.verify(body, (str(DEFAULT_KEYRING),), b"", (BOOKWORM_KEY,), "x")
    with pytest.raises(ArchiveError, match="not signed by a key its signed-by names"):
        hook.verify(body, (str(DEFAULT_KEYRING),), b"", ("0" * 40,), "x")
    with pytest.raises(ArchiveError, match="gpgv is not installed"):
        make_hook(tmp_path, None, gpgv="no-such-gpgv").verify(body, (str(DEFAULT_KEYRING),), b"", (), "x")


@needs_keyring
def test_recorded_releases_over_http_expiry_and_suite_substitution(tmp_path: Path, server: Archive) -> None:
    server.files["/debian/dists/bookworm-updates/InRelease"] = UPDATES.read_bytes()
    server.files["/debian-security/dists/bookworm-security/InRelease"] = SECURITY.read_bytes()
    server.files["/debian-security/dists/bookworm-security-mirror/InRelease"] = UPDATES.read_bytes()
    facts = archive.parse_release(
        make_hook(tmp_path, None).verify(SECURITY.read_bytes(), (str(DEFAULT_KEYRING),), b"", (), "x")
    )
    assert facts.valid_until is not None
    fresh = make_hook(tmp_path, None, now=lambda: facts.valid_until - 3600)  # type: ignore[operator]
    assert fresh.release(plan_for(f"{server.url}/debian", "bookworm-updates")).codename == "bookworm-updates"
    assert fresh.release(plan_for(f"{server.url}/debian-security", "bookworm-security")).security
    stale = make_hook(tmp_path, None, now=lambda: facts.valid_until + 1)  # type: ignore[operator]
    with pytest.raises(ArchiveError, match="expired"):
        stale.release(plan_for(f"{server.url}/debian-security", "bookworm-security"))
    assert stale.release(
        plan_for(f"{server.url}/debian-security", "bookworm-security", check_valid_until=False)
    )
    with pytest.raises(
        ArchiveError, match="is for suite 'oldstable-updates'"
    ):  # a mirror hiding security updates
        fresh.release(plan_for(f"{server.url}/debian-security", "bookworm-security-mirror"))
    with pytest.raises(ArchiveError, match="HTTP 404"):
        fresh.release(plan_for(f"{server.url}/debian", "trixie"))


# -- the check against the archive on 127.0.0.1 -------------------------------------------------
def test_pending_updates_from_the_archive(tmp_path: Path, debian: Archive, signer: Signer | None) -> None:
    check = make_hook(tmp_path, signer).pending_updates(manifest(debian, signer))
    assert check.pending == EXPECTED
    details = json.loads(json.dumps(check.to_dict()))  # XCom-safe
    assert details["suites"] == [
        f"{debian.url}/debian bookworm",
        f"{debian.url}/debian bookworm-updates",
        f"{debian.url}/debian-security bookworm-security",
    ]
    assert [r["security"] for r in details["releases"]] == [False, False, True]
    assert all("/by-hash/SHA256/" in p for p in debian.paths() if "Packages" in p)  # Acquire-By-Hash: yes


def test_an_unchanged_archive_costs_a_304_per_release_and_no_index(
    tmp_path: Path, debian: Archive, signer: Signer | None
) -> None:
    make_hook(tmp_path, signer).pending_updates(manifest(debian, signer))
    first = list(debian.requests)
    assert len([p for p, _ in first if p.endswith("InRelease")]) == 3 and len(first) == 6
    assert len(list((tmp_path / "http").rglob("body"))) == 3, "index downloads are dropped once reduced"
    assert len(list((tmp_path / "index").glob("*.json"))) == 3

    FetchHook.forget()  # the next weekly run: another process
    AptArchiveHook.forget()
    debian.requests.clear()
    assert make_hook(tmp_path, signer).pending_updates(manifest(debian, signer)).pending == EXPECTED
    assert debian.requests == [(p, 304) for p, _ in first if p.endswith("InRelease")]


def test_families_sharing_suites_fetch_them_once_per_run(
    tmp_path: Path, debian: Archive, signer: Signer | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    reduced: list[str] = []
    real = archive.reduce_packages

    def counting(stream: Any, **kwargs: Any) -> archive.Reduced:
        reduced.append("x")
        return real(stream, **kwargs)

    monkeypatch.setattr(archive, "reduce_packages", counting)
    for _family in range(5):
        assert make_hook(tmp_path, signer).pending_updates(manifest(debian, signer)).pending == EXPECTED
    assert len(debian.requests) == 6 and len(reduced) == 3  # 3 InRelease + 3 indexes, each once


def test_concurrent_checks_parse_an_index_once(
    tmp_path: Path, debian: Archive, signer: Signer | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[int] = []
    real = archive.reduce_packages

    def slow(stream: Any, **kwargs: Any) -> archive.Reduced:
        parsed.append(1)
        time.sleep(0.3)
        return real(stream, **kwargs)

    monkeypatch.setattr(archive, "reduce_packages", slow)
    results: list[list[PendingUpdate]] = []

    def check() -> None:
        results.append(make_hook(tmp_path, signer).pending_updates(manifest(debian, signer)).pending)

    threads = [threading.Thread(target=check) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [EXPECTED] * 4 and len(parsed) == 3


def test_a_hash_mismatch_is_refused_and_not_kept(
    tmp_path: Path, debian: Archive, signer: Signer | None
) -> None:
    path = next(p for p in debian.files if "bookworm-security/main/binary-amd64/by-hash" in p)
    good = debian.files[path]
    debian.files[path] = lzma.compress(b"Package: openssl\nVersion: 9.9\nArchitecture: amd64\n")
    with pytest.raises(ArchiveError, match=r"is not the .* the signed Release lists; refused"):
        make_hook(tmp_path, signer).pending_updates(manifest(debian, signer))
    assert not (tmp_path / "index" / f"{path.rsplit('/', 1)[1]}.json").exists()
    debian.files[path] = good  # the mirror finished syncing: nothing bad was cached
    assert make_hook(tmp_path, signer).pending_updates(manifest(debian, signer)).pending == EXPECTED


def test_plain_paths_and_gzip_without_acquire_by_hash(
    tmp_path: Path, server: Archive, signer: Signer | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if signer is None:
        monkeypatch.setattr(AptArchiveHook, "verify", lambda self, body, *a: body.decode())
    add_suite(
        server, "/vendor", "stable", PACKAGES["bookworm-security"], signer, by_hash=False, compress="gz"
    )
    option = f"[signed-by={signer.keyring}] " if signer else ""
    found = make_hook(tmp_path, signer).pending_updates(
        {
            "architecture": "amd64",
            "packages": [{"name": "libc6", "version": "2.36-9+deb12u9", "architecture": "amd64"}],
            "apt_sources": {
                "/etc/apt/sources.list.d/vendor.list": f"deb {option}{server.url}/vendor stable main\n"
            },
        }
    )
    assert found.pending == [PendingUpdate("libc6", "2.36-9+deb12u9", "2.36-9+deb12u10", False)]
    assert "/vendor/dists/stable/main/binary-amd64/Packages.gz" in server.paths(200)


@pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg signs the fixture archive")
def test_a_key_the_worker_lacks_means_debians_keyring_which_refuses(
    tmp_path: Path, debian: Archive, signer: Signer | None
) -> None:
    data = manifest(debian, signer)
    data["apt_sources"] = {"/etc/apt/sources.list": sources_list(debian, None)}  # no signed-by
    with pytest.raises(ArchiveError, match="no good signature"):
        make_hook(tmp_path, signer).pending_updates(data)


def test_an_unreachable_mirror_and_an_image_without_packages(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{_closed_port()}"
    data = {
        "architecture": "amd64",
        "packages": [{"name": "a", "version": "1", "architecture": "amd64"}],
        "apt_sources": {"/etc/apt/sources.list": f"deb {closed}/debian bookworm main\n"},
    }
    with pytest.raises(ArchiveError, match="cannot download"):
        make_hook(tmp_path, None).pending_updates(data)
    with pytest.raises(ArchiveError, match="no installed packages"):
        make_hook(tmp_path, None).pending_updates({**data, "packages": []})


# -- Debian's AMIs: sources through mirror lists -----------------------------------------------
AMI = DATA / "debian12-ami" / "etc" / "apt"
AMI_SOURCES = (AMI / "sources.list.d" / "debian.sources").read_text()
BACKPORTS = """Package: openssl
Version: 3.5.1-1~bpo12+1
Architecture: amd64
"""


def ami_manifest(
    served: Archive, signer: Signer | None, debian_list: str, security_list: str
) -> dict[str, Any]:
    """The Debian 12 AMI's recorded apt layout (tests/data/debian12-ami), its mirror lists naming
    ``debian_list`` and ``security_list`` and its Signed-By the test key when there is one."""
    sources = AMI_SOURCES
    if signer is not None:
        sources = sources.replace("/usr/share/keyrings/debian-archive-keyring.gpg", str(signer.keyring))
    return {
        **manifest(served, signer),
        "apt_sources": {"/etc/apt/sources.list.d/debian.sources": sources},
        "apt_mirrors": {
            "/etc/apt/mirrors/debian.list": debian_list,
            "/etc/apt/mirrors/debian-security.list": security_list,
        },
    }


def test_the_debian_ami_layout_reads_the_archive_its_mirror_lists_name(
    tmp_path: Path, debian: Archive, signer: Signer | None
) -> None:
    add_suite(debian, "/debian", "bookworm-backports", BACKPORTS, signer, backports=True)
    data = ami_manifest(debian, signer, f"{debian.url}/debian\n", f"{debian.url}/debian-security\n")
    check = make_hook(tmp_path, signer).pending_updates(data)
    assert check.pending == EXPECTED  # backports' newer openssl is not an upgrade apt would make
    assert check.to_dict()["suites"] == [
        f"{debian.url}/debian bookworm",
        f"{debian.url}/debian bookworm-updates",
        f"{debian.url}/debian bookworm-backports",
        f"{debian.url}/debian-security bookworm-security",
    ]
    assert (
        check.notes[0]
        == f"bookworm: read from {debian.url}/debian, a mirror of mirror+file:/etc/apt/mirrors/debian.list"
    )
    assert len(check.notes) == 4


def test_an_unreachable_mirror_moves_to_the_next_one_of_the_list(
    tmp_path: Path, debian: Archive, signer: Signer | None
) -> None:
    add_suite(debian, "/debian", "bookworm-backports", BACKPORTS, signer, backports=True)
    down = f"http://127.0.0.1:{_closed_port()}/debian"
    debian_list = f"{down}\tpriority:1\n{debian.url}/nothing-here\tpriority:2\n{debian.url}/debian\n"
    data = ami_manifest(debian, signer, debian_list, f"{debian.url}/debian-security\n")
    check = make_hook(tmp_path, signer).pending_updates(data)
    assert check.pending == EXPECTED
    assert check.to_dict()["suites"][0] == f"{debian.url}/debian bookworm"
    assert "cannot download" in check.notes[0] and "HTTP 404" in check.notes[0]
    assert (
        "/debian/dists/bookworm/main/binary-amd64/Packages.xz" not in debian.paths()
    )  # by hash, same mirror
    assert any(p.startswith("/debian/dists/bookworm/main/binary-amd64/by-hash/") for p in debian.paths(200))

    debian_list = f"{down}\n{debian.url}/nothing-here\n"
    data = ami_manifest(debian, signer, debian_list, f"{debian.url}/debian-security\n")
    with pytest.raises(
        ArchiveError, match=re.escape("none of the 2 mirrors of mirror+file:/etc/apt/mirrors/")
    ):
        make_hook(tmp_path, signer).pending_updates(data)


def test_an_expired_release_is_final_not_a_reason_to_try_another_mirror(
    tmp_path: Path, debian: Archive, signer: Signer | None
) -> None:
    for suite in ("bookworm", "bookworm-updates", "bookworm-backports"):
        add_suite(
            debian, "/stale", suite, PACKAGES.get(suite, BACKPORTS), signer, valid_until=time.time() - 60
        )
    data = ami_manifest(
        debian, signer, f"{debian.url}/stale\n{debian.url}/debian\n", f"{debian.url}/debian-security\n"
    )
    with pytest.raises(ArchiveError, match=r"/stale/dists/bookworm/InRelease: .*expired"):
        make_hook(tmp_path, signer).pending_updates(data)
    assert not any(p.startswith("/debian/") for p in debian.paths())


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- check_patches picks the method -------------------------------------------------------------
class FakePlatform:
    """Enough of a platform for check_patches: a source, a published image, no instances."""

    def __init__(self, image: ImageRecord) -> None:
        self.image = image
        self.launched = 0

    def resolve_source(self, spec: Any) -> SourceImage:
        return SourceImage("src-1", "d" * 64, "base")

    def published_image(self, spec: Any) -> ImageRecord:
        return self.image

    def launch_instance(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the archive path launches nothing")


def published(manifest_: dict[str, Any]) -> ImageRecord:
    return ImageRecord("img-1", "fam", "1", "r", "validated", time.time(), "src-1", manifest=manifest_)


@pytest.fixture
def unsigned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AptArchiveHook, "verify", lambda self, body, *a: body.decode())


def test_check_patches_reads_the_archive_and_launches_nothing(
    server: Archive, unsigned: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for suite, text in PACKAGES.items():
        label = "Debian-Security" if "security" in suite else "Debian"
        add_suite(
            server, "/debian-security" if "security" in suite else "/debian", suite, text, None, label=label
        )
    platform = FakePlatform(published(manifest(server, None)))
    monkeypatch.setattr(steps, "pending_updates", lambda *a: pytest.fail("no instance check expected"))
    decision = steps.check_patches(family_spec("fam"), platform, run_id="r")  # type: ignore[arg-type]
    json.dumps(decision)
    how = decision["patch_check"]
    assert how["method"] == "archive-index" and len(how["suites"]) == 3
    assert decision["rebuild"] and decision["pending_security_updates"] == ["openssl"]
    assert decision["reasons"][-1].startswith("pending updates read from the package archive's indexes")
    assert how["pending"][0] == {
        "package": "openssl",
        "current": "3.0.15-1~deb12u1",
        "candidate": "3.0.17-1~deb12u2",
        "security": True,
    }


def test_check_patches_of_a_debian_ami_reads_its_mirror_lists_and_launches_nothing(
    server: Archive, unsigned: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for suite, text in PACKAGES.items():
        label = "Debian-Security" if "security" in suite else "Debian"
        add_suite(
            server, "/debian-security" if "security" in suite else "/debian", suite, text, None, label=label
        )
    add_suite(server, "/debian", "bookworm-backports", BACKPORTS, None, backports=True)
    data = ami_manifest(server, None, f"{server.url}/debian\n", f"{server.url}/debian-security\n")
    platform = FakePlatform(published(data))  # launch_instance fails the test
    monkeypatch.setattr(steps, "pending_updates", lambda *a: pytest.fail("no instance check expected"))
    decision = steps.check_patches(family_spec("fam"), platform, run_id="r")  # type: ignore[arg-type]
    how = json.loads(json.dumps(decision["patch_check"]))
    assert how["method"] == "archive-index" and len(how["suites"]) == 4
    assert decision["pending_security_updates"] == ["openssl"]
    assert any("a mirror of mirror+file:/etc/apt/mirrors/debian-security.list" in n for n in how["notes"])


CLOSED = "deb http://127.0.0.1:1/d s main\n"
TRUSTED = "deb [trusted=yes] http://h.example/d s main\n"
APT_OUTPUT = (
    "Inst openssl [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/oldstable-security [amd64])\n"
)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda m: m.pop("apt_sources"), "records no apt sources"),
        (lambda m: m.update(apt_sources={"/etc/apt/sources.list": "deb cdrom:[x]/ s main"}), "'cdrom'"),
        (lambda m: m.update(apt_sources={"/etc/apt/sources.list": CLOSED}), "cannot download"),
        (lambda m: m.update(packages="not a list"), "records no installed packages"),
        (lambda m: m.update(apt_sources={"/etc/apt/sources.list": TRUSTED}), "trusted=yes"),
        (lambda m: m.update(apt_sources={"/etc/apt/sources.list.d/debian.sources": AMI_SOURCES}),
         "is a mirror list and the image manifest records none"),
        (lambda m: m.update(apt_sources={"/etc/apt/sources.list.d/debian.sources": AMI_SOURCES},
                            apt_mirrors={}), "mirror list /etc/apt/mirrors/debian.list is not recorded"),
        (lambda m: m.update(apt_sources={"/etc/apt/sources.list.d/debian.sources": AMI_SOURCES},
                            apt_mirrors={"/etc/apt/mirrors/debian.list": "http://169.254.169.254/\n"}),
         "link-local"),
    ],
)  # fmt: skip
def test_check_patches_falls_back_to_an_instance_and_says_why(
    change: Callable[[dict[str, Any]], Any], why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = {
        "architecture": "amd64",
        "packages": [{"name": "openssl", "version": "3.0.15-1~deb12u1", "architecture": "amd64"}],
        "apt_sources": {"/etc/apt/sources.list": "deb http://127.0.0.1:1/d s main\n"},
    }
    change(data)
    instance_checks: list[str] = []
    monkeypatch.setattr(
        steps,
        "pending_updates",
        lambda platform, image_id, spec, run_id: (
            instance_checks.append(image_id) or parse_apt_simulation(APT_OUTPUT)
        ),
    )
    decision = steps.check_patches(family_spec("fam"), FakePlatform(published(data)), run_id="r")  # type: ignore[arg-type]
    json.dumps(decision)
    assert instance_checks == ["img-1"]
    assert decision["patch_check"]["method"] == "instance" and why in decision["patch_check"]["why"]
    assert decision["reasons"][-1].startswith("pending updates checked with a throwaway instance: ")
    assert decision["pending_security_updates"] == ["openssl"]


def test_check_patches_without_a_published_image() -> None:
    class Unpublished(FakePlatform):
        def published_image(self, spec: Any) -> None:  # type: ignore[override]
            return None

    decision = steps.check_patches(family_spec("fam"), Unpublished(published({})), run_id="r")  # type: ignore[arg-type]
    assert decision["reasons"] == ["no published image yet"] and decision["patch_check"]["method"] == "none"


def test_a_bug_in_the_reader_falls_back_too(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise TypeError("a bug")

    monkeypatch.setattr(archive, "pending_updates", broken)
    monkeypatch.setattr(steps, "pending_updates", lambda *a: parse_apt_simulation(APT_OUTPUT))
    data = {"architecture": "amd64", "packages": [{"name": "a"}], "apt_sources": {}}
    decision = steps.check_patches(family_spec("fam"), FakePlatform(published(data)), run_id="r")  # type: ignore[arg-type]
    assert decision["patch_check"]["why"] == "the archive index reader failed (TypeError: a bug)"


def test_an_old_body_under_a_plain_path_is_downloaded_again(
    tmp_path: Path, server: Archive, signer: Signer | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if signer is None:
        monkeypatch.setattr(AptArchiveHook, "verify", lambda self, body, *a: body.decode())
    add_suite(server, "/vendor", "stable", PACKAGES["bookworm-security"], signer, by_hash=False)
    url = "/vendor/dists/stable/main/binary-amd64/Packages.xz"
    cached = FetchHook(tmp_path / "http").get(server.url + url).path
    cached.write_bytes(
        lzma.compress(PACKAGES["bookworm"].encode())
    )  # stale, and the server's 304 vouches for it
    FetchHook.forget()
    option = f"[signed-by={signer.keyring}] " if signer else ""
    found = make_hook(tmp_path, signer).pending_updates(
        {
            "architecture": "amd64",
            "packages": [{"name": "libc6", "version": "2.36-9+deb12u9", "architecture": "amd64"}],
            "apt_sources": {"/etc/apt/sources.list": f"deb {option}{server.url}/vendor stable main\n"},
        }
    )
    assert found.pending == [PendingUpdate("libc6", "2.36-9+deb12u9", "2.36-9+deb12u10", False)]
    assert (url, 304) in server.requests and server.requests.count((url, 200)) == 2
