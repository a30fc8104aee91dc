"""The processing worker: turns accepted envelopes into events and issues.

Guarantee
    Every entry in the inbox is processed at least once, and its effects are applied
    exactly once. The worker reads entries after its *position*, processes a batch,
    then commits the batch's rows together with the new position in one transaction
    of the event store. If the process dies before that commit, the next start reads
    the same entries again from the old position; if it dies after, they are not read
    again. Events are also unique on ``(project, event_id)``, so an SDK that sends the
    same event twice gets it stored once.

Failures
    An entry that cannot be processed (it passed the checks at the door, so this
    means a bug) is not retried forever and not dropped: it is written whole to the
    ``dead_letters`` table in the same transaction, and counted.

Who writes what
    The worker is the only writer of events and issue counters. It asks the inbox to
    trim entries up to its committed position; the inbox's own thread does it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from faultlens.ingest.errors import IngestError
from faultlens.processing.pipeline import Context, process_entry
from faultlens.storage.ports import Batch, DeadLetter, InboxEntry, Outcome, Project
from faultlens.storage.sqlite.inbox import SqliteInbox
from faultlens.storage.sqlite.store import NotFound, SqliteStore, WriteResult

log = logging.getLogger("faultlens.processing")

#: Called after each committed batch, with what it changed; for domain events.
Listener = Callable[[WriteResult], None]


@dataclass
class Worker:
    """Processes the inbox into the store; see the module docstring."""

    inbox: SqliteInbox
    store: SqliteStore
    context: Context
    batch_size: int = 256
    #: How long to wait for new entries before looking again; entries committed by
    #: another process are only seen by looking.
    poll_interval: float = 0.05
    #: Held while running, so that two workers never share one embedded inbox.
    lock_path: Path | None = None
    #: Stop when this process is no longer our parent (a supervising server died).
    parent_pid: int | None = None
    listeners: list[Listener] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _projects: dict[int, Project] = field(default_factory=dict)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.run, name="faultlens-worker", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def run(self) -> None:
        lock = self._lock()
        position = self.store.position()
        while not self._stop.is_set() and self._parent_alive():
            try:
                position = self.run_once(position)
            except Exception:
                # A store failure (disk full, locked): nothing was committed, so the
                # same entries are tried again after a pause.
                log.exception("processing batch failed; retrying")
                self._stop.wait(1.0)
        if lock is not None:
            lock.close()

    def _parent_alive(self) -> bool:
        return self.parent_pid is None or os.getppid() == self.parent_pid

    def _lock(self) -> IO[str] | None:
        if self.lock_path is None:
            return None
        handle = open(self.lock_path, "a")  # noqa: SIM115 - held for the whole run
        # Waits while another worker runs; it may be one shutting down.
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    def run_once(self, position: int) -> int:
        """Process one batch after ``position``; return the new position."""
        entries = self.inbox.read_after(position, self.batch_size)
        if not entries:
            self.inbox.wait_for_entries_after(position, self.poll_interval)
            return position

        batch = Batch(position=entries[-1].id)
        outcomes: list[Outcome] = []
        for entry in entries:
            outcomes += self._process(entry, batch)
        result = self.store.write_batch(batch)

        self.inbox.trim(batch.position)
        self.inbox.record_outcomes(outcomes)
        for listener in self.listeners:
            listener(result)
        return batch.position

    def _process(self, entry: InboxEntry, batch: Batch) -> list[Outcome]:
        try:
            project = self._project(entry.project_id)
        except NotFound:
            # The project was deleted after the envelope was accepted.
            return [Outcome(entry.project_id, "default", "filtered", "project_gone")]
        # An entry goes into the batch whole or not at all.
        part = Batch(position=entry.id)
        try:
            outcomes = process_entry(entry, project, self.context, part)
            batch.merge(part)
            return outcomes
        except IngestError as exc:
            # Settings tightened between accept and processing, for example.
            error = f"{type(exc).__name__}: {exc.detail}"
        except Exception as exc:
            log.exception("processing inbox entry %d failed", entry.id)
            error = type(exc).__name__
        batch.dead_letters.append(DeadLetter(entry, error[:500]))
        return [Outcome(entry.project_id, "default", "invalid", "processing_failed")]

    def _project(self, project_id: int) -> Project:
        project = self._projects.get(project_id)
        if project is None:
            project = self.store.get_project(project_id)
            self._projects[project_id] = project
        return project
