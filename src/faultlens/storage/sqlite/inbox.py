"""The inbox: accepted envelopes, durable before the client hears "OK".

Guarantee
    :meth:`SqliteInbox.append` returns only after the entry is committed to
    ``inbox.db`` with ``synchronous=FULL`` in WAL mode, so an acknowledged envelope
    survives the process being killed (and the machine losing power) at any moment.

Cost
    One writer thread owns the write connection. Requests hand it their entries through
    a queue; it takes everything waiting (up to ``batch_size``), writes it in one
    transaction and answers every caller at once (group commit). Under load, many
    requests share one fsync; when idle, one request costs one transaction.

Order and delivery
    Entry ids grow with commit order. The inbox keeps no "done" flag: the worker
    records the highest id it has processed in the *event store*, in the same
    transaction as the events it wrote (see :mod:`faultlens.processing.worker`). An
    entry is therefore processed at least once, and its effects are applied exactly
    once. Processed entries are deleted later by :meth:`trim`, which only ever removes
    ids at or below the worker's committed position.

Room
    With ``max_size``, the database file grows to at most that many bytes. A batch
    that would pass it is rolled back, and each of its appends raises
    :class:`InboxUnavailable` (``full``), as when a transaction fails for any other
    reason: nothing of them is kept, the caller answers 503 and the client sends
    the envelope again later. Deletes never need room, so trimming runs in a
    transaction of its own and a full inbox drains as processing catches up.

Outcomes (counts of accepted and dropped items) are kept here too, in their own table,
written by the same thread; they are statistics, so a crash may lose the last second
of counts but never an event.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faultlens.storage.ports import InboxEntry, InboxUnavailable, Outcome
from faultlens.storage.sqlite.db import connect

log = logging.getLogger("faultlens.storage.inbox")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    project_id INTEGER NOT NULL,
    public_key TEXT NOT NULL,
    received_at REAL NOT NULL,
    encoding TEXT NOT NULL,
    client_ip TEXT,
    event_id TEXT,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outcomes (
    project_id INTEGER NOT NULL,
    hour INTEGER NOT NULL,
    category TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    PRIMARY KEY (project_id, hour, category, outcome, reason)
) WITHOUT ROWID;
"""

