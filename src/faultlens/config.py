"""Settings for a Faultlens process.

Every limit and tunable lives here, once. Each setting can be overridden from the
environment as ``FAULTLENS_<NAME>`` (upper case), for example
``FAULTLENS_MAX_EVENT_SIZE=2097152``. Sizes are bytes, durations seconds.

The size limits follow what Sentry's ingest accepts, so SDKs behave the same against
Faultlens as against Sentry; where we chose smaller, the reason is given.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

MiB = 1024 * 1024
KiB = 1024


@dataclass(frozen=True)
class Limits:
    """Size and count limits applied while accepting data."""

    #: The request body as it arrives, before decompression.
    max_body_size: int = 20 * MiB
    #: The envelope after decompression. Smaller than Sentry's 200 MiB because one
    #: process holds it in memory while parsing.
    max_envelope_size: int = 100 * MiB
    #: One ``event``, ``transaction`` or ``feedback`` item.
    max_event_size: int = 1 * MiB
    #: One attachment item.
    max_attachment_size: int = 20 * MiB
    #: One replay recording item, compressed and once decompressed.
    max_replay_size: int = 10 * MiB
    max_replay_decompressed_size: int = 100 * MiB
    #: One ``session``/``sessions`` item, and how many may share an envelope.
    max_session_size: int = 100 * KiB
    max_sessions_per_envelope: int = 100
    max_attachments_per_envelope: int = 30
    #: Client reports, check-ins and any item type Faultlens does not store.
    max_client_report_size: int = 100 * KiB
    max_check_in_size: int = 100 * KiB
    max_other_item_size: int = 10 * MiB
    #: Items of any type in one envelope; bounds the parser's work.
    max_items_per_envelope: int = 1000
    #: Nesting depth of any JSON payload; deeper payloads are refused.
    max_json_depth: int = 64
    #: Event timestamps are clamped to [now - past, now + future]; the original is kept.
    max_event_age: float = 30 * 24 * 3600.0
    max_event_future: float = 60.0


@dataclass(frozen=True)
class RateLimits:
    """Token-bucket rate limits for ingestion; generous by default.

    A bucket refills at ``*_per_second`` up to ``*_burst`` tokens; every accepted
    envelope takes one token from its key's bucket and one from its project's.
    Zero turns a bucket off.
    """

    key_per_second: float = 1000.0
    key_burst: float = 5000.0
    project_per_second: float = 2000.0
    project_burst: float = 10000.0


@dataclass(frozen=True)
class Settings:
    """Everything one Faultlens process needs to know."""

    data_dir: Path = Path(".faultlens")
    host: str = "127.0.0.1"
    port: int = 8000
    #: The URL SDKs use to reach this server; DSNs are built from it. Defaults to
    #: ``http://{host}:{port}``.
    public_url: str = ""
    limits: Limits = field(default_factory=Limits)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    #: Peers whose ``X-Forwarded-For`` is believed, as IP addresses or networks.
    trusted_proxies: tuple[str, ...] = ()
    #: Origins allowed to post from browsers; ``*`` allows any.
    allowed_origins: tuple[str, ...] = ("*",)
    #: Inbox group commit: a batch is written once it has this many envelopes, or
    #: when the writer finds the queue empty, whichever comes first.
    inbox_batch_size: int = 512
    #: The worker claims up to this many inbox entries per transaction.
    worker_batch_size: int = 256
    #: ``/readyz`` reports not ready when this many accepted envelopes wait.
    max_inbox_lag: int = 100_000
    #: The inbox database may grow to this many bytes (0: no cap). Past it, envelopes
    #: are answered 503 with ``Retry-After`` until processing frees room, so a
    #: backlog that processing cannot keep up with takes this much disk and no more.
    max_inbox_size: int = 2048 * MiB
    #: ``Retry-After`` in seconds on a 503 from a full or failing inbox.
    inbox_retry_after: int = 30
    #: Where ``faultlens serve`` runs the processing worker: ``process`` (a child
    #: process it starts, watches and stops, so that processing and accepting do not
    #: take turns on one interpreter lock), ``thread`` (inside the server process),
    #: or ``off`` (separate ``faultlens worker`` processes do the work).
    worker_mode: str = "process"

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> Settings:
        """Build settings from ``FAULTLENS_*`` variables, then explicit overrides."""
        env = os.environ if environ is None else environ
        settings = cls()
        limits = _apply_env(settings.limits, env)
        rate_limits = _apply_env(settings.rate_limits, env, prefix="FAULTLENS_RATE_")
        settings = _apply_env(settings, env)
        settings = dataclasses.replace(settings, limits=limits, rate_limits=rate_limits)
        clean = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(settings, **clean)  # type: ignore[arg-type]


def _apply_env(obj: T, env: Mapping[str, str], prefix: str = "FAULTLENS_") -> T:
    changes: dict[str, object] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        raw = env.get(prefix + f.name.upper())
        if raw is None:
            continue
        current = getattr(obj, f.name)
        changes[f.name] = _parse_value(f.name, raw, current)
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


def _parse_value(name: str, raw: str, current: object) -> object:
    try:
        if isinstance(current, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, Path):
            return Path(raw)
        if isinstance(current, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(
            f"FAULTLENS_{name.upper()}={raw!r} is not a valid value"
        ) from exc
    return raw
