"""Every download and subprocess of the patch check that reads the package archive instead of
launching an instance: InRelease files (verified with ``gpgv``), Packages indexes (verified by
the SHA256 the Release lists) and the reduced indexes kept on disk.

* Downloads go through :class:`~golden_image.hooks.fetch.FetchHook` (on-disk cache revalidated
  with ETag / If-Modified-Since, a per-process memo: families that share a suite fetch its
  InRelease once per run).
* A source that names a mirror list (``mirror+file:``, Debian's AMIs) reads from the list's first
  mirror (``archive.parse_mirror_list`` orders them as apt does); when that one cannot be
  reached, the next (at most ``archive.MIRROR_TRIES``), and the suite's Packages come from the
  mirror whose InRelease was read.
* ``gpgv`` checks each InRelease against the keyring its source names (``signed-by``, when that
  file exists on the worker under a keyring directory), else Debian's archive keyring; only the
  signed text gpgv writes out is parsed, never the file as downloaded.
* A Packages index is reduced once to name -> {arch: highest version} and kept as
  ``$GOLDEN_HOME/cache/apt-index/<sha256 of the index>.json`` (a few MB for bookworm main
  instead of ~50 MB of text and ~5 s of parsing). An unchanged index costs the InRelease
  request and a JSON read; the compressed download is dropped from the HTTP cache once reduced.
  Parsing is done by one process at a time per index (a lock file), so twenty tasks started
  together parse bookworm main once.

Any failure raises :class:`~golden_image.archive.ArchiveError` with the reason; the caller falls
back to a throwaway instance.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import lzma
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from golden_image import archive, paths
from golden_image.archive import ArchiveError, ReleaseFacts, SuiteIndex, SuitePlan
from golden_image.decisions import PendingUpdate
from golden_image.errors import PlatformError
from golden_image.hooks.fetch import FetchHook

log = logging.getLogger(__name__)

DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
REDUCED_FORMAT = 1
MEMO_SIZE = 16
"""Reduced indexes kept in memory per process (bookworm main is ~15 MB of Python objects)."""
KEEP_UNUSED_S = 30 * 86_400.0
"""Reduced indexes nobody read for this long are deleted when a new one is written."""
GPGV_TIMEOUT_S = 60.0


class Unreachable(ArchiveError):
    """A download failed (no answer, an HTTP error): another mirror of the list may serve it."""


@dataclass
class ArchiveCheck:
    """Pending updates read from the archive, and what was read to decide."""

    pending: list[PendingUpdate]
    suites: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON for XCom and the decision."""
        return {"suites": [s["name"] for s in self.suites], "releases": self.suites, "notes": self.notes}