_INSERT = (
    "INSERT INTO inbox (kind, project_id, public_key, received_at, encoding,"
    " client_ip, event_id, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass
class _Append:
    entry: InboxEntry
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[int]


@dataclass(frozen=True)
class _Trim:
    upto: int


@dataclass(frozen=True)
class _Flush:
    done: threading.Event


_Request = _Append | _Trim | _Flush | None


@dataclass
class _Pending:
    appends: list[_Append] = field(default_factory=list)
    flushes: list[_Flush] = field(default_factory=list)
    trim_upto: int = 0


class SqliteInbox:
    """The embedded inbox; see the module docstring for its guarantee."""

    def __init__(self, path: Path, *, batch_size: int = 512, max_size: int = 0) -> None:
        self._path = path
        self._batch_size = batch_size
        self._max_size = max_size
        self._full = False
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._outcomes: Counter[tuple[int, str, str, str]] = Counter()
        self._outcomes_lock = threading.Lock()
        self._local = threading.local()
        self._committed = threading.Condition()
        self._last_committed = 0

        conn = connect(path)
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM inbox").fetchone()
        self._last_committed = int(row[0])
        conn.close()

        self._thread = threading.Thread(
            target=self._run, name="faultlens-inbox-writer", daemon=True
        )
        self._thread.start()

    # -- the request side ------------------------------------------------------------

    async def append(self, entry: InboxEntry) -> int:
        """Store ``entry`` durably and return its id; or raise InboxUnavailable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.put(_Append(entry, loop, future))
        return await future

    def record_outcomes(self, outcomes: Iterable[Outcome]) -> None:
        """Count outcomes; they are written with the next batch."""
        with self._outcomes_lock:
            for o in outcomes:
                key = (o.project_id, o.category, o.outcome, o.reason)
                self._outcomes[key] += o.quantity

    # -- the worker side -------------------------------------------------------------

    def read_after(self, position: int, limit: int) -> Sequence[InboxEntry]:
        rows = self._reader().execute(
            "SELECT id, kind, project_id, public_key, received_at, encoding,"
            " client_ip, event_id, body FROM inbox WHERE id > ? ORDER BY id LIMIT ?",
            (position, limit),
        )
        return [
            InboxEntry(
                id=r[0],
                kind=r[1],
                project_id=r[2],
                public_key=r[3],
                received_at=r[4],
                encoding=r[5],
                client_ip=r[6],
                event_id=r[7],
                body=bytes(r[8]),
            )
            for r in rows
        ]

    def trim(self, upto: int) -> None:
        """Delete entries with ids up to ``upto``, which must all be processed."""
        self._queue.put(_Trim(upto))

    def last_id(self) -> int:
        return self._last_committed

    @property
    def full(self) -> bool:
        """Whether the last append found no room (see ``max_size``)."""
        return self._full

    def wait_for_entries_after(self, position: int, timeout: float) -> bool:
        """Block until an entry past ``position`` is committed, or ``timeout``."""
        with self._committed:
            return self._committed.wait_for(
                lambda: self._last_committed > position, timeout
            )

    def outcome_totals(self, project_id: int) -> list[dict[str, Any]]:
        self._flush_signal()
        rows = self._reader().execute(
            "SELECT category, outcome, reason, SUM(quantity) FROM outcomes"
            " WHERE project_id = ? GROUP BY category, outcome, reason"
            " ORDER BY category, outcome, reason",
            (project_id,),
        )
        return [
            {"category": c, "outcome": o, "reason": r, "quantity": q}
            for c, o, r, q in rows
        ]

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    # -- the writer thread -----------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path, readonly=True)
            self._local.conn = conn
        return conn

    def _flush_signal(self) -> None:
        # Pending outcome counts are written before a reader looks, so it sees what
        # was counted before it asked.
        done = threading.Event()
        self._queue.put(_Flush(done))
        done.wait(timeout=5)

    def _run(self) -> None:
        conn = connect(self._path)
        if self._max_size > 0:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = max(1, self._max_size // page_size)
            conn.execute(f"PRAGMA max_page_count = {pages}")
        closing = False
        while not closing:
            first = self._queue.get()
            pending, closing = self._drain(first)
            try:
                self._write(conn, pending)
            except sqlite3.Error as exc:
                full = self._note_failure(exc)
                for a in pending.appends:
                    a.loop.call_soon_threadsafe(_fail, a.future, _refusal(exc, full))
                for f in pending.flushes:
                    f.done.set()
                continue
            self._note_room()
            for a in pending.appends:
                a.loop.call_soon_threadsafe(_resolve, a.future, a.entry.id)
            for f in pending.flushes:
                f.done.set()
        conn.close()

    def _note_failure(self, exc: sqlite3.Error) -> bool:
        """Log a failed write (once per spell of full); return whether it was full."""
        full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        if not full:
            log.error("inbox write failed: %s", exc)
        elif not self._full:
            log.warning(
                "inbox is full (%d bytes); refusing envelopes until processing"
                " frees room",
                self._max_size,
            )
        self._full = self._full or full
        return full

    def _note_room(self) -> None:
        if self._full:
            log.warning("inbox has room again; accepting envelopes")
        self._full = False

    def _drain(self, first: _Request) -> tuple[_Pending, bool]:
        pending = _Pending()
        item = first
        while True:
            if item is None:
                return pending, True
            if isinstance(item, _Append):
                pending.appends.append(item)
            elif isinstance(item, _Flush):
                pending.flushes.append(item)
            else:
                pending.trim_upto = max(pending.trim_upto, item.upto)
            if len(pending.appends) >= self._batch_size:
                return pending, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return pending, False

    def _write(self, conn: sqlite3.Connection, pending: _Pending) -> None:
        if pending.trim_upto > 0:
            # On its own: a delete needs no room, so a full inbox still drains.
            with conn:
                conn.execute("DELETE FROM inbox WHERE id <= ?", (pending.trim_upto,))

        with self._outcomes_lock:
            outcomes, self._outcomes = self._outcomes, Counter()
        try:
            self._append_all(conn, pending.appends, outcomes)
        except sqlite3.Error:
            with self._outcomes_lock:
                self._outcomes.update(outcomes)  # counted with a later batch
            raise

        if pending.appends:
            with self._committed:
                self._last_committed = pending.appends[-1].entry.id
                self._committed.notify_all()

    def _append_all(
        self,
        conn: sqlite3.Connection,
        appends: list[_Append],
        outcomes: Counter[tuple[int, str, str, str]],
    ) -> None:
        hour = int(time.time() // 3600)
        with conn:
            for a in appends:
                e = a.entry
                cur = conn.execute(
                    _INSERT,
                    (
                        e.kind,
                        e.project_id,
                        e.public_key,
                        e.received_at,
                        e.encoding,
                        e.client_ip,
                        e.event_id,
                        e.body,
                    ),
                )
                # The entry is frozen for callers; its id is known only now.
                object.__setattr__(e, "id", cur.lastrowid)
            conn.executemany(
                "INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE"
                " SET quantity = quantity + excluded.quantity",
                [(p, hour, c, o, r, q) for (p, c, o, r), q in outcomes.items()],
            )


def _resolve(future: asyncio.Future[int], value: int) -> None:
    if not future.done():
        future.set_result(value)


def _refusal(exc: sqlite3.Error, full: bool) -> InboxUnavailable:
    # One exception per caller: a raised exception collects its traceback.
    detail = (
        "the server's inbox is full; send the envelope again later"
        if full
        else "the server could not store the envelope; send it again later"
    )
    refusal = InboxUnavailable(detail, full=full)
    refusal.__cause__ = exc
    return refusal


def _fail(future: asyncio.Future[int], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
