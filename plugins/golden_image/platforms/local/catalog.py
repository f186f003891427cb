"""SQLite catalog of the local image store: images, their region copies, grants, pointers, instances.

One file, WAL mode, short transactions: safe for the few concurrent Airflow tasks of one machine.
Files and rows change together: callers write files first, then rows (a crash leaves an orphan
file that cleanup can see, never a row pointing at nothing).

A catalog that cannot be read (not a database, a malformed or truncated file, tables whose columns
are not this schema's) raises :class:`CatalogCorrupt` naming the file and the recovery command,
never a bare ``sqlite3`` error. Grants and pointer moves are also appended to a small journal
(``catalog.journal.jsonl`` beside the database), the one record of them outside the catalog, so
``golden catalog rebuild`` can restore them.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golden_image.errors import PlatformError
from golden_image.paths import exclusive_lock
from golden_image.values import ImageRecord

RECOVERY = "golden catalog rebuild"

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    image_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('source', 'family')),
    family TEXT NOT NULL,
    version TEXT NOT NULL,
    run_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    source_image_id TEXT,
    source_digest TEXT,
    manifest TEXT NOT NULL DEFAULT '{}',
    UNIQUE (kind, family, run_id)
);
CREATE TABLE IF NOT EXISTS locations (
    image_id TEXT NOT NULL REFERENCES images(image_id) ON DELETE CASCADE,
    region TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    verified_at REAL NOT NULL,
    PRIMARY KEY (image_id, region)
);
CREATE TABLE IF NOT EXISTS grants (
    image_id TEXT NOT NULL REFERENCES images(image_id) ON DELETE CASCADE,
    account TEXT NOT NULL,
    granted_at REAL NOT NULL,
    PRIMARY KEY (image_id, account)
);
CREATE TABLE IF NOT EXISTS pointers (
    name TEXT NOT NULL,
    region TEXT NOT NULL,
    image_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (name, region)
);
CREATE TABLE IF NOT EXISTS pointer_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    region TEXT NOT NULL,
    image_id TEXT NOT NULL,
    previous_image_id TEXT,
    run_id TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    image_id TEXT NOT NULL,
    role TEXT NOT NULL,
    family TEXT NOT NULL,
    run_id TEXT NOT NULL,
    dir TEXT NOT NULL,
    port INTEGER NOT NULL,
    pid INTEGER,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    terminated_at REAL
);
"""


@dataclass
class ImageRow:
    """A row of the images table (sources and family images) of the local store."""

    image_id: str
    kind: str
    family: str
    version: str
    run_id: str
    status: str
    created_at: float
    sha256: str
    size: int
    source_image_id: str | None = None
    source_digest: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    regions: list[str] = field(default_factory=list)

    def to_record(self) -> ImageRecord:
        """The platform-neutral record; the archive's digest and size are its artifact."""
        return ImageRecord(
            image_id=self.image_id,
            family=self.family,
            version=self.version,
            run_id=self.run_id,
            status=self.status,
            created_at=self.created_at,
            source_image_id=self.source_image_id,
            source_digest=self.source_digest,
            regions=list(self.regions),
            artifact={"sha256": self.sha256, "bytes": self.size},
            manifest=self.manifest,
        )


@dataclass
class InstanceRow:
    instance_id: str
    image_id: str
    role: str
    family: str
    run_id: str
    dir: str
    port: int
    pid: int | None
    state: str
    created_at: float


class CatalogCorrupt(PlatformError):
    """The catalog file cannot be read as this schema's catalog; retrying cannot help."""

    retryable = False


