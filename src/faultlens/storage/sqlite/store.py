"""The embedded event store: projects, keys, tokens, events and issues in SQLite.

One connection writes (the processing worker's); readers each get a connection of
their own per thread, which WAL mode lets run beside the writer. Administrative writes
(projects, keys, tokens) come from the CLI or the API and take SQLite's write lock
briefly; ``busy_timeout`` makes them wait rather than fail.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import zstandard

from faultlens.storage.ports import (
    Batch,
    Issue,
    IssueStatus,
    Project,
    ProjectKey,
    ReplaySegment,
    StoredAttachment,
    StoredEvent,
)
from faultlens.storage.sqlite.db import connect
from faultlens.storage.sqlite.schema import SCHEMA

_SLUG_RE = re.compile(r"[^a-z0-9]+")

#: zstd level 3 keeps a ~20 KB SDK event near 4 KB at a few tens of microseconds.
COMPRESSION_LEVEL = 3


class NotFound(LookupError):
    """The project, key, issue or event asked for does not exist."""


@dataclass(frozen=True)
class WriteResult:
    """What a batch write changed, for the domain events that follow it."""

    stored: int
    duplicates: int
    created_issues: list[int]
    regressed_issues: list[int]


class SqliteStore:
    """Projects, keys, tokens, events and issues; see the module docstring."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "faultlens.db"
        self.blob_dir = data_dir / "blobs"
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL)
        self._decompressor = zstandard.ZstdDecompressor()
        with self._writer() as conn:
            conn.executescript(SCHEMA)

    # -- connections -------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
        return conn

    @contextmanager
    def _writer(self) -> Iterator[sqlite3.Connection]:
        # One writer at a time inside this process; other processes (the CLI) are
        # serialised by SQLite's own lock and busy_timeout.
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn().execute(sql, params).fetchall()

    def touch(self) -> None:
        """Write something small, to prove the store takes writes."""
        with self._writer() as conn:
            conn.execute(
                "INSERT INTO meta VALUES ('last_touch', ?) ON CONFLICT DO UPDATE"
                " SET value = excluded.value",
                (str(time.time()),),
            )

    # -- projects, keys, tokens --------------------------------------------------------

    def create_project(self, name: str, grouping_version: str) -> Project:
        slug = _SLUG_RE.sub("-", name.lower()).strip("-") or "project"
        now = time.time()
        with self._writer() as conn:
            base, n = slug, 1
            while conn.execute(
                "SELECT 1 FROM projects WHERE slug = ?", (slug,)
            ).fetchone():
                n += 1
                slug = f"{base}-{n}"
            cur = conn.execute(
                "INSERT INTO projects (slug, name, grouping_version, created_at)"
                " VALUES (?, ?, ?, ?)",
                (slug, name, grouping_version, now),
            )
        assert cur.lastrowid is not None
        return Project(cur.lastrowid, slug, name, grouping_version, now)

    def list_projects(self) -> list[Project]:
        rows = self._read(
            "SELECT id, slug, name, grouping_version, created_at FROM projects"
        )
        return [Project(*r) for r in rows]

    def get_project(self, project_id: int) -> Project:
        rows = self._read(
            "SELECT id, slug, name, grouping_version, created_at FROM projects"
            " WHERE id = ?",
            (project_id,),
        )
        if not rows:
            raise NotFound(f"no project with id {project_id}")
        return Project(*rows[0])

    def create_key(self, project_id: int, label: str = "default") -> ProjectKey:
        self.get_project(project_id)
        key = ProjectKey(secrets.token_hex(16), project_id, label, time.time())
        with self._writer() as conn:
            conn.execute(
                "INSERT INTO project_keys (public_key, project_id, label, created_at)"
                " VALUES (?, ?, ?, ?)",
                (key.public_key, key.project_id, key.label, key.created_at),
            )
        return key

    def list_keys(self, project_id: int) -> list[ProjectKey]:
        rows = self._read(
            "SELECT public_key, project_id, label, created_at, revoked_at"
            " FROM project_keys WHERE project_id = ? ORDER BY created_at",
            (project_id,),
        )
        return [ProjectKey(*r) for r in rows]

    def get_key(self, public_key: str) -> ProjectKey | None:
        rows = self._read(
            "SELECT public_key, project_id, label, created_at, revoked_at"
            " FROM project_keys WHERE public_key = ?",
            (public_key,),
        )
        return ProjectKey(*rows[0]) if rows else None

    def revoke_key(self, public_key: str) -> None:
        with self._writer() as conn:
            cur = conn.execute(
                "UPDATE project_keys SET revoked_at = ? WHERE public_key = ?"
                " AND revoked_at IS NULL",
                (time.time(), public_key),
            )
        if cur.rowcount == 0 and self.get_key(public_key) is None:
            raise NotFound("no such key")

    def create_token(self, label: str = "cli") -> str:
        token = "flt_" + secrets.token_urlsafe(32)
        with self._writer() as conn:
            conn.execute(
                "INSERT INTO api_tokens (token_hash, label, created_at)"
                " VALUES (?, ?, ?)",
                (_token_hash(token), label, time.time()),
            )
        return token

    def check_token(self, token: str) -> bool:
        return bool(
            self._read(
                "SELECT 1 FROM api_tokens WHERE token_hash = ?", (_token_hash(token),)
            )
        )

    # -- the worker's writes -----------------------------------------------------------

    def position(self) -> int:
        """The highest inbox id whose effects are committed here."""
        rows = self._read("SELECT value FROM meta WHERE name = 'inbox_position'")
        return int(rows[0][0]) if rows else 0

    def write_batch(self, batch: Batch) -> WriteResult:
        """Write a processed batch and advance the inbox position, atomically.

        Blobs (attachments, replay recordings) are written and fsynced to files before
        the transaction commits, so a committed row never points at a missing file; a
        crash before the commit leaves only files that the retry overwrites. An event
        id already stored for its project is skipped, its counters too.
        """
        for a in batch.attachments:
            self._write_blob(_attachment_path(a), a.payload)
        for r in batch.replays:
            self._write_blob(_replay_path(r), r.recording)

        created: list[int] = []
        regressed: list[int] = []
        stored = duplicates = 0
        hour = int(time.time() // 3600)
        with self._writer() as conn:
            for e in batch.events:
                outcome = self._write_event(conn, e)
                if outcome is None:
                    duplicates += 1
                    continue
                stored += 1
                issue_id, change = outcome
                if change == "created":
                    created.append(issue_id)
                elif change == "regressed":
                    regressed.append(issue_id)
            self._write_extras(conn, batch, hour)
            conn.execute(
                "INSERT INTO meta VALUES ('inbox_position', ?) ON CONFLICT DO UPDATE"
                " SET value = excluded.value",
                (str(batch.position),),
            )
        return WriteResult(stored, duplicates, created, regressed)

    def _write_extras(self, conn: sqlite3.Connection, batch: Batch, hour: int) -> None:
        conn.executemany(
            "INSERT OR IGNORE INTO attachments (project_id, event_id, filename,"
            " content_type, attachment_type, size, blob) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    a.project_id,
                    a.event_id,
                    a.filename,
                    a.content_type,
                    a.attachment_type,
                    len(a.payload),
                    _attachment_path(a),
                )
                for a in batch.attachments
            ],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO feedback VALUES (?, ?, ?, ?)",
            [
                (f.project_id, f.event_id, f.received, self._pack(f.data))
                for f in batch.feedback
            ],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO replay_segments VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    r.project_id,
                    r.replay_id,
                    r.segment_id,
                    r.received,
                    self._pack(r.event),
                    _replay_path(r),
                )
                for r in batch.replays
            ],
        )
        conn.executemany(
            "INSERT INTO counters VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE"
            " SET quantity = quantity + excluded.quantity",
            [(p, hour, name, q) for (p, name), q in batch.counters.items()],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    d.entry.id,
                    d.entry.project_id,
                    d.entry.received_at,
                    d.error,
                    d.entry.kind,
                    d.entry.encoding,
                    d.entry.body,
                )
                for d in batch.dead_letters
            ],
        )

    def _write_event(
        self, conn: sqlite3.Connection, e: StoredEvent
    ) -> tuple[int, str] | None:
        cur = conn.execute(
            "INSERT OR IGNORE INTO events"
            " (project_id, event_id, timestamp, received, level, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                e.project_id,
                e.event_id,
                e.timestamp,
                e.received,
                e.level,
                self._pack(e.data),
            ),
        )
        if cur.rowcount == 0:
            return None
        event_row = cur.lastrowid

        issue_id, change = self._upsert_issue(conn, e)
        conn.execute(
            "UPDATE events SET issue_id = ? WHERE id = ?", (issue_id, event_row)
        )
        return issue_id, change

    def _upsert_issue(
        self, conn: sqlite3.Connection, e: StoredEvent
    ) -> tuple[int, str]:
        row = conn.execute(
            "SELECT issue_id FROM issue_hashes WHERE project_id = ? AND hash = ?",
            (e.project_id, e.hash),
        ).fetchone()
        change = "updated"
        if row is None:
            cur = conn.execute(
                "INSERT INTO issues (project_id, title, culprit, level, status,"
                " first_seen, last_seen, count, user_count)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0)",
                (
                    e.project_id,
                    e.title,
                    e.culprit,
                    e.level,
                    IssueStatus.UNRESOLVED.value,
                    e.timestamp,
                    e.timestamp,
                ),
            )
            assert cur.lastrowid is not None
            issue_id = cur.lastrowid
            conn.execute(
                "INSERT INTO issue_hashes VALUES (?, ?, ?)",
                (e.project_id, e.hash, issue_id),
            )
            change = "created"
        else:
            issue_id = row[0]
            cur = conn.execute(
                "UPDATE issues SET status = ? WHERE id = ? AND status = ?",
                (IssueStatus.UNRESOLVED.value, issue_id, IssueStatus.RESOLVED.value),
            )
            if cur.rowcount:
                change = "regressed"

        new_user = 0
        if e.user_key is not None:
            new_user = conn.execute(
                "INSERT OR IGNORE INTO issue_users VALUES (?, ?)",
                (issue_id, e.user_key),
            ).rowcount
        conn.execute(
            "UPDATE issues SET count = count + 1, user_count = user_count + ?,"
            " first_seen = MIN(first_seen, ?), last_seen = MAX(last_seen, ?),"
            " level = ? WHERE id = ?",
            (new_user, e.timestamp, e.timestamp, e.level, issue_id),
        )
        conn.execute(
            "INSERT INTO issue_hourly VALUES (?, ?, 1) ON CONFLICT DO UPDATE"
            " SET count = count + 1",
            (issue_id, int(e.timestamp // 3600)),
        )
        conn.executemany(
            "INSERT INTO issue_tags VALUES (?, ?, ?, 1) ON CONFLICT DO UPDATE"
            " SET count = count + 1",
            [(issue_id, k, v) for k, v in e.search_tags.items()],
        )
        return issue_id, change

    # -- blobs -------------------------------------------------------------------------

    def _write_blob(self, relative: str, payload: bytes) -> None:
        path = self.blob_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def read_blob(self, relative: str) -> bytes:
        return (self.blob_dir / relative).read_bytes()

    def _pack(self, data: dict[str, Any]) -> bytes:
        packed: bytes = self._compressor.compress(orjson.dumps(data))
        return packed

    def _unpack(self, blob: bytes) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self._decompressor.decompress(blob))
        return data

    # -- reads -------------------------------------------------------------------------

    def get_issue(self, issue_id: int) -> Issue:
        rows = self._read(
            f"SELECT {_ISSUE_COLUMNS} FROM issues i WHERE id = ?", (issue_id,)
        )
        if not rows:
            raise NotFound(f"no issue with id {issue_id}")
        return _issue(rows[0])

    def issue_details(self, issue_id: int) -> dict[str, Any]:
        """The issue with its hourly counts and tag value counts."""
        issue = self.get_issue(issue_id)
        hourly = self._read(
            "SELECT hour, count FROM issue_hourly WHERE issue_id = ? ORDER BY hour",
            (issue_id,),
        )
        tags: dict[str, list[dict[str, Any]]] = {}
        for key, value, count in self._read(
            "SELECT key, value, count FROM issue_tags WHERE issue_id = ?"
            " ORDER BY key, count DESC, value",
            (issue_id,),
        ):
            tags.setdefault(key, []).append({"value": value, "count": count})
        return {
            **issue.to_json(),
            "hourly": [{"hour": h * 3600, "count": c} for h, c in hourly],
            "tags": tags,
        }

    def search_issues(
        self,
        project_id: int,
        *,
        status: str | None,
        text: Sequence[str],
        filters: Sequence[tuple[str, str]],
        sort: str,
        after: tuple[float, int] | None,
        limit: int,
    ) -> list[Issue]:
        """Issues of a project, newest ``sort`` value first, after a cursor."""
        column = {
            "last_seen": "last_seen",
            "first_seen": "first_seen",
            "count": "count",
        }[sort]
        where = ["project_id = ?"]
        params: list[Any] = [project_id]
        if status:
            where.append("status = ?")
            params.append(status)
        for word in text:
            where.append("(title LIKE ? ESCAPE '\\' OR culprit LIKE ? ESCAPE '\\')")
            pattern = "%" + _like_escape(word) + "%"
            params += [pattern, pattern]
        for key, value in filters:
            where.append(
                "EXISTS (SELECT 1 FROM issue_tags t WHERE t.issue_id = i.id"
                " AND t.key = ? AND t.value = ?)"
            )
            params += [key, value]
        if after is not None:
            where.append(f"({column} < ? OR ({column} = ? AND id < ?))")
            params += [after[0], after[0], after[1]]
        sql = (
            f"SELECT {_ISSUE_COLUMNS} FROM issues i WHERE {' AND '.join(where)}"
            f" ORDER BY {column} DESC, id DESC LIMIT ?"
        )
        params.append(limit)
        return [_issue(r) for r in self._read(sql, params)]

    def issue_events(
        self, issue_id: int, *, after: tuple[float, int] | None, limit: int
    ) -> list[tuple[int, dict[str, Any]]]:
        """Events of an issue, newest first, as (row id, summary)."""
        self.get_issue(issue_id)
        where, params = "issue_id = ?", [issue_id]
        if after is not None:
            where += " AND (timestamp < ? OR (timestamp = ? AND id < ?))"
            params += [after[0], after[0], after[1]]  # type: ignore[list-item]
        rows = self._read(
            f"SELECT id, event_id, timestamp, level, data FROM events WHERE {where}"
            " ORDER BY timestamp DESC, id DESC LIMIT ?",
            [*params, limit],
        )
        out = []
        for row_id, event_id, ts, level, blob in rows:
            data = self._unpack(blob)
            out.append(
                (
                    row_id,
                    {
                        "event_id": event_id,
                        "timestamp": ts,
                        "level": level,
                        "title": data.get("title", ""),
                        "message": data.get("message", ""),
                        "tags": data.get("tags", {}),
                        "user": data.get("user"),
                    },
                )
            )
        return out

    def get_event(self, project_id: int, event_id: str) -> dict[str, Any]:
        rows = self._read(
            "SELECT issue_id, data FROM events WHERE project_id = ? AND event_id = ?",
            (project_id, event_id),
        )
        if not rows:
            raise NotFound(f"no event {event_id} in project {project_id}")
        issue_id, blob = rows[0]
        event = self._unpack(blob)
        event["issue_id"] = issue_id
        event["attachments"] = [
            {
                "id": i,
                "filename": f,
                "content_type": c,
                "attachment_type": t,
                "size": s,
            }
            for i, f, c, t, s in self._read(
                "SELECT id, filename, content_type, attachment_type, size"
                " FROM attachments WHERE project_id = ? AND event_id = ? ORDER BY id",
                (project_id, event_id),
            )
        ]
        return event

    def get_attachment(
        self, project_id: int, event_id: str, attachment_id: int
    ) -> tuple[str, bytes]:
        rows = self._read(
            "SELECT content_type, blob FROM attachments"
            " WHERE project_id = ? AND event_id = ? AND id = ?",
            (project_id, event_id, attachment_id),
        )
        if not rows:
            raise NotFound("no such attachment")
        return rows[0][0], self.read_blob(rows[0][1])

    def replay_segments(self, project_id: int, replay_id: str) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT segment_id, received, event FROM replay_segments"
            " WHERE project_id = ? AND replay_id = ? ORDER BY segment_id",
            (project_id, replay_id),
        )
        return [
            {"segment_id": s, "received": r, "event": self._unpack(e)}
            for s, r, e in rows
        ]

    def replay_recording(
        self, project_id: int, replay_id: str, segment_id: int
    ) -> bytes:
        """A segment's ``replay_recording`` item, as the SDK sent it."""
        rows = self._read(
            "SELECT blob FROM replay_segments"
            " WHERE project_id = ? AND replay_id = ? AND segment_id = ?",
            (project_id, replay_id, segment_id),
        )
        if not rows:
            raise NotFound(f"no segment {segment_id} of replay {replay_id}")
        return self.read_blob(rows[0][0])

    def list_feedback(self, project_id: int, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT event_id, received, data FROM feedback WHERE project_id = ?"
            " ORDER BY received DESC LIMIT ?",
            (project_id, limit),
        )
        return [
            {"event_id": e, "received": r, "event": self._unpack(d)} for e, r, d in rows
        ]

    def stats(self, project_id: int) -> dict[str, Any]:
        events = self._read(
            "SELECT COUNT(*) FROM events WHERE project_id = ?", (project_id,)
        )
        issues = self._read(
            "SELECT COUNT(*) FROM issues WHERE project_id = ?", (project_id,)
        )
        counters = dict(
            self._read(
                "SELECT name, SUM(quantity) FROM counters WHERE project_id = ?"
                " GROUP BY name",
                (project_id,),
            )
        )
        return {
            "events_stored": events[0][0],
            "issues": issues[0][0],
            "counters": counters,
        }

    # -- issue changes -----------------------------------------------------------------

    def set_status(
        self, project_id: int, ids: Sequence[int], status: IssueStatus
    ) -> int:
        with self._writer() as conn:
            cur = conn.execute(
                f"UPDATE issues SET status = ? WHERE project_id = ?"
                f" AND id IN ({_marks(ids)})",
                (status.value, project_id, *ids),
            )
        return cur.rowcount

    def delete_issues(self, project_id: int, ids: Sequence[int]) -> int:
        with self._writer() as conn:
            conn.execute(
                f"DELETE FROM events WHERE project_id = ?"
                f" AND issue_id IN ({_marks(ids)})",
                (project_id, *ids),
            )
            cur = conn.execute(
                f"DELETE FROM issues WHERE project_id = ? AND id IN ({_marks(ids)})",
                (project_id, *ids),
            )
        return cur.rowcount

    def merge_issues(self, project_id: int, ids: Sequence[int]) -> int:
        """Fold the issues into the oldest of them; returns the surviving id."""
        with self._writer() as conn:
            rows = conn.execute(
                f"SELECT id FROM issues WHERE project_id = ? AND id IN ({_marks(ids)})"
                " ORDER BY first_seen, id",
                (project_id, *ids),
            ).fetchall()
            if len(rows) != len(set(ids)):
                raise NotFound("some of the issues do not exist in this project")
            target, others = rows[0][0], [r[0] for r in rows[1:]]
            if others:
                _fold_into(conn, target, others)
        return int(target)