class AptArchiveHook:
    """Reads the archive indexes an image's apt sources name; answers what would be upgraded."""

    _verified: dict[tuple[str, tuple[str, ...], tuple[str, ...]], ReleaseFacts] = {}
    """(InRelease sha256, keyrings, fingerprints) -> its verified, parsed Release."""
    _reduced: OrderedDict[str, archive.Reduced] = OrderedDict()
    _memo_lock = threading.Lock()

    def __init__(
        self,
        fetch: FetchHook | None = None,
        *,
        index_dir: Path | None = None,
        default_keyring: Path = DEFAULT_KEYRING,
        keyring_dirs: Sequence[str] = archive.KEYRING_DIRS,
        gpgv: str = "gpgv",
        now: Callable[[], float] = time.time,
    ) -> None:
        self.fetch = fetch or FetchHook()
        self.index_dir = index_dir or paths.golden_home() / "cache" / "apt-index"
        self.default_keyring = default_keyring
        self.keyring_dirs = tuple(keyring_dirs)
        self.gpgv = gpgv
        self.now = now

    @classmethod
    def forget(cls) -> None:
        """Drop the per-process memos (tests; a long-lived process that wants fresh data)."""
        with cls._memo_lock:
            cls._verified.clear()
            cls._reduced.clear()

    # -- the check -----------------------------------------------------------------------------
    def pending_updates(self, manifest: Mapping[str, Any]) -> ArchiveCheck:
        """What ``apt-get dist-upgrade`` would upgrade in the image the manifest describes."""
        started = time.monotonic()
        packages = manifest.get("packages")
        if not isinstance(packages, list) or not packages:
            raise ArchiveError("the image manifest records no installed packages")
        arches = archive.image_architectures(manifest)
        sources = archive.parse_sources(manifest.get("apt_sources"), manifest.get("apt_mirrors"))
        plans = archive.plan_suites(sources, arches)
        check = ArchiveCheck(pending=[])
        if not plans:
            check.notes.append("the image lists no deb sources: apt can upgrade nothing")
        suites = []
        for plan in plans:
            index, facts = self.suite(plan, check)
            suites.append(index)
            check.suites.append(
                {
                    "name": index.name,
                    "security": index.security,
                    "release_date": facts.date,
                    "valid_until": facts.valid_until,
                }
            )
        check.pending = archive.pending_updates(packages, suites, arches[0])
        log.info(
            "archive indexes of %d suite(s) read in %.2f s: %d pending update(s), %d security",
            len(plans),
            time.monotonic() - started,
            len(check.pending),
            sum(u.security for u in check.pending),
        )
        return check

    def suite(self, plan: SuitePlan, check: ArchiveCheck) -> tuple[SuiteIndex, ReleaseFacts]:
        plan, facts = self.mirror_release(plan, check)
        reduced = []
        for component in plan.components:
            files = archive.index_files(facts, component, plan.arches)
            if not files:
                check.notes.append(
                    f"{plan.name}: the Release lists no Packages for {component} on {', '.join(plan.arches)}"
                    " (apt skips it too)"
                )
            for _arch, file in files:
                reduced.append(self.packages(plan, facts, file))
        suite = SuiteIndex(
            name=plan.name,
            security=facts.security,
            packages=reduced[0] if len(reduced) == 1 else archive.merge_indexes(reduced),
            automatic=not facts.not_automatic,
            but_automatic_upgrades=facts.but_automatic_upgrades,
        )
        return suite, facts

    # -- Release -------------------------------------------------------------------------------
    def mirror_release(self, plan: SuitePlan, check: ArchiveCheck) -> tuple[SuitePlan, ReleaseFacts]:
        """:meth:`release` from the plan's URI or, for a mirror list, from the first of its
        mirrors that answers: as apt's mirror method, the next mirror is tried when a download
        fails. A signature, suite or expiry refusal is final (that mirror, or the list, needs a
        person). Returns the plan of the mirror read: the suite's Packages come from there too."""
        failures: list[str] = []
        for uri in plan.candidates:
            candidate = replace(plan, uri=uri, mirrors=())
            try:
                facts = self.release(candidate)
            except Unreachable as exc:
                failures.append(str(exc))
                continue
            if plan.mirror_list:
                after = f" (after: {'; '.join(failures)})" if failures else ""
                check.notes.append(f"{plan.suite}: read from {uri}, a mirror of {plan.mirror_list}{after}")
            return candidate, facts
        if len(failures) == 1:
            raise ArchiveError(failures[0])
        tried = "; ".join(failures)
        raise ArchiveError(
            f"none of the {len(failures)} mirrors of {plan.mirror_list} tried answered: {tried}"
        )

    def release(self, plan: SuitePlan) -> ReleaseFacts:
        """The suite's InRelease, signature checked, not expired, for the suite asked for."""
        url = plan.release_url
        try:
            fetched = self.fetch.get(url)
        except PlatformError as exc:
            raise Unreachable(f"{url}: {exc}") from None
        body = fetched.read_bytes()
        keyrings, inline = self.keyrings_for(plan)
        key = (hashlib.sha256(body).hexdigest(), keyrings, plan.fingerprints)
        with self._memo_lock:
            facts = self._verified.get(key)
        if facts is None:
            facts = archive.parse_release(self.verify(body, keyrings, inline, plan.fingerprints, url))
            with self._memo_lock:
                self._verified[key] = facts
        try:
            archive.check_release(facts, plan.suite, now=self.now(), check_valid_until=plan.check_valid_until)
        except ArchiveError as exc:
            raise ArchiveError(f"{url}: {exc}") from None
        return facts

    def keyrings_for(self, plan: SuitePlan) -> tuple[tuple[str, ...], bytes]:
        """The signed-by keyrings the worker has (under a keyring directory), else Debian's."""
        if plan.inline_key:
            return ("inline:" + hashlib.sha256(plan.inline_key.encode()).hexdigest(),), archive.dearmor(
                plan.inline_key
            )
        usable = []
        for name in plan.keyrings:
            path = Path(name)
            try:
                resolved = path.resolve(strict=True)
            except OSError:
                continue
            if resolved.is_file() and str(resolved).startswith(self.keyring_dirs):
                usable.append(str(resolved))
        if not usable:
            if plan.keyrings:
                shown = ", ".join(plan.keyrings)
                log.info("%s: no %s on the worker; using %s", plan.name, shown, self.default_keyring)
            usable = [str(self.default_keyring)]
        return tuple(usable), b""

    def verify(
        self, body: bytes, keyrings: tuple[str, ...], inline: bytes, fingerprints: Sequence[str], url: str
    ) -> str:
        """The signed text of an InRelease, as gpgv writes it out after checking the signature."""
        gpgv = shutil.which(self.gpgv)
        if gpgv is None:
            raise ArchiveError("gpgv is not installed on the worker (scripts/setup.sh installs it)")
        with tempfile.TemporaryDirectory(prefix="golden-gpgv-") as tmp:
            work = Path(tmp)
            signed, out = work / "InRelease", work / "Release"
            signed.write_bytes(body)
            if inline:
                (work / "inline.gpg").write_bytes(inline)
                keyrings = (str(work / "inline.gpg"),)
            missing = [k for k in keyrings if not Path(k).is_file()]
            if missing:
                raise ArchiveError(f"{url}: keyring {missing[0]} is not on the worker")
            command = [gpgv, "--homedir", str(work), "--status-fd", "1"]
            for keyring in keyrings:
                command += ["--keyring", keyring]
            command += ["--output", str(out), str(signed)]
            try:
                result = subprocess.run(
                    command, capture_output=True, text=True, timeout=GPGV_TIMEOUT_S, env={"LC_ALL": "C"}
                )
            except subprocess.TimeoutExpired:
                raise ArchiveError(f"{url}: gpgv took longer than {GPGV_TIMEOUT_S:.0f} s") from None
            why = archive.gpgv_verdict(result.stdout, fingerprints)
            if why is None and not out.is_file():
                why = "gpgv wrote no signed text"
            if why is not None:
                tail = " ".join(result.stderr.split())[-200:]
                raise ArchiveError(f"{url}: {why} (keyring {', '.join(keyrings)}; gpgv: {tail})")
            return out.read_text(encoding="utf-8", errors="replace")

    # -- Packages ------------------------------------------------------------------------------
    def packages(self, plan: SuitePlan, facts: ReleaseFacts, index: archive.IndexFile) -> archive.Reduced:
        """The reduced Packages index with this SHA256: memo, disk, or downloaded and parsed."""
        with self._memo_lock:
            if index.sha256 in self._reduced:
                self._reduced.move_to_end(index.sha256)
                return self._reduced[index.sha256]
        stored = self.index_dir / f"{index.sha256}.json"
        reduced = self._load(stored, index.sha256)
        if reduced is None:
            with paths.exclusive_lock(self.index_dir / f"{index.sha256}.lock"):
                reduced = self._load(stored, index.sha256)  # another process may have made it meanwhile
                if reduced is None:
                    reduced = self._download_and_reduce(plan, facts, index, stored)
        with self._memo_lock:
            self._reduced[index.sha256] = reduced
            while len(self._reduced) > MEMO_SIZE:
                self._reduced.popitem(last=False)
        return reduced

    def _load(self, stored: Path, sha256: str) -> archive.Reduced | None:
        try:
            data = json.loads(stored.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("%s is not JSON; parsing the index again", stored)
            return None
        if not isinstance(data, dict) or data.get("format") != REDUCED_FORMAT or data.get("sha256") != sha256:
            return None
        with contextlib.suppress(OSError):
            os.utime(stored)  # read recently: kept by the pruning below
        packages: archive.Reduced = data.get("packages", {})
        return packages

    def _download_and_reduce(
        self, plan: SuitePlan, facts: ReleaseFacts, index: archive.IndexFile, stored: Path
    ) -> archive.Reduced:
        base = f"{plan.uri}/dists/{plan.suite}"
        url = f"{base}/{archive.by_hash_path(index) if facts.acquire_by_hash else index.path}"
        started = time.monotonic()
        try:
            fetched = self.fetch.get(url)
            digest, size = _sha256_and_size(fetched.path)
            if (digest, size) != (index.sha256, index.size) and fetched.status in ("revalidated", "memo"):
                self.fetch.evict(url)  # an older body kept under a plain path: download it again
                fetched = self.fetch.get(url)
                digest, size = _sha256_and_size(fetched.path)
        except PlatformError as exc:
            raise ArchiveError(f"{url}: {exc}") from None
        if (digest, size) != (index.sha256, index.size):
            self.fetch.evict(url)
            raise ArchiveError(
                f"{url}: SHA256 {digest[:16]}… ({size} bytes) is not the {index.sha256[:16]}… "
                f"({index.size} bytes) the signed Release lists; refused (a mirror mid-sync or tampering)"
            )
        downloaded = time.monotonic()
        limit = index.uncompressed_size or archive.MAX_INDEX_BYTES
        try:
            with _open_index(fetched.path, index.path) as stream:
                reduced = archive.reduce_packages(stream, limit=min(limit, archive.MAX_INDEX_BYTES))
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise ArchiveError(f"{url}: cannot decompress ({type(exc).__name__}: {exc})") from None
        self.index_dir.mkdir(parents=True, exist_ok=True)
        partial = stored.with_name(f"{stored.name}.{os.getpid()}.{threading.get_ident()}.partial")
        partial.write_text(
            json.dumps({"format": REDUCED_FORMAT, "sha256": index.sha256, "url": url, "packages": reduced})
        )
        partial.rename(stored)
        if fetched.status != "file":
            self.fetch.evict(url)  # the reduced index is what is kept
        self._prune()
        log.info(
            "%s: %d packages; downloaded in %.2f s, parsed in %.2f s",
            url,
            len(reduced),
            downloaded - started,
            time.monotonic() - downloaded,
        )
        return reduced

    def _prune(self) -> None:
        cutoff = time.time() - KEEP_UNUSED_S
        for path in self.index_dir.glob("*.json"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    path.with_suffix(".lock").unlink(missing_ok=True)


def _sha256_and_size(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@contextlib.contextmanager
def _open_index(path: Path, name: str) -> Iterator[IO[bytes]]:
    if name.endswith(".xz"):
        with lzma.open(path, "rb") as stream:
            yield stream
    elif name.endswith(".gz"):
        with gzip.open(path, "rb") as stream:
            yield stream  # type: ignore[misc]
    else:
        with path.open("rb") as stream:
            yield stream
