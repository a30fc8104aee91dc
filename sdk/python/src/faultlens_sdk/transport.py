"""An offline-first transport for sentry-sdk: every envelope goes to disk, then out.

:class:`OfflineTransport` replaces sentry-sdk's HTTP transport. ``capture_envelope``
only serializes the envelope and hands it to a bounded in-memory queue; a writer
thread moves it into a directory on disk and a sender thread posts the files there to
the DSN's envelope endpoint, oldest first, deleting each file once the server has
answered 2xx. When the server cannot be reached the files wait, and a later process
using the same directory sends what an earlier one left behind.

Guarantee
    At-least-once delivery of every envelope that reached the disk queue, as long as
    the queue is not over its size cap. An envelope is sent again only if the answer
    to an earlier attempt was lost (timeout, crash mid-request); Faultlens stores an
    event once per event id, so such a resend does not create a duplicate event.
    A file is never sent again after a 2xx answer.

What can be lost, and how it is counted
    Losses are counted as client reports (``discarded_events``) and sent with a later
    envelope, so the server knows about them:

    * ``queue_overflow``: the in-memory queue was full (the caller is never blocked),
      or the disk queue went over ``max_queue_bytes`` and its oldest files were
      dropped.
    * ``send_error``: the server answered 4xx other than 408 and 429; it will never
      accept that envelope, so it is deleted.
    * ``internal_sdk_error``: an envelope could not be serialized or written, or a
      queue file could not be read back.

    Counts are persisted into the queue (as a client-report envelope) by ``flush``,
    ``kill``, and every ``client_report_interval`` seconds, so a process that exits
    or stops sending does not take them along. A count may be reported twice if a
    send that carried it completes while the transport is being killed.

Limits
    * Rate limits (429, ``X-Sentry-Rate-Limits``, ``Retry-After``) hold envelopes
      back; they are never dropped for a rate limit. An envelope waits while any of
      its items is in a limited category. Held envelopes still count against the
      size cap.
    * Envelopes are persisted uncompressed and readable only by the owner (0600).
    * Whatever is still in memory when the process dies without ``flush`` or
      ``kill`` (``SIGKILL``, ``os._exit``) is lost; the writer thread normally
      moves envelopes to disk within milliseconds.
    * One queue directory belongs to one DSN: the files do not record where they
      were meant to go.
    * Several processes may share a directory (e.g. gunicorn workers). All of them
      write to it, one of them (holding an ``flock`` on ``.sender.lock``) sends, and
      the others try to take over every ``poll_interval`` seconds. The size cap is
      enforced by whichever process writes, so with several writers it can be
      exceeded for up to ``poll_interval`` seconds. POSIX only (``fcntl``).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import logging
import os
import random
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path

import urllib3
from sentry_sdk.consts import VERSION, EndpointType
from sentry_sdk.envelope import Envelope, Item, PayloadRef
from sentry_sdk.integrations.logging import ignore_logger
from sentry_sdk.transport import Transport

__all__ = ["OfflineTransport"]

log = logging.getLogger("faultlens_sdk.transport")

_SUFFIX = ".envelope"
_REPORT_SUFFIX = ".report.envelope"
_TMP_PREFIX = ".tmp-"
_SENDER_LOCK = ".sender.lock"
_QUEUE_LOCK = ".queue.lock"
#: A temp file this old belongs to a writer that died mid-write.
_STALE_TMP_SECONDS = 600.0
#: Used when a 429 names no usable ``Retry-After``, as sentry-sdk does.
_DEFAULT_RETRY_AFTER = 60.0

_CountKey = tuple[str, str]  # (data category, reason)


class OfflineTransport(Transport):
    """Persist envelopes to ``queue_dir`` and send them when the server is reachable.

    :param dsn: the project's DSN.
    :param queue_dir: the directory of the on-disk queue; created if missing. Use one
        directory per DSN.
    :param max_queue_bytes: cap on the total size of the queue files; the oldest are
        dropped (and counted) when a write takes the queue over it.
    :param timeout: seconds for one HTTP request, connecting included.
    :param backoff_base: first retry delay in seconds after a network error or 5xx;
        it doubles with each further failure.
    :param backoff_max: cap on the retry delay in seconds.
    :param memory_queue_size: envelopes waiting in memory for the writer thread;
        beyond it, envelopes are dropped and counted rather than blocking the caller.
    :param poll_interval: seconds between attempts to take over sending from another
        process, and between looks for files other processes added.
    :param client_report_interval: seconds that loss counts may wait in memory for
        an envelope to travel with before they are persisted on their own.
    :param send_client_reports: count losses and report them to the server.
    :param ca_certs: a CA bundle for HTTPS; the system's by default.
    """

    def __init__(
        self,
        dsn: str,
        *,
        queue_dir: str | os.PathLike[str],
        max_queue_bytes: int = 50 * 2**20,
        timeout: float = 5.0,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        memory_queue_size: int = 1000,
        poll_interval: float = 1.0,
        client_report_interval: float = 30.0,
        send_client_reports: bool = True,
        ca_certs: str | None = None,
    ) -> None:
        super().__init__({"dsn": dsn})
        if self.parsed_dsn is None:
            raise ValueError("OfflineTransport needs a DSN")
        self._dir = Path(queue_dir)
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._max_bytes = max_queue_bytes
        self._timeout = urllib3.Timeout(total=timeout)
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._memory_size = memory_queue_size
        self._poll = poll_interval
        self._report_interval = client_report_interval
        self._client_reports = send_client_reports
        self._ca_certs = ca_certs

        client = f"sentry.python/{VERSION}"
        auth = self.parsed_dsn.to_auth(client)
        self._url = auth.get_api_url(EndpointType.ENVELOPE)
        self._headers = {
            "Content-Type": "application/x-sentry-envelope",
            "Content-Encoding": "gzip",
            "User-Agent": client,
            "X-Sentry-Auth": auth.to_header(),
        }
        # Log messages name the server by these alone, never by the DSN's key.
        self._where = f"{self.parsed_dsn.host} project {self.parsed_dsn.project_id}"

        # Our own warnings must not become events or breadcrumbs that travel
        # through this very transport.
        ignore_logger(log.name)

        self._stopped = False
        self._reset_process_state()
        # A forked child (gunicorn --preload, multiprocessing) inherits this object
        # but none of its threads; it starts its own on first use.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))
        self._ensure_started()

    # -- state ---------------------------------------------------------------------

    def _reset_process_state(self) -> None:
        """(Re)initialise everything that belongs to one process and its threads."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._start_lock = threading.Lock()
        self._persist_lock = threading.Lock()
        self._writer_wake = threading.Event()
        self._sender_wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._memory: deque[bytes] = deque()
        self._pool = urllib3.PoolManager(
            num_pools=1,
            maxsize=1,
            retries=False,
            timeout=self._timeout,
            ca_certs=self._ca_certs,
        )

        # Guarded by _lock.
        self._counts: Counter[_CountKey] = Counter()
        self._counts_since: float | None = None
        self._inflight_counts: Counter[_CountKey] | None = None
        self._limits: dict[str | None, float] = {}
        self._failures = 0
        self._next_attempt = 0.0
        self._kick = 0
        self._idle: tuple[int, float | None] | None = None
        self._est_bytes = 0
        self._scanned_at = float("-inf")
        self._wrote_since_scan = True
        self._dirty = True

        # Used by the sender thread only.
        self._sender_fd: int | None = None
        self._next_lock_try = 0.0
        self._backlog: list[str] = []
        self._listed_at = float("-inf")
        self._categories: dict[str, frozenset[str]] = {}
        self._undeletable: set[str] = set()
        # Guarded by _lock too: the cap may drop the file being sent.
        self._in_flight: str | None = None
        self._in_flight_dropped = False

    def _after_fork_in_child(self) -> None:
        inherited = self._sender_fd
        self._reset_process_state()
        if inherited is not None:
            # Closing (not unlocking) keeps the parent's lock: the flock belongs to
            # the open file description both processes share.
            with contextlib.suppress(OSError):
                os.close(inherited)

    def _ensure_started(self) -> None:
        if self._threads or self._stopped:
            return
        with self._start_lock:
            if self._threads or self._stopped:
                return
            for name, target in (
                ("faultlens-offline-writer", self._writer_loop),
                ("faultlens-offline-sender", self._sender_loop),
            ):
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    # -- Transport API -------------------------------------------------------------

    def capture_envelope(self, envelope: Envelope) -> None:
        """Queue the envelope; never waits for the disk or the network."""
        if self._stopped:
            log.debug("offline transport is stopped; envelope not queued")
            return
        self._ensure_started()
        try:
            data = envelope.serialize()
        except Exception as exc:
            log.warning("could not serialize an envelope (%s)", type(exc).__name__)
            self._count_items(envelope.items, "internal_sdk_error")
            return
        # The length check and append are not atomic together; the bound may be
        # overshot by a few envelopes under contention, which is harmless.
        if len(self._memory) >= self._memory_size:
            self._count_items(envelope.items, "queue_overflow")
            return
        self._memory.append(data)
        self._writer_wake.set()

    def flush(
        self,
        timeout: float,
        callback: Callable[[int, float], None] | None = None,
    ) -> None:
        """Persist what is in memory, then try to empty the disk queue in ``timeout``.

        Returns once the queue directory holds no envelopes, when ``timeout`` has
        passed, or as soon as nothing can be sent before then (the server is in
        backoff or every queued envelope is rate-limited past the deadline). One
        attempt is made right away even if a retry delay is running.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        if not self._stopped:
            self._ensure_started()
        self._persist()
        self._persist_counts()
        if timeout <= 0 or self._stopped:
            return
        with self._lock:
            self._kick += 1
            kick = self._kick
            self._next_attempt = 0.0
        self._sender_wake.set()
        warned = False
        started = time.monotonic()
        while True:
            pending = self._queued_count()
            now = time.monotonic()
            if pending == 0 or now >= deadline:
                return
            with self._lock:
                idle = self._idle
            if idle is not None and idle[0] >= kick:
                blocked_until = idle[1]
                if blocked_until is not None and blocked_until >= deadline:
                    return
            if callback is not None and not warned and now - started >= 0.1:
                warned = True
                callback(pending, timeout)
            with self._changed:
                self._changed.wait(max(0.001, min(0.05, deadline - time.monotonic())))

    def kill(self) -> None:
        """Persist what is in memory and stop the threads without waiting on I/O."""
        if self._stopped:
            return
        self._stopped = True
        self._persist()
        self._persist_counts(include_in_flight=True)
        self._writer_wake.set()
        self._sender_wake.set()
        # Only the writer is waited for: it touches nothing but the disk. The sender
        # may sit in a request for up to ``timeout``; it is a daemon and stops after.
        writer = self._threads[0] if self._threads else None
        if writer is not None and writer is not threading.current_thread():
            writer.join(1.0)

    def is_healthy(self) -> bool:
        """False while the server is unreachable or has rate-limited us.

        Only the process holding the sender lock finds out; the others stay healthy.
        """
        now = time.monotonic()
        with self._lock:
            if self._failures:
                return False
            return not any(until > now for until in self._limits.values())

    def record_lost_event(
        self,
        reason: str,
        data_category: str | None = None,
        item: Item | None = None,
        *,
        quantity: int = 1,
    ) -> None:
        """Count a discarded item or ``quantity`` of ``data_category``.

        With ``item``, its category and quantity are taken from the item (bytes for
        attachments, ``item_count`` for batches; a transaction also counts its spans).
        """
        if not self._client_reports:
            return
        counts: Counter[_CountKey] = Counter()
        if item is not None:
            if item.type == "client_report":
                # A report that could not be delivered is folded back in, not lost.
                self._merge_counts(_report_counts(item))
                return
            category = item.data_category
            quantity = 1
            if category == "attachment":
                quantity = len(item.get_bytes()) or 1
            elif category in ("span", "log_item", "trace_metric"):
                item_count = item.headers.get("item_count")
                if isinstance(item_count, int) and item_count > 0:
                    quantity = item_count
            elif category == "transaction":
                event = item.get_transaction_event() or {}
                spans = event.get("spans")
                counts["span", reason] += (
                    len(spans) if isinstance(spans, list) else 0
                ) + 1
            counts[category, reason] += quantity
        elif data_category is None:
            raise TypeError("record_lost_event needs data_category or item")
        else:
            counts[data_category, reason] += quantity
        self._merge_counts(counts)

    # -- loss counts -----------------------------------------------------------------

    def _count_items(self, items: Iterable[Item], reason: str) -> None:
        for item in items:
            self.record_lost_event(reason, item=item)

    def _count_lost_data(self, data: bytes, reason: str) -> None:
        try:
            items = Envelope.deserialize(data).items
        except Exception:
            self.record_lost_event(reason, "default")
            return
        self._count_items(items, reason)

    def _merge_counts(self, counts: Mapping[_CountKey, int]) -> None:
        if not counts:
            return
        with self._lock:
            self._counts.update(counts)
            if self._counts_since is None:
                self._counts_since = time.monotonic()

    def _take_counts(self) -> Counter[_CountKey] | None:
        """Hand the counts to a send; they return via :meth:`_settle_counts`."""
        with self._lock:
            if not self._counts:
                return None
            taken, self._counts = self._counts, Counter()
            self._counts_since = None
            self._inflight_counts = taken
            return taken

    def _settle_counts(self, taken: Counter[_CountKey] | None, delivered: bool) -> None:
        if taken is None:
            return
        with self._lock:
            self._inflight_counts = None
        if not delivered:
            self._merge_counts(taken)

    def _persist_counts(self, include_in_flight: bool = False) -> None:
        """Write pending counts into the queue as a client-report envelope."""
        with self._lock:
            counts = self._counts
            self._counts = Counter()
            self._counts_since = None
            if include_in_flight and self._inflight_counts:
                counts = counts + self._inflight_counts
        if not counts:
            return
        data = Envelope(items=[_report_item(counts)]).serialize()
        try:
            self._write(data, _REPORT_SUFFIX)
        except OSError as exc:
            log.warning("could not persist loss counts (%s)", type(exc).__name__)
            self._merge_counts(counts)
            return
        with self._lock:
            self._est_bytes += len(data)
            self._wrote_since_scan = True
            self._dirty = True
        self._sender_wake.set()

    # -- writer ----------------------------------------------------------------------

    def _writer_loop(self) -> None:
        while not self._stopped:
            self._writer_wake.clear()
            try:
                self._persist()
                self._housekeeping()
            except Exception as exc:
                log.warning("offline queue writer: unexpected %s", type(exc).__name__)
            self._writer_wake.wait(self._poll)

    def _persist(self) -> None:
        """Move every envelope in memory to the disk queue, oldest first."""
        with self._persist_lock:
            written = 0
            while True:
                try:
                    data = self._memory.popleft()
                except IndexError:
                    break
                try:
                    self._write(data, _SUFFIX)
                except OSError as exc:
                    log.warning("could not queue an envelope (%s)", type(exc).__name__)
                    self._count_lost_data(data, "internal_sdk_error")
                    continue
                written += len(data)
            if not written:
                return
            with self._lock:
                self._est_bytes += written
                self._wrote_since_scan = True
                self._dirty = True
            self._sender_wake.set()
            self._enforce_cap()

    def _housekeeping(self) -> None:
        now = time.monotonic()
        with self._lock:
            report_due = (
                self._counts_since is not None
                and now - self._counts_since >= self._report_interval
            )
        if report_due:
            self._persist_counts()
        with self._persist_lock:
            self._enforce_cap()

    def _write(self, data: bytes, suffix: str) -> str:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}{suffix}"
        tmp = self._dir / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:
            # Someone removed the directory; recreate it rather than lose data.
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self._dir / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return name

    def _enforce_cap(self) -> None:
        """Drop the oldest files while the queue is over its cap. Call under
        ``_persist_lock``.

        Our running total only sees our own writes and sends, so the directory is
        rescanned when that total is over the cap, or at most every poll interval
        after we wrote, which catches what other processes added.
        """
        now = time.monotonic()
        with self._lock:
            due = self._est_bytes > self._max_bytes or (
                self._wrote_since_scan and now - self._scanned_at >= self._poll
            )
            if not due:
                return
            self._wrote_since_scan = False
            self._scanned_at = now
        with _try_flock(self._dir / _QUEUE_LOCK, wait=1.0) as locked:
            if not locked:
                with self._lock:
                    self._wrote_since_scan = True
                return
            files = self._scan_sizes()
            total = sum(size for _, size in files)
            for name, size in files:
                if total <= self._max_bytes:
                    break
                if name.endswith(_REPORT_SUFFIX):
                    continue
                path = self._dir / name
                with self._lock:
                    in_flight = name == self._in_flight
                    if in_flight:
                        # The sender counts it once it knows whether it got through.
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                            self._in_flight_dropped = True
                if in_flight:
                    total -= size
                    continue
                try:
                    data = path.read_bytes()
                    path.unlink()
                except FileNotFoundError:
                    total -= size  # sent or dropped by someone else meanwhile
                    continue
                except OSError as exc:
                    log.warning("could not drop a queue file (%s)", type(exc).__name__)
                    continue
                total -= size
                self._count_lost_data(data, "queue_overflow")
                log.debug(
                    "queue over %d bytes: dropped its oldest file", self._max_bytes
                )
            with self._lock:
                self._est_bytes = total

    def _scan_sizes(self) -> list[tuple[str, int]]:
        """Queue files with their sizes, oldest first; removes stale temp files."""
        files = []
        now = time.time()
        with os.scandir(self._dir) as it:
            for entry in it:
                try:
                    if entry.name.startswith(_TMP_PREFIX):
                        if now - entry.stat().st_mtime > _STALE_TMP_SECONDS:
                            os.unlink(entry.path)
                    elif _is_queue_file(entry.name):
                        files.append((entry.name, entry.stat().st_size))
                except FileNotFoundError:
                    continue
        files.sort()
        return files

    def _queued_count(self) -> int:
        try:
            return sum(1 for name in os.listdir(self._dir) if _is_queue_file(name))
        except FileNotFoundError:
            return 0

    # -- sender ----------------------------------------------------------------------

    def _sender_loop(self) -> None:
        try:
            while not self._stopped:
                self._sender_wake.clear()
                with self._lock:
                    kick = self._kick
                try:
                    sleep, blocked_until = self._send_step()
                except Exception as exc:
                    log.warning(
                        "offline queue sender: unexpected %s", type(exc).__name__
                    )
                    sleep, blocked_until = self._poll, None
                with self._changed:
                    # Tells flush() whether waiting longer can achieve anything.
                    holder = self._sender_fd is not None
                    self._idle = (kick, blocked_until if holder else None)
                    self._changed.notify_all()
                if sleep > 0:
                    self._sender_wake.wait(sleep)
        finally:
            self._release_sender_lock()

    def _send_step(self) -> tuple[float, float | None]:
        """Send at most one file. Returns how long to sleep, and the time before
        which nothing queued can be sent (None if unknown)."""
        now = time.monotonic()
        if not self._acquire_sender_lock(now):
            return max(self._next_lock_try - now, 0.01), None
        with self._lock:
            next_attempt = self._next_attempt
        if now < next_attempt:
            return next_attempt - now, next_attempt
        name, held_until = self._pick(now)
        if name is None:
            if held_until is None:
                return self._poll, None
            return min(self._poll, held_until - now), held_until
        self._send_file(name)
        return 0.0, None

    def _acquire_sender_lock(self, now: float) -> bool:
        if self._sender_fd is not None:
            return True
        if now < self._next_lock_try:
            return False
        self._next_lock_try = now + self._poll
        try:
            fd = os.open(self._dir / _SENDER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("cannot open the queue's lock file (%s)", type(exc).__name__)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._sender_fd = fd
        with self._lock:
            self._dirty = True
        log.debug("sending the queue in %s", self._dir)
        return True

    def _release_sender_lock(self) -> None:
        fd, self._sender_fd = self._sender_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _pick(self, now: float) -> tuple[str | None, float | None]:
        """The oldest queued file no rate limit holds back, or the earliest time
        one will be free."""
        with self._lock:
            relist = self._dirty or now - self._listed_at >= self._poll
            self._dirty = False
        if relist:
            self._relist(now)
        with self._lock:
            limits = dict(self._limits)
        earliest: float | None = None
        gone = []
        chosen = None
        for name in tuple(self._backlog):  # discarding a file edits the backlog
            categories = self._categories.get(name)
            if categories is None:
                try:
                    categories = _read_categories(self._dir / name)
                except FileNotFoundError:
                    gone.append(name)
                    continue
                except (OSError, ValueError) as exc:
                    self._discard_unreadable(name, exc)
                    gone.append(name)
                    continue
                self._categories[name] = categories
            until = _held_until(categories, limits, now)
            if until is None:
                chosen = name
                break
            earliest = until if earliest is None else min(earliest, until)
        for name in gone:
            self._forget(name)
        return chosen, (None if chosen else earliest)

    def _relist(self, now: float) -> None:
        try:
            names = sorted(n for n in os.listdir(self._dir) if _is_queue_file(n))
        except FileNotFoundError:
            names = []
        self._backlog = [n for n in names if n not in self._undeletable]
        present = set(self._backlog)
        self._categories = {n: c for n, c in self._categories.items() if n in present}
        self._listed_at = now

    def _forget(self, name: str) -> None:
        with contextlib.suppress(ValueError):
            self._backlog.remove(name)
        self._categories.pop(name, None)

    def _discard_unreadable(self, name: str, exc: Exception) -> None:
        log.warning("dropping an unreadable queue file (%s)", type(exc).__name__)
        with contextlib.suppress(FileNotFoundError):
            self._delete(name, 0)
            self.record_lost_event("internal_sdk_error", "default")

    def _delete(self, name: str, size: int) -> None:
        try:
            os.unlink(self._dir / name)
        except FileNotFoundError:
            raise
        except OSError as exc:
            # Never send it again, even though it stays on disk.
            log.error("cannot delete a sent queue file (%s)", type(exc).__name__)
            self._undeletable.add(name)
        finally:
            self._forget(name)
        with self._lock:
            self._est_bytes = max(0, self._est_bytes - size)

    def _send_file(self, name: str) -> None:
        try:
            data = (self._dir / name).read_bytes()
        except FileNotFoundError:
            self._forget(name)
            return
        counts = self._take_counts()
        body = data if data.endswith(b"\n") else data + b"\n"
        if counts is not None:
            body += _report_item(counts).serialize()
        with self._lock:
            self._in_flight = name
            self._in_flight_dropped = False
        outcome = "kept"
        try:
            response = self._pool.request(
                "POST",
                self._url,
                body=gzip.compress(body, compresslevel=6, mtime=0),
                headers=self._headers,
                timeout=self._timeout,
                retries=False,
                redirect=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._failed(type(exc).__name__)
        else:
            outcome = self._handle_response(name, data, response)
        finally:
            self._settle_counts(counts, delivered=outcome == "delivered")
            with self._lock:
                dropped = self._in_flight_dropped
                self._in_flight = None
                self._in_flight_dropped = False
        if outcome == "rejected" or (dropped and outcome == "kept"):
            # Counted here rather than by the cap: only now is it known whether the
            # server took the file that the cap dropped while it was being sent.
            reason = "send_error" if outcome == "rejected" else "queue_overflow"
            self._count_lost_data(data, reason)

    def _handle_response(
        self, name: str, data: bytes, response: urllib3.BaseHTTPResponse
    ) -> str:
        """Act on an answer; returns "delivered", "rejected" (deleted, counted by
        the caller) or "kept" (to be tried again)."""
        status = response.status
        self._apply_rate_limits(status, response.headers)
        if 200 <= status < 300:
            with contextlib.suppress(FileNotFoundError):
                self._delete(name, len(data))
            self._succeeded()
            log.debug("sent a queued envelope to %s", self._where)
            return "delivered"
        if status == 429:
            log.warning("%s is rate-limiting; envelopes wait in the queue", self._where)
            with self._lock:
                limits = dict(self._limits)
            categories = self._categories.get(name, frozenset())
            if _held_until(categories, limits, time.monotonic()) is None:
                # The limit names other categories; do not hammer with this one.
                self._failed("429")
            return "kept"
        if 400 <= status < 500 and status != 408:
            log.warning(
                "%s refused an envelope with HTTP %d; dropping it", self._where, status
            )
            self._succeeded()
            try:
                self._delete(name, len(data))
            except FileNotFoundError:
                with self._lock:
                    if not self._in_flight_dropped:
                        return "kept"  # another process dealt with it (and counts)
            return "rejected"
        self._failed(f"HTTP {status}")
        return "kept"

    def _succeeded(self) -> None:
        with self._lock:
            recovered = self._failures > 0
            self._failures = 0
            self._next_attempt = 0.0
        if recovered:
            log.info("%s is reachable again", self._where)

    def _failed(self, why: str) -> None:
        with self._lock:
            self._failures += 1
            ceiling = self._backoff_base * 2 ** min(self._failures - 1, 62)
            delay = random.uniform(0.0, min(self._backoff_max, ceiling))
            self._next_attempt = time.monotonic() + delay
            first = self._failures == 1
        (log.warning if first else log.debug)(
            "cannot deliver to %s (%s); queued envelopes wait, retry in %.1f s",
            self._where,
            why,
            delay,
        )

    def _apply_rate_limits(self, status: int, headers: Mapping[str, str]) -> None:
        now = time.monotonic()
        header = headers.get("X-Sentry-Rate-Limits")
        update: dict[str | None, float] = {}
        if header:
            for category, seconds in parse_rate_limits(header):
                until = now + seconds
                update[category] = max(update.get(category, until), until)
        elif status == 429:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            update[None] = now + (
                _DEFAULT_RETRY_AFTER if retry_after is None else retry_after
            )
        if update:
            with self._lock:
                self._limits.update(update)
                # Expired limits would otherwise pile up for categories seen once.
                self._limits = {
                    c: until for c, until in self._limits.items() if until > now
                }


def _after_fork(ref: weakref.ReferenceType[OfflineTransport]) -> None:
    transport = ref()
    if transport is not None:
        transport._after_fork_in_child()


def parse_rate_limits(header: str) -> list[tuple[str | None, float]]:
    """``X-Sentry-Rate-Limits`` as (category or None for all, seconds) pairs.

    Each comma-separated limit is ``seconds:categories:scope[:...]`` with
    categories separated by ``;``; no categories means all of them. Malformed
    limits are skipped.
    """
    limits: list[tuple[str | None, float]] = []
    for limit in header.split(","):
        fields = limit.strip().split(":")
        try:
            seconds = float(fields[0])
        except ValueError:
            continue
        if seconds != seconds or seconds < 0:  # NaN or negative
            continue
        categories = fields[1].split(";") if len(fields) > 1 else []
        named = [c.strip() for c in categories if c.strip()]
        if named:
            limits.extend((c, seconds) for c in named)
        else:
            limits.append((None, seconds))
    return limits


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds from now: delay-seconds or an HTTP-date."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def _is_queue_file(name: str) -> bool:
    return name.endswith(_SUFFIX) and not name.startswith(".")


def _held_until(
    categories: frozenset[str], limits: Mapping[str | None, float], now: float
) -> float | None:
    """When the last rate limit holding this envelope expires, or None if free."""
    untils = [limits.get(None, 0.0)]
    # Client reports ride along with anything; only a limit on everything stops them.
    untils += [limits.get(c, 0.0) for c in categories if c != "internal"]
    until = max(untils)
    return until if until > now else None


def _read_categories(path: Path) -> frozenset[str]:
    """The data categories of a queue file's items, read from item headers only."""
    categories = set()
    with open(path, "rb") as f:
        if not f.readline().strip():
            raise ValueError("no envelope header")
        while True:
            line = f.readline()
            if not line:
                break
            if not line.strip():
                continue
            headers = json.loads(line)
            if not isinstance(headers, dict):
                raise ValueError("item header is not an object")
            categories.add(Item(b"", headers=headers).data_category)
            length = headers.get("length")
            if isinstance(length, int) and length >= 0:
                f.seek(length, os.SEEK_CUR)
            f.readline()  # the rest of the payload line, or its trailing newline
    return frozenset(categories)


