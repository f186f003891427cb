"""HTTP(S) and file downloads with an on-disk cache revalidated by conditional requests.

Package archive indexes and vulnerability data are large and change rarely: each URL is kept
under ``$GOLDEN_HOME/cache/http/<sha256(url)>/`` with its ``ETag`` / ``Last-Modified`` and
revalidated with ``If-None-Match`` / ``If-Modified-Since`` (a ``304`` costs one round trip and
no body). Within one process a URL is fetched at most once (``memo``), so twenty families that
share a suite read its index once per run. ``file://`` URLs and plain paths are read in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from golden_image import paths
from golden_image.errors import PlatformError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
MAX_BYTES = 1 << 30
"""A download larger than this is refused (the whole Debian main index is ~50 MB uncompressed)."""


@dataclass(frozen=True)
class Fetched:
    url: str
    path: Path
    """The body on disk (the cache file, or the local file itself)."""
    status: str
    """``downloaded`` | ``revalidated`` (304) | ``memo`` (this process already had it) | ``file``"""

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


class FetchHook:
    """Owns every download of the pipeline's data feeds (archive indexes, vulnerability data)."""

    _memo: dict[tuple[str, str], Fetched] = {}
    _memo_lock = threading.Lock()

    def __init__(self, cache_dir: Path | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.cache_dir = cache_dir or paths.golden_home() / "cache" / "http"
        self.timeout_s = timeout_s

    @classmethod
    def forget(cls) -> None:
        """Drop the per-process memo (tests; a long-lived process that wants fresh data)."""
        with cls._memo_lock:
            cls._memo.clear()

    def evict(self, url: str) -> None:
        """Forget ``url`` here and on disk: a body that failed its checksum, or one the caller has
        turned into something smaller it keeps itself."""
        with self._memo_lock:
            self._memo.pop((str(self.cache_dir), url), None)
        entry = self._entry(url)
        for name in ("meta.json", "body"):  # meta first: a body without meta is never revalidated
            (entry / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            entry.rmdir()

    def _entry(self, url: str) -> Path:
        return self.cache_dir / hashlib.sha256(url.encode()).hexdigest()[:40]

    def get(self, url: str, *, memo: bool = True) -> Fetched:
        """The body of ``url`` (http, https, file or a path), from the cache when still current."""
        parsed = urlparse(url)
        if parsed.scheme in ("", "file"):
            path = Path(parsed.path if parsed.scheme else url)
            if not path.is_file():
                raise PlatformError(f"{url}: no such file", retryable=False)
            return Fetched(url, path, "file")
        if parsed.scheme not in ("http", "https"):
            raise PlatformError(f"{url}: only http, https and file URLs are fetched", retryable=False)
        key = (str(self.cache_dir), url)
        if memo:
            with self._memo_lock:
                if key in self._memo and self._memo[key].path.exists():
                    return Fetched(url, self._memo[key].path, "memo")
        fetched = self._download(url)
        with self._memo_lock:
            self._memo[key] = fetched
        return fetched

    def _download(self, url: str) -> Fetched:
        import requests

        entry = self._entry(url)
        body, meta_file = entry / "body", entry / "meta.json"
        meta: dict[str, str] = {}
        if body.exists() and meta_file.exists():
            try:
                meta = json.loads(meta_file.read_text())
            except ValueError:
                meta = {}
        headers = {"User-Agent": "golden-image-pipeline"}
        if meta.get("etag"):
            headers["If-None-Match"] = meta["etag"]
        if meta.get("last_modified"):
            headers["If-Modified-Since"] = meta["last_modified"]
        started = time.monotonic()
        try:
            with requests.get(url, headers=headers, timeout=self.timeout_s, stream=True) as response:
                if response.status_code == 304 and body.exists():
                    log.debug("%s: not modified (%.2f s)", url, time.monotonic() - started)
                    return Fetched(url, body, "revalidated")
                if response.status_code != 200:
                    raise PlatformError(
                        f"{url}: HTTP {response.status_code} {response.reason}; check the URL and the "
                        "network (the task can be retried)",
                        retryable=response.status_code >= 500 or response.status_code == 429,
                    )
                entry.mkdir(parents=True, exist_ok=True)
                partial = entry / f"body.{os.getpid()}.{threading.get_ident()}.partial"
                size = 0
                with partial.open("wb") as handle:
                    for chunk in response.iter_content(1 << 20):
                        size += len(chunk)
                        if size > MAX_BYTES:
                            handle.close()
                            partial.unlink(missing_ok=True)
                            raise PlatformError(f"{url}: larger than {MAX_BYTES >> 20} MiB; refused")
                        handle.write(chunk)
                partial.rename(body)
                new_meta = {
                    "url": url,
                    "etag": response.headers.get("ETag", ""),
                    "last_modified": response.headers.get("Last-Modified", ""),
                    "fetched_at": str(time.time()),
                }
                meta_partial = entry / f"meta.{os.getpid()}.{threading.get_ident()}.partial"
                meta_partial.write_text(json.dumps(new_meta))
                meta_partial.rename(meta_file)
        except requests.RequestException as exc:
            raise PlatformError(
                f"{url}: cannot download ({type(exc).__name__}: {exc}); check the network or point "
                "the setting at a mirror or a local file"
            ) from None
        log.info("%s: downloaded %d bytes in %.2f s", url, size, time.monotonic() - started)
        return Fetched(url, body, "downloaded")
