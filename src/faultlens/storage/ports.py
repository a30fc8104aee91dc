"""The storage ports: what the rest of Faultlens needs from a store.

The core talks only to these protocols; ``storage/sqlite/`` implements them on the
embedded store. Records are plain frozen dataclasses so that adapters can build them
from rows or documents alike.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class IssueStatus(enum.StrEnum):
    """Where an issue stands. Transitions are guarded by :func:`transition`."""

    UNRESOLVED = "unresolved"
    RESOLVED = "resolved"
    IGNORED = "ignored"


#: Allowed status changes requested by people. A new event on a resolved issue moves it
#: back to unresolved (a regression) outside this table, in processing.
_TRANSITIONS: dict[IssueStatus, frozenset[IssueStatus]] = {
    IssueStatus.UNRESOLVED: frozenset({IssueStatus.RESOLVED, IssueStatus.IGNORED}),
    IssueStatus.RESOLVED: frozenset({IssueStatus.UNRESOLVED, IssueStatus.IGNORED}),
    IssueStatus.IGNORED: frozenset({IssueStatus.UNRESOLVED, IssueStatus.RESOLVED}),
}


def transition(current: IssueStatus, wanted: IssueStatus) -> IssueStatus:
    """Return ``wanted`` if an issue may move there from ``current``."""
    if wanted == current or wanted in _TRANSITIONS[current]:
        return wanted
    raise ValueError(f"an issue cannot go from {current} to {wanted}")


@dataclass(frozen=True)
class Project:
    id: int
    slug: str
    name: str
    grouping_version: str
    created_at: float


@dataclass(frozen=True)
class ProjectKey:
    public_key: str
    project_id: int
    label: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class InboxEntry:
    """One accepted envelope, as it was received, waiting to be processed.

    ``body`` is the request body exactly as received and ``encoding`` its
    ``Content-Encoding``; the worker decompresses it again under the same limits.
    ``event_id`` is the id the client was answered with, so that an event without an
    id of its own gets the same one however often it is processed.
    """

    project_id: int
    public_key: str
    received_at: float
    body: bytes
    encoding: str
    client_ip: str | None
    event_id: str | None
    #: ``envelope`` or ``store`` (a legacy single-event JSON body).
    kind: str = "envelope"
    id: int = 0


@dataclass(frozen=True)
class Outcome:
    """A count of items accepted or dropped, by why."""

    project_id: int
    category: str
    outcome: str
    reason: str
    quantity: int = 1


@dataclass
class StoredEvent:
    """An event ready to write: normalised, grouped, with what the issue needs."""

    project_id: int
    event_id: str
    hash: str
    timestamp: float
    received: float
    level: str
    title: str
    culprit: str
    user_key: str | None
    search_tags: dict[str, str]
    data: dict[str, Any]


@dataclass(frozen=True)
class StoredAttachment:
    project_id: int
    event_id: str
    filename: str
    content_type: str
    attachment_type: str
    payload: bytes


@dataclass(frozen=True)
class ReplaySegment:
    """One replay segment: its ``replay_event`` and its recording as received."""

    project_id: int
    replay_id: str
    segment_id: int
    received: float
    event: dict[str, Any]
    recording: bytes


@dataclass(frozen=True)
class Feedback:
    project_id: int
    event_id: str
    received: float
    data: dict[str, Any]


@dataclass(frozen=True)
class DeadLetter:
    """An inbox entry that processing could not handle, kept whole for a later look."""

    entry: InboxEntry
    error: str


@dataclass
class Batch:
    """Everything one worker pass writes, committed with ``position`` at once."""

    position: int
    events: list[StoredEvent] = field(default_factory=list)
    attachments: list[StoredAttachment] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    replays: list[ReplaySegment] = field(default_factory=list)
    #: (project id, counter name) -> quantity, e.g. sessions seen.
    counters: Counter[tuple[int, str]] = field(default_factory=Counter)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def merge(self, other: Batch) -> None:
        """Take in everything ``other`` holds (its position is ignored)."""
        self.events += other.events
        self.attachments += other.attachments
        self.feedback += other.feedback
        self.replays += other.replays
        self.counters.update(other.counters)
        self.dead_letters += other.dead_letters


@dataclass(frozen=True)
class Issue:
    id: int
    project_id: int
    title: str
    culprit: str
    level: str
    status: IssueStatus
    first_seen: float
    last_seen: float
    count: int
    user_count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project_id": self.project_id,
            "title": self.title,
            "culprit": self.culprit,
            "level": self.level,
            "status": self.status.value,
            "count": self.count,
            "user_count": self.user_count,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }


class InboxUnavailable(Exception):
    """The inbox could not store an envelope: it is full, or its storage failed.

    Nothing of the envelope was kept, so the client must send it again later.
    """

    def __init__(self, detail: str, *, full: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.full = full


class Inbox(Protocol):
    """Accepted envelopes, durable before the client is answered; see the adapter."""

    async def append(self, entry: InboxEntry) -> int:
        """Store ``entry`` durably and return its id; or raise InboxUnavailable."""
        ...

    def read_after(self, position: int, limit: int) -> Sequence[InboxEntry]: ...

    def trim(self, upto: int) -> None: ...

    def last_id(self) -> int: ...

    def record_outcomes(self, outcomes: Iterable[Outcome]) -> None: ...