def _report_item(counts: Mapping[_CountKey, int]) -> Item:
    return Item(
        PayloadRef(
            json={
                "timestamp": time.time(),
                "discarded_events": [
                    {"reason": reason, "category": category, "quantity": quantity}
                    for (category, reason), quantity in sorted(counts.items())
                    if quantity > 0
                ],
            }
        ),
        type="client_report",
    )


def _report_counts(item: Item) -> Counter[_CountKey]:
    counts: Counter[_CountKey] = Counter()
    try:
        data = json.loads(item.get_bytes())
    except ValueError:
        return counts
    discarded = data.get("discarded_events") if isinstance(data, dict) else None
    for entry in discarded if isinstance(discarded, list) else []:
        if not isinstance(entry, dict):
            continue
        category, reason, quantity = (
            entry.get("category"),
            entry.get("reason"),
            entry.get("quantity"),
        )
        if (
            isinstance(category, str)
            and isinstance(reason, str)
            and isinstance(quantity, int)
            and quantity > 0
        ):
            counts[category, reason] += quantity
    return counts


@contextlib.contextmanager
def _try_flock(path: Path, wait: float) -> Iterator[bool]:
    """Hold an exclusive flock on ``path`` if it can be had within ``wait`` s."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield False
        return
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.01)
        yield True
    finally:
        os.close(fd)