def _fold_into(conn: sqlite3.Connection, target: int, others: list[int]) -> None:
    marks = _marks(others)
    for table in ("issue_hashes", "events"):
        conn.execute(
            f"UPDATE {table} SET issue_id = ? WHERE issue_id IN ({marks})",
            (target, *others),
        )
    conn.execute(
        f"INSERT OR IGNORE INTO issue_users SELECT ?, user_key FROM issue_users"
        f" WHERE issue_id IN ({marks})",
        (target, *others),
    )
    conn.execute(
        f"INSERT INTO issue_hourly SELECT ?, hour, SUM(count) FROM issue_hourly"
        f" WHERE issue_id IN ({marks}) GROUP BY hour ON CONFLICT DO UPDATE"
        f" SET count = count + excluded.count",
        (target, *others),
    )
    conn.execute(
        f"INSERT INTO issue_tags SELECT ?, key, value, SUM(count) FROM issue_tags"
        f" WHERE issue_id IN ({marks}) GROUP BY key, value ON CONFLICT DO UPDATE"
        f" SET count = count + excluded.count",
        (target, *others),
    )
    conn.execute(
        f"UPDATE issues SET"
        f" count = (SELECT COUNT(*) FROM events WHERE issue_id = ?),"
        f" user_count = (SELECT COUNT(*) FROM issue_users WHERE issue_id = ?),"
        f" first_seen = MIN(first_seen, (SELECT MIN(first_seen) FROM issues"
        f"  WHERE id IN ({marks}))),"
        f" last_seen = MAX(last_seen, (SELECT MAX(last_seen) FROM issues"
        f"  WHERE id IN ({marks})))"
        f" WHERE id = ?",
        (target, target, *others, *others, target),
    )
    conn.execute(f"DELETE FROM issues WHERE id IN ({marks})", others)


_ISSUE_COLUMNS = (
    "id, project_id, title, culprit, level, status, first_seen, last_seen, count,"
    " user_count"
)


def _issue(row: Sequence[Any]) -> Issue:
    return Issue(
        id=row[0],
        project_id=row[1],
        title=row[2],
        culprit=row[3],
        level=row[4],
        status=IssueStatus(row[5]),
        first_seen=row[6],
        last_seen=row[7],
        count=row[8],
        user_count=row[9],
    )


def _marks(ids: Sequence[int]) -> str:
    return ", ".join("?" * len(ids))


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _attachment_path(a: StoredAttachment) -> str:
    # Named by content, so the same attachment sent twice is stored once.
    digest = hashlib.sha256(a.payload).hexdigest()[:32]
    return f"attachments/{a.project_id}/{a.event_id}/{digest}"


def _replay_path(r: ReplaySegment) -> str:
    return f"replays/{r.project_id}/{r.replay_id}/{r.segment_id}"
