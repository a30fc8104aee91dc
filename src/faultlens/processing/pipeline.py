"""From one accepted envelope to the rows it becomes.

Everything here is a pure function of the inbox entry, the project and the settings,
so that processing an entry twice gives the same rows twice (which the store then
writes once).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from faultlens.config import Limits
from faultlens.ingest.decompress import decompress
from faultlens.ingest.envelope import (
    Envelope,
    Item,
    parse_envelope,
    parse_json_payload,
    parse_store_body,
)
from faultlens.ingest.errors import IngestError
from faultlens.processing.grouping import compute_hash
from faultlens.processing.normalize import (
    event_culprit,
    event_search_tags,
    event_title,
    event_user_key,
    normalize_event,
)
from faultlens.processing.severity import SeverityRule, classify
from faultlens.storage.ports import (
    Batch,
    Feedback,
    InboxEntry,
    Outcome,
    Project,
    ReplaySegment,
    StoredAttachment,
    StoredEvent,
)

log = logging.getLogger("faultlens.processing")

#: Item types whose data Faultlens does not keep yet; they are counted, then dropped.
_COUNTED_ONLY = frozenset(
    {
        "transaction",
        "span",
        "check_in",
        "log",
        "trace_metric",
        "profile",
        "profile_chunk",
        "statsd",
        "metric_buckets",
    }
)


@dataclass(frozen=True)
class Context:
    """What processing needs besides the entry itself."""

    limits: Limits
    severity_rules: Sequence[SeverityRule] = ()


def process_entry(
    entry: InboxEntry, project: Project, ctx: Context, batch: Batch
) -> list[Outcome]:
    """Add what ``entry`` becomes to ``batch``; return the outcomes to count."""
    body = decompress(entry.body, entry.encoding, ctx.limits.max_envelope_size)
    if entry.kind == "store":
        raw = parse_store_body(body, ctx.limits)
        event_id = entry.event_id or str(raw.get("event_id", ""))
        _add_event(raw, event_id, entry, project, ctx, batch)
        return [Outcome(project.id, "error", "accepted", "")]

    envelope = parse_envelope(body, ctx.limits)
    event_id = envelope.event_id or entry.event_id or ""
    outcomes: list[Outcome] = []
    recordings = [i for i in envelope.items if i.type == "replay_recording"]
    for item in envelope.items:
        try:
            outcome = _add_item(
                item, envelope, event_id, recordings, entry, project, ctx, batch
            )
        except IngestError as exc:
            # The door checked framing and JSON; what only processing finds wrong
            # (a payload nested too deeply, say) drops that item alone, counted.
            outcome = Outcome(project.id, item.category, "invalid", exc.reason)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


def _add_item(
    item: Item,
    envelope: Envelope,
    event_id: str,
    recordings: list[Item],
    entry: InboxEntry,
    project: Project,
    ctx: Context,
    batch: Batch,
) -> Outcome | None:
    kind = item.type
    pid = project.id
    if kind == "event":
        raw = parse_json_payload(item.payload, ctx.limits, "event")
        _add_event(raw, event_id, entry, project, ctx, batch)
        return Outcome(pid, item.category, "accepted", "")
    if kind == "attachment":
        batch.attachments.append(
            StoredAttachment(
                project_id=pid,
                event_id=event_id,
                filename=str(item.headers.get("filename") or "attachment"),
                content_type=str(
                    item.headers.get("content_type") or "application/octet-stream"
                ),
                attachment_type=str(
                    item.headers.get("attachment_type") or "event.attachment"
                ),
                payload=item.payload,
            )
        )
        return Outcome(pid, "attachment", "accepted", "")
    if kind in ("feedback", "user_report"):
        data = parse_json_payload(item.payload, ctx.limits, kind)
        fid = event_id or str(data.get("event_id", ""))
        batch.feedback.append(Feedback(pid, fid, entry.received_at, data))
        return Outcome(pid, "feedback", "accepted", "")
    if kind == "replay_event":
        return _add_replay(item, recordings, entry, pid, ctx, batch)
    if kind == "replay_recording":
        return None  # Taken with its replay_event.
    if kind in ("session", "sessions"):
        _count_sessions(item, pid, ctx, batch)
        return Outcome(pid, "session", "accepted", "")
    if kind == "client_report":
        return _count_client_report(item, pid, ctx, batch)
    batch.counters[(pid, f"items.{kind if kind in _COUNTED_ONLY else 'unknown'}")] += 1
    return Outcome(pid, item.category, "filtered", f"not_stored:{kind}"[:64])


def _add_event(
    raw: dict[str, Any],
    event_id: str,
    entry: InboxEntry,
    project: Project,
    ctx: Context,
    batch: Batch,
) -> None:
    event = normalize_event(
        raw,
        event_id=event_id,
        received_at=entry.received_at,
        client_ip=entry.client_ip,
        limits=ctx.limits,
    )
    event["level"] = classify(event, ctx.severity_rules)
    event["title"] = event_title(event)
    event["culprit"] = event_culprit(event)
    event_hash = compute_hash(event, project.grouping_version)
    event["grouping"] = {"version": project.grouping_version, "hash": event_hash}
    batch.events.append(
        StoredEvent(
            project_id=project.id,
            event_id=event_id,
            hash=event_hash,
            timestamp=float(event["timestamp"]),
            received=entry.received_at,
            level=event["level"],
            title=event["title"],
            culprit=event["culprit"],
            user_key=event_user_key(event),
            search_tags=event_search_tags(event),
            data=event,
        )
    )


def _add_replay(
    item: Item,
    recordings: list[Item],
    entry: InboxEntry,
    pid: int,
    ctx: Context,
    batch: Batch,
) -> Outcome:
    event = parse_json_payload(item.payload, ctx.limits, "replay_event")
    replay_id = str(event.get("replay_id") or event.get("event_id") or "")
    segment = event.get("segment_id")
    if not replay_id or not isinstance(segment, int) or not recordings:
        return Outcome(pid, "replay", "invalid", "replay_incomplete")
    batch.replays.append(
        ReplaySegment(
            pid,
            replay_id.lower(),
            segment,
            entry.received_at,
            event,
            recordings[0].payload,
        )
    )
    return Outcome(pid, "replay", "accepted", "")


def _count_sessions(item: Item, pid: int, ctx: Context, batch: Batch) -> None:
    data = parse_json_payload(item.payload, ctx.limits, item.type)
    if item.type == "session":
        batch.counters[(pid, "sessions.updates")] += 1
        if data.get("init") is True:
            batch.counters[(pid, "sessions.started")] += 1
        status = data.get("status")
        if isinstance(status, str) and status in ("crashed", "abnormal", "errored"):
            batch.counters[(pid, f"sessions.{status}")] += 1
        return
    for bucket in data.get("aggregates") or []:
        if not isinstance(bucket, dict):
            continue
        for name in ("exited", "errored", "crashed", "abnormal"):
            n = bucket.get(name)
            if isinstance(n, int) and n > 0:
                batch.counters[(pid, f"sessions.{name}")] += n
                batch.counters[(pid, "sessions.started")] += n


def _count_client_report(item: Item, pid: int, ctx: Context, batch: Batch) -> Outcome:
    data = parse_json_payload(item.payload, ctx.limits, "client_report")
    for d in data.get("discarded_events") or []:
        if not isinstance(d, dict):
            continue
        reason, category, quantity = (
            d.get("reason"),
            d.get("category"),
            d.get("quantity"),
        )
        if (
            isinstance(reason, str)
            and isinstance(category, str)
            and isinstance(quantity, int)
        ):
            key = f"client_discard.{category[:32]}.{reason[:32]}"
            batch.counters[(pid, key)] += max(quantity, 0)
    return Outcome(pid, "internal", "accepted", "client_report")
