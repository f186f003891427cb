"""SQLite catalog of the local image store: images, their region copies, grants, pointers, instances.

One file, WAL mode, short transactions: safe for the few concurrent Airflow tasks of one machine.
Files and rows change together: callers write files first, then rows (a crash leaves an orphan
file that cleanup can see, never a row pointing at nothing).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golden_image.values import ImageRecord

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


class Catalog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        finally:
            db.close()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

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
                    (
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
                    ),
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
            return cur.rowcount == 1

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

    def set_instance(self, instance_id: str, *, state: str, pid: int | None = None) -> None:
        with self._connect() as db:
            if state == "terminated":
                db.execute(
                    "UPDATE instances SET state=?, terminated_at=? WHERE instance_id=?",
                    (state, time.time(), instance_id),
                )
            else:
                db.execute(
                    "UPDATE instances SET state=?, pid=COALESCE(?, pid) WHERE instance_id=?",
                    (state, pid, instance_id),
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


def _instance_row(row: sqlite3.Row) -> InstanceRow:
    return InstanceRow(**{k: row[k] for k in row.keys() if k != "terminated_at"})  # noqa: SIM118 (Row)
