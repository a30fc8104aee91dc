"""Closed-loop HTTP/1.1 load generator for envelope ingestion.

Each of N keep-alive connections sends one envelope, waits for the whole response
and sends the next, as N SDK clients each waiting on their transport would. Raw
sockets, uvloop and the C parser from ``httptools`` keep the generator's own cost
to tens of microseconds per request, so on a small machine most of the CPU is left
to the server under test. It runs in a process of its own (``run_in_process``).

Latency is measured from just before the request is written to the moment the
last byte of the response has been parsed.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from array import array
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import cast

import httptools
import psutil  # type: ignore[import-untyped]
import uvloop

from envelopes import GzipTemplate

_MAX_CONCURRENCY = 1024
_MAX_DURATION = 3600.0
_RECONNECT_PAUSE = 0.05


@dataclass(frozen=True)
class Target:
    """Where envelopes go, and who they claim to come from."""

    host: str
    port: int
    project_id: int
    public_key: str
    user_agent: str

    def request_head(self, content_length: int) -> bytes:
        auth = (
            f"Sentry sentry_key={self.public_key}, sentry_version=7, "
            f"sentry_client={self.user_agent}"
        )
        return (
            f"POST /api/{self.project_id}/envelope/ HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Accept-Encoding: identity\r\n"
            f"Content-Length: {content_length}\r\n"
            "Content-Type: application/x-sentry-envelope\r\n"
            "Content-Encoding: gzip\r\n"
            f"User-Agent: {self.user_agent}\r\n"
            f"X-Sentry-Auth: {auth}\r\n\r\n"
        ).encode("ascii")


@dataclass(frozen=True)
class LoadSpec:
    """One timed run: how many clients, for how long, at most how many requests."""

    target: Target
    templates: tuple[GzipTemplate, ...]
    concurrency: int
    duration: float
    max_requests: int = 10_000_000
    request_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= _MAX_CONCURRENCY:
            raise ValueError(
                f"expected 1..{_MAX_CONCURRENCY} concurrent clients, "
                f"got {self.concurrency}"
            )
        if not 0 < self.duration <= _MAX_DURATION:
            raise ValueError(
                f"expected a duration in (0, {_MAX_DURATION:.0f}] s, "
                f"got {self.duration}"
            )
        if not self.templates:
            raise ValueError("expected at least one envelope template, got none")


@dataclass(frozen=True)
class LoadResult:
    """What one run measured. Latencies cover 200 responses only."""

    concurrency: int
    #: From the first request written to the last response read, in seconds.
    elapsed: float
    sent: int
    accepted: int
    statuses: dict[int, int]
    failures: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float
    bytes_sent: int
    #: CPU time the generator itself used during the run.
    cpu_seconds: float
    #: CPU time the whole machine was busy during the run, every process and
    #: hypervisor steal included; shows whether something else competed.
    machine_busy_seconds: float

    @property
    def accepted_per_second(self) -> float:
        return self.accepted / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class _Tally:
    deadline: float
    budget: int
    sent: int = 0
    bytes_sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    accepted_latencies: array[float] = field(default_factory=lambda: array("d"))

    def take(self) -> bool:
        """Claim one more request, unless time or the request budget is up."""
        if self.sent >= self.budget or time.perf_counter() >= self.deadline:
            return False
        self.sent += 1
        return True


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[int] | None = None
        self._keep_alive = True
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but behave as one.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_message_complete(self) -> None:
        # Only valid inside this callback: the parser resets once it returns.
        self._keep_alive = self._parser.should_keep_alive()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    async def exchange(self, request: bytes, timeout: float) -> int:
        """Send one request and return the response's status code."""
        if self._transport is None or self.closed:
            raise ConnectionResetError("the connection is closed")
        waiter: asyncio.Future[int] = self._loop.create_future()
        self._waiter = waiter
        timer = self._loop.call_later(
            timeout, self._fail, TimeoutError(f"no response within {timeout} s")
        )
        self._transport.write(request)
        try:
            return await waiter
        finally:
            timer.cancel()

    def reusable(self) -> bool:
        return not self.closed and self._keep_alive

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self.closed = True


async def _connect(target: Target) -> _Connection:
    loop = asyncio.get_running_loop()
    _, connection = await loop.create_connection(
        lambda: _Connection(loop), target.host, target.port
    )
    return connection


async def _client(
    spec: LoadSpec, connection: _Connection, tally: _Tally, offset: int
) -> None:
    heads = [spec.target.request_head(t.compressed_size) for t in spec.templates]
    turn = offset
    while tally.take():
        index = turn % len(spec.templates)
        turn += 1
        body = spec.templates[index].body(uuid.uuid4().hex.encode("ascii"))
        request = heads[index] + body
        start = time.perf_counter()
        try:
            status = await connection.exchange(request, spec.request_timeout)
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            tally.failures[type(exc).__name__] += 1
            connection = await _reconnect(spec, connection, tally)
            continue
        latency = time.perf_counter() - start
        tally.bytes_sent += len(request)
        tally.statuses[status] += 1
        if status == 200:
            tally.accepted_latencies.append(latency)
        if not connection.reusable():
            connection = await _reconnect(spec, connection, tally)
    connection.close()


async def _reconnect(
    spec: LoadSpec, connection: _Connection, tally: _Tally
) -> _Connection:
    connection.close()
    while time.perf_counter() < tally.deadline:
        try:
            return await _connect(spec.target)
        except OSError as exc:
            tally.failures[f"connect: {type(exc).__name__}"] += 1
            await asyncio.sleep(_RECONNECT_PAUSE)
    return connection


async def _run(spec: LoadSpec) -> LoadResult:
    # Connections are opened before the clock starts: the run measures
    # requests, not TCP handshakes.
    connections = await asyncio.gather(
        *(_connect(spec.target) for _ in range(spec.concurrency))
    )
    busy_start = _machine_busy()
    cpu_start = time.process_time()
    start = time.perf_counter()
    tally = _Tally(deadline=start + spec.duration, budget=spec.max_requests)
    await asyncio.gather(
        *(_client(spec, c, tally, offset) for offset, c in enumerate(connections))
    )
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    return _summarise(spec, tally, elapsed, cpu, _machine_busy() - busy_start)


def _machine_busy() -> float:
    # Linux counts guest time inside user time already; idle and iowait are idle.
    times = psutil.cpu_times()._asdict()
    idle = ("idle", "iowait", "guest", "guest_nice")
    return float(sum(v for k, v in times.items() if k not in idle))


def _summarise(
    spec: LoadSpec, tally: _Tally, elapsed: float, cpu: float, busy: float
) -> LoadResult:
    latencies = sorted(tally.accepted_latencies)
    return LoadResult(
        concurrency=spec.concurrency,
        elapsed=elapsed,
        sent=tally.sent,
        accepted=len(latencies),
        statuses=dict(tally.statuses),
        failures=dict(tally.failures),
        p50_ms=_percentile(latencies, 0.50) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        max_ms=latencies[-1] * 1000 if latencies else math.nan,
        bytes_sent=tally.bytes_sent,
        cpu_seconds=cpu,
        machine_busy_seconds=busy,
    )


def _percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list; NaN when it is empty."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def run(spec: LoadSpec) -> LoadResult:
    """Run one timed load in this process, on uvloop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run(spec))


def run_in_process(spec: LoadSpec, results: Connection) -> None:
    """Entry point for a child process: run the load and send back the result."""
    try:
        results.send(run(spec))
    except BaseException as exc:
        results.send(exc)
        raise
    finally:
        results.close()