def _schema_columns() -> dict[str, list[str]]:
    """Every table of SCHEMA and its columns in order (INSERTs here are positional)."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(SCHEMA)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        tables.remove("sqlite_sequence")  # sqlite's own (AUTOINCREMENT)
        return {t: [c[1] for c in db.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        db.close()


SCHEMA_COLUMNS = _schema_columns()


def _is_busy(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and any(word in str(exc) for word in ("locked", "busy"))


class Catalog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal = path.with_name(f"{path.stem}.journal.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        # opening sets WAL and creates the schema: writes that SQLite may refuse at once, without
        # waiting out the busy timeout, when several openers race (a reader upgrading its lock
        # meets another's; CI saw "database is locked" with 8 threads) - so openers take turns
        with exclusive_lock(path.with_name(f".{path.name}.open.lock")):
            self._open_checked(path)

    def _open_checked(self, path: Path) -> None:
        try:
            db = sqlite3.connect(path, timeout=30)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                problems = [r[0] for r in db.execute("PRAGMA quick_check").fetchall() if r[0] != "ok"]
                if problems:
                    raise self.corrupt("; ".join(problems[:3]))
                for table, columns in SCHEMA_COLUMNS.items():
                    found = [c[1] for c in db.execute(f"PRAGMA table_info({table})")]
                    if found != columns:
                        raise self.corrupt(f"table {table} has columns {found}, not this schema's {columns}")
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def corrupt(self, why: str) -> CatalogCorrupt:
        return CatalogCorrupt(
            f"the image catalog {self.path} is unreadable ({why}); nothing was changed. "
            f"Run `{RECOVERY}` to move it aside and rebuild it from the image files "
            f"under {self.path.parent}"
        )

    def _error(self, exc: sqlite3.Error) -> PlatformError:
        if _is_busy(exc):  # another task holds the write lock for longer than the timeout
            return PlatformError(f"the image catalog {self.path} is busy ({exc}); retry")
        return self.corrupt(str(exc))

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from None
            if isinstance(exc, json.JSONDecodeError):  # a row's manifest is not JSON
                raise self.corrupt(f"a manifest column is not JSON: {exc}") from None
            raise
        finally:
            db.close()

    def has_images(self) -> bool:
        """Whether any image (source or family) is catalogued: one indexed row read."""
        with self._connect() as db:
            return db.execute("SELECT 1 FROM images LIMIT 1").fetchone() is not None

    # -- the journal of grants and pointer moves ----------------------------------------------------
    def _append_journal(self, entry: dict[str, Any]) -> None:
        """One JSON line per grant / pointer move, after its row committed (rows are the truth)."""
        line = json.dumps({**entry, "at": time.time()}, sort_keys=True) + "\n"
        with self.journal.open("a") as handle:
            handle.write(line)

    def journal_entries(self) -> list[dict[str, Any]]:
        """The journal's entries in order; a torn last line (a crash mid-write) is ignored."""
        if not self.journal.exists():
            return []
        entries = []
        for line in self.journal.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
        return entries

    # -- images -----------------------------------------------------------------------------
    def add_image(self, row: ImageRow, region: str, path: Path) -> ImageRow:
        """Insert an image and its first location; an existing (kind, family, run_id) wins."""
        with self._connect() as db:
            existing = db.execute(
                "SELECT image_id FROM images WHERE kind=? AND family=? AND run_id=?",
                (row.kind, row.family, row.run_id),
            ).fetchone()
            if existing is None:
                db.execute(
                    "INSERT INTO images VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    _image_values(row),
                )
                db.execute(
                    "INSERT INTO locations VALUES (?,?,?,?,?)",
                    (row.image_id, region, str(path), row.sha256, time.time()),
                )
                image_id = row.image_id
            else:
                image_id = existing["image_id"]
        found = self.image(image_id)
        assert found is not None
        return found

    def image(self, image_id: str) -> ImageRow | None:
        with self._connect() as db:
            rows = self._images(db, "WHERE image_id=?", (image_id,))
        return rows[0] if rows else None

    def image_for_run(self, kind: str, family: str, run_id: str) -> ImageRow | None:
        with self._connect() as db:
            rows = self._images(db, "WHERE kind=? AND family=? AND run_id=?", (kind, family, run_id))
        return rows[0] if rows else None

    def images(self, family: str | None = None, kind: str = "family") -> list[ImageRow]:
        """Images newest first."""
        where, args = "WHERE kind=?", [kind]
        if family is not None:
            where += " AND family=?"
            args.append(family)
        with self._connect() as db:
            return self._images(db, where + " ORDER BY created_at DESC, image_id DESC", tuple(args))

    def _images(self, db: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> list[ImageRow]:
        """Images with their regions in one query (no query per image)."""
        regions = (
            "(SELECT group_concat(region, ',') FROM (SELECT region FROM locations "
            "WHERE locations.image_id = images.image_id ORDER BY region)) AS regions"
        )
        query = f"SELECT images.*, {regions} FROM images {where}"  # noqa: S608 - `where` is ours; values bound
        out = []
        for r in db.execute(query, args).fetchall():
            data = dict(r)
            data["manifest"] = json.loads(data["manifest"])
            data["regions"] = data["regions"].split(",") if data["regions"] else []
            out.append(ImageRow(**data))
        return out

    def update_image(
        self,
        image_id: str,
        *,
        status: str | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        with self._connect() as db:
            if status is not None:
                db.execute("UPDATE images SET status=? WHERE image_id=?", (status, image_id))
            if manifest is not None:
                db.execute(
                    "UPDATE images SET manifest=? WHERE image_id=?",
                    (json.dumps(manifest, sort_keys=True), image_id),
                )

    def delete_image(self, image_id: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM images WHERE image_id=?", (image_id,))

    # -- locations and grants ----------------------------------------------------------------
    def location(self, image_id: str, region: str) -> Path | None:
        with self._connect() as db:
            r = db.execute(
                "SELECT path FROM locations WHERE image_id=? AND region=?", (image_id, region)
            ).fetchone()
        return Path(r["path"]) if r else None

    def locations(self, image_id: str) -> dict[str, Path]:
        with self._connect() as db:
            rows = db.execute("SELECT region, path FROM locations WHERE image_id=?", (image_id,)).fetchall()
        return {r["region"]: Path(r["path"]) for r in rows}

    def add_location(self, image_id: str, region: str, path: Path, sha256: str) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO locations VALUES (?,?,?,?,?)",
                (image_id, region, str(path), sha256, time.time()),
            )

    def grant(self, image_id: str, account: str) -> bool:
        """Grant launch permission; True when it was new."""
        with self._connect() as db:
            cur = db.execute("INSERT OR IGNORE INTO grants VALUES (?,?,?)", (image_id, account, time.time()))
            new = cur.rowcount == 1
        if new:
            self._append_journal({"op": "grant", "image_id": image_id, "account": account})
        return new

    def grants(self, image_id: str) -> list[str]:
        with self._connect() as db:
            rows = db.execute("SELECT account FROM grants WHERE image_id=? ORDER BY account", (image_id,))
            return [r["account"] for r in rows.fetchall()]

    # -- pointers ------------------------------------------------------------------------------
    def set_pointer(self, name: str, region: str, image_id: str, run_id: str) -> str | None:
        """Point ``name`` in ``region`` at ``image_id``; returns the previous value. Idempotent."""
        with self._connect() as db:
            r = db.execute(
                "SELECT image_id FROM pointers WHERE name=? AND region=?", (name, region)
            ).fetchone()
            previous = r["image_id"] if r else None
            if previous == image_id:
                return previous
            now = time.time()
            db.execute(
                "INSERT OR REPLACE INTO pointers VALUES (?,?,?,?,?)", (name, region, image_id, run_id, now)
            )
            db.execute(
                "INSERT INTO pointer_history (name, region, image_id, previous_image_id, run_id, updated_at) "
                "VALUES (?,?,?,?,?,?)",
                (name, region, image_id, previous, run_id, now),
            )
        self._append_journal(
            {
                "op": "pointer",
                "name": name,
                "region": region,
                "image_id": image_id,
                "previous": previous,
                "run_id": run_id,
            }
        )
        return previous

    def pointer(self, name: str, region: str) -> str | None:
        with self._connect() as db:
            r = db.execute(
                "SELECT image_id FROM pointers WHERE name=? AND region=?", (name, region)
            ).fetchone()
        return r["image_id"] if r else None

    def pointed_images(self) -> set[str]:
        with self._connect() as db:
            return {r["image_id"] for r in db.execute("SELECT image_id FROM pointers").fetchall()}

    def pointer_history(self, name: str) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM pointer_history WHERE name=? ORDER BY id DESC", (name,)
            ).fetchall()
        return [dict(r) for r in rows]

    # -- restoring rows from files (golden catalog rebuild) ------------------------------------------
    def restore_image(self, row: ImageRow, copies: dict[str, tuple[Path, str]]) -> tuple[bool, list[str]]:
        """Insert ``row`` unless its id is catalogued, and every missing location of ``copies``
        (region -> (path, sha256)). Returns (row inserted, regions added); idempotent."""
        with self._connect() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO images VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                _image_values(row),
            )
            inserted = cur.rowcount == 1
            added = []
            for region, (path, digest) in sorted(copies.items()):
                cur = db.execute(
                    "INSERT OR IGNORE INTO locations VALUES (?,?,?,?,?)",
                    (row.image_id, region, str(path), digest, time.time()),
                )
                if cur.rowcount == 1:
                    added.append(region)
        return inserted, added

    def restore_grant(self, image_id: str, account: str, granted_at: float) -> bool:
        with self._connect() as db:
            cur = db.execute("INSERT OR IGNORE INTO grants VALUES (?,?,?)", (image_id, account, granted_at))
            return cur.rowcount == 1

    def restore_pointer(self, moves: list[dict[str, Any]]) -> bool:
        """Restore one pointer (name, region) from its journalled moves, oldest first, with their
        history, unless the catalog still has that pointer. True when it was restored."""
        last = moves[-1]
        with self._connect() as db:
            if db.execute(
                "SELECT 1 FROM pointers WHERE name=? AND region=?", (last["name"], last["region"])
            ).fetchone():
                return False
            db.execute(
                "INSERT INTO pointers VALUES (?,?,?,?,?)",
                (last["name"], last["region"], last["image_id"], last["run_id"], last["at"]),
            )
            if not db.execute(
                "SELECT 1 FROM pointer_history WHERE name=? AND region=?", (last["name"], last["region"])
            ).fetchone():
                for move in moves:
                    db.execute(
                        "INSERT INTO pointer_history (name, region, image_id, previous_image_id, run_id, "
                        "updated_at) VALUES (?,?,?,?,?,?)",
                        (
                            move["name"],
                            move["region"],
                            move["image_id"],
                            move["previous"],
                            move["run_id"],
                            move["at"],
                        ),
                    )
        return True

    # -- instances -----------------------------------------------------------------------------
    def add_instance(self, row: InstanceRow) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,NULL)",
                (
                    row.instance_id,
                    row.image_id,
                    row.role,
                    row.family,
                    row.run_id,
                    row.dir,
                    row.port,
                    row.pid,
                    row.state,
                    row.created_at,
                ),
            )

    def set_instance(
        self, instance_id: str, *, state: str, pid: int | None = None, port: int | None = None
    ) -> None:
        with self._connect() as db:
            if state == "terminated":
                db.execute(
                    "UPDATE instances SET state=?, terminated_at=? WHERE instance_id=?",
                    (state, time.time(), instance_id),
                )
            else:
                db.execute(
                    "UPDATE instances SET state=?, pid=COALESCE(?, pid), port=COALESCE(?, port) "
                    "WHERE instance_id=?",
                    (state, pid, port, instance_id),
                )

    def instances(self, *, live_only: bool = True) -> list[InstanceRow]:
        where = "WHERE state != 'terminated'" if live_only else ""
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM instances {where} ORDER BY created_at").fetchall()  # noqa: S608
        return [_instance_row(r) for r in rows]

    def instance(self, instance_id: str) -> InstanceRow | None:
        with self._connect() as db:
            r = db.execute("SELECT * FROM instances WHERE instance_id=?", (instance_id,)).fetchone()
        return _instance_row(r) if r else None


def _image_values(row: ImageRow) -> tuple[Any, ...]:
    """An image row in the images table's column order."""
    return (
        row.image_id,
        row.kind,
        row.family,
        row.version,
        row.run_id,
        row.status,
        row.created_at,
        row.sha256,
        row.size,
        row.source_image_id,
        row.source_digest,
        json.dumps(row.manifest, sort_keys=True),
    )


def _instance_row(row: sqlite3.Row) -> InstanceRow:
    return InstanceRow(**{k: row[k] for k in row.keys() if k != "terminated_at"})  # noqa: SIM118 (Row)
