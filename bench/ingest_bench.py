"""Ingestion benchmark: Faultlens against a minimal ASGI app, in the same run.

For each concurrency level it starts a fresh ``minimal_app`` and a fresh
``faultlens serve`` (new data directory), drives each with the same closed-loop
load of real SDK envelopes from a separate process, and reports the server's
rates as fractions of the minimal app's. See bench/README.md for what each
column means and how it is measured.

Run: ``uv run python bench/ingest_bench.py [--concurrency 1,8,32] [--duration 60]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil  # type: ignore[import-untyped]
import sentry_sdk

from envelopes import GzipTemplate, capture_templates, verify
from floor import Floor, StepCosts, measure_steps, usable_cores
from loadgen import LoadResult, LoadSpec, Target, run_in_process

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"
#: The server's rate limits are switched off: the benchmark measures capacity,
#: and the default buckets would cap it at their refill rate.
NO_RATE_LIMITS = {
    "FAULTLENS_RATE_KEY_PER_SECOND": "0",
    "FAULTLENS_RATE_PROJECT_PER_SECOND": "0",
}
_STARTUP_TIMEOUT = 60.0
_SHUTDOWN_TIMEOUT = 30.0
_RSS_INTERVAL = 0.1
_POLL_INTERVAL = 0.25
_MAX_ISSUE_PAGES = 1000
_LISTED_FILES = 6
#: Above this much CPU (in cores) used by the rest of the machine, a run is
#: flagged as contended. A quiet run shows 5-30 % (loopback softirq, steal).
_BUSY_SHARE = 0.5
_ERROR_CHARS = 300
#: The machine counts as quiet below this much CPU use, in % of all cores.
_QUIET_PERCENT = 25.0


@dataclass(frozen=True)
class Targets:
    """The product's ingestion targets, checked at one concurrency level."""

    concurrency: int = 32
    accepted_ratio: float = 0.50
    processed_ratio: float = 0.25
    p99_ms: float = 100.0
    peak_rss_bytes: int = 300_000_000
    bytes_per_event: int = 8_000


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int
    ram_bytes: int
    python: str
    filesystem: str

    def describe(self) -> str:
        return (
            f"{self.cpu}, {self.cores} cores, {self.ram_bytes / 2**30:.1f} GiB RAM, "
            f"Python {self.python}, data directory on {self.filesystem}"
        )


@dataclass(frozen=True)
class Measured:
    """One target under load: the generator's view plus the process's."""

    load: LoadResult
    peak_rss: int
    cpu_seconds: float

    @property
    def other_cpu_share(self) -> float:
        """CPU the rest of the machine used during the load, in cores."""
        load = self.load
        other = load.machine_busy_seconds - load.cpu_seconds - self.cpu_seconds
        return max(0.0, other) / load.elapsed if load.elapsed > 0 else 0.0


@dataclass(frozen=True)
class ServerRun:
    measured: Measured
    #: Events readable through the API by the end of the load plus the grace time.
    stored: int
    #: Seconds after the load until every accepted event was readable, if it was.
    drain_seconds: float | None
    #: Bytes allocated on disk per file under the data directory, largest first.
    disk_files: tuple[tuple[str, int], ...]
    count_source: str

    @property
    def disk_bytes(self) -> int:
        return sum(size for _, size in self.disk_files)

    @property
    def processed_per_second(self) -> float:
        elapsed = self.measured.load.elapsed
        return self.stored / elapsed if elapsed > 0 else 0.0

    @property
    def bytes_per_event(self) -> float:
        return self.disk_bytes / self.stored if self.stored else math.nan


@dataclass(frozen=True)
class Level:
    concurrency: int
    duration: float
    minimal: Measured
    server: ServerRun | None
    #: Why the server run produced no numbers, when it failed.
    error: str | None = None

    def accepted_ratio(self) -> float:
        if self.server is None:
            return math.nan
        return _ratio(
            self.server.measured.load.accepted_per_second,
            self.minimal.load.accepted_per_second,
        )

    def processed_ratio(self) -> float:
        if self.server is None:
            return math.nan
        return _ratio(
            self.server.processed_per_second, self.minimal.load.accepted_per_second
        )


@dataclass(frozen=True)
class Project:
    id: int
    public_key: str
    token: str


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


# --- the machine and the processes -------------------------------------------


def describe_machine(path: Path) -> Machine:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return Machine(
        cpu=cpu,
        cores=os.cpu_count() or 1,
        ram_bytes=psutil.virtual_memory().total,
        python=platform.python_version(),
        filesystem=_filesystem_of(path),
    )


def _filesystem_of(path: Path) -> str:
    resolved = str(path.resolve())
    best = None
    for part in psutil.disk_partitions(all=True):
        inside = resolved == part.mountpoint or resolved.startswith(
            part.mountpoint.rstrip("/") + "/"
        )
        if inside and (best is None or len(part.mountpoint) > len(best.mountpoint)):
            best = part
    if best is None:
        return "an unknown filesystem"
    return f"{best.fstype} ({best.device} at {best.mountpoint})"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running(
    command: Sequence[str], port: int, log_path: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process, wait until it accepts connections, stop it after."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, env=env
        )
        try:
            _wait_for_port(process, port, log_path)
            yield process
        finally:
            _stop(process)


def _wait_for_port(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{process.args!r} exited with {process.returncode} before listening "
                f"on port {port}; its output:\n{_tail(log)}"
            )
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(
        f"{process.args!r} did not listen on port {port} within "
        f"{_STARTUP_TIMEOUT:.0f} s; its output:\n{_tail(log)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(_SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(path: Path, limit: int = 4000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-limit:]
    return "(no output)"


class ProcessSampler:
    """Samples a process tree's RSS and CPU time every 100 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak_rss = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(
                self.peak_rss, self._tree(lambda p: p.memory_info().rss)
            )
            self._stop.wait(_RSS_INTERVAL)

    def cpu_seconds(self) -> float:
        def used(process: psutil.Process) -> float:
            times = process.cpu_times()
            return float(times.user + times.system)

        return float(self._tree(used))

    def _tree(self, measure: Any) -> Any:
        total = 0
        with contextlib.suppress(psutil.Error):
            total += measure(self._process)
            for child in self._process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += measure(child)
        return total


def wait_for_quiet(limit: float) -> None:
    """Wait up to ``limit`` s for other processes to leave the CPUs alone.

    A benchmark on a shared machine measures whatever else runs beside it; this
    does not prevent that, it only avoids starting into a busy spell.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if psutil.cpu_percent(interval=1.0) < _QUIET_PERCENT:
            return
    if limit > 0:
        print(f"the machine is still busy after {limit:g} s; going on", file=sys.stderr)


def drive(spec: LoadSpec, sampler: ProcessSampler, quiet_wait: float) -> Measured:
    """Run the load generator in its own process against a sampled server."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(target=run_in_process, args=(spec, sender))
    wait_for_quiet(quiet_wait)
    cpu_before = sampler.cpu_seconds()
    worker.start()
    sender.close()
    try:
        outcome = receiver.recv()
    except EOFError as exc:
        raise RuntimeError("the load generator died without a result") from exc
    finally:
        worker.join()
    if isinstance(outcome, BaseException):
        raise RuntimeError(f"the load generator failed: {outcome!r}") from outcome
    return Measured(
        load=outcome,
        peak_rss=sampler.peak_rss,
        cpu_seconds=sampler.cpu_seconds() - cpu_before,
    )


# --- the two targets -----------------------------------------------------------


def uvicorn_command(app: str, port: int, app_dir: Path) -> list[str]:
    """The uvicorn settings ``faultlens serve`` uses, applied to another app."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        str(app_dir),
        "--host",
        HOST,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]


@dataclass(frozen=True)
class Plan:
    """What every level shares."""

    templates: tuple[GzipTemplate, ...]
    work_dir: Path
    faultlens: str
    server_env: dict[str, str]
    grace: float
    quiet_wait: float


def run_minimal(plan: Plan, concurrency: int, duration: float) -> Measured:
    port = free_port()
    command = uvicorn_command("minimal_app:app", port, BENCH_DIR)
    log = plan.work_dir / f"minimal-c{concurrency}.log"
    with (
        running(command, port, log, dict(os.environ)) as process,
        ProcessSampler(process.pid) as sampler,
    ):
        target = Target(HOST, port, 1, "benchkey", _user_agent())
        spec = LoadSpec(target, plan.templates, concurrency, duration)
        return drive(spec, sampler, plan.quiet_wait)


def faultlens_cli(executable: str, *args: str) -> dict[str, Any]:
    """Run a ``faultlens`` subcommand that prints JSON and return what it printed."""
    done = subprocess.run(
        [executable, *args], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"`faultlens {' '.join(args)}` exited with {done.returncode}: "
            f"{done.stderr.strip() or done.stdout.strip()}"
        )
    try:
        parsed: dict[str, Any] = orjson.loads(done.stdout)
    except orjson.JSONDecodeError as exc:
        raise RuntimeError(
            f"expected JSON from `faultlens {' '.join(args)}`, got {done.stdout!r}"
        ) from exc
    return parsed


def create_project(executable: str, data_dir: Path) -> Project:
    data = ["--data-dir", str(data_dir)]
    project = faultlens_cli(executable, "project", "create", "bench", "--json", *data)
    token = faultlens_cli(executable, "token", "create", "--json", *data)
    dsn = httpx.URL(project["dsn"])
    return Project(id=int(project["id"]), public_key=dsn.username, token=token["token"])


def run_server(plan: Plan, concurrency: int, duration: float) -> ServerRun:
    data_dir = plan.work_dir / f"server-c{concurrency}-data"
    project = create_project(plan.faultlens, data_dir)
    port = free_port()
    command = [plan.faultlens, "serve", "--data-dir", str(data_dir)]
    command += ["--port", str(port)]
    log = plan.work_dir / f"server-c{concurrency}.log"
    with (
        running(command, port, log, plan.server_env) as process,
        ProcessSampler(process.pid) as sampler,
        httpx.Client(
            base_url=f"http://{HOST}:{port}",
            headers={"Authorization": f"Bearer {project.token}"},
            timeout=30,
        ) as api,
    ):
        target = Target(HOST, port, project.id, project.public_key, _user_agent())
        spec = LoadSpec(target, plan.templates, concurrency, duration)
        measured = drive(spec, sampler, plan.quiet_wait)
        counter = EventCounter(api, project.id)
        stored, drain = wait_until_stored(counter, measured.load.accepted, plan.grace)
        disk = disk_usage(data_dir)
        measured = Measured(measured.load, sampler.peak_rss, measured.cpu_seconds)
    return ServerRun(measured, stored, drain, disk, counter.source)


class EventCounter:
    """Counts a project's stored events through the REST API.

    Prefers ``/stats``; a server without it is counted by summing the ``count``
    of every issue, page by page.
    """

    def __init__(self, api: httpx.Client, project_id: int) -> None:
        self._api = api
        self._project = project_id
        self.source = "stats"

    def count(self) -> int:
        if self.source == "stats":
            response = self._api.get(f"/api/v1/projects/{self._project}/stats")
            if response.status_code != 404:
                response.raise_for_status()
                return int(response.json()["events_stored"])
            self.source = "issues"
        return self._sum_issue_counts()

    def _sum_issue_counts(self) -> int:
        total = 0
        params: dict[str, str | int] = {"limit": 100}
        for _ in range(_MAX_ISSUE_PAGES):
            response = self._api.get(
                f"/api/v1/projects/{self._project}/issues", params=params
            )
            response.raise_for_status()
            page = response.json()
            total += sum(int(issue["count"]) for issue in _issues_of(page))
            cursor = page.get("next_cursor") if isinstance(page, dict) else None
            if not cursor:
                return total
            params["cursor"] = cursor
        raise RuntimeError(
            f"more than {_MAX_ISSUE_PAGES} pages of issues; expected a handful"
        )


def _issues_of(page: Any) -> list[dict[str, Any]]:
    if isinstance(page, list):
        return page
    for key in ("items", "data", "issues", "results"):
        if isinstance(page.get(key), list):
            items: list[dict[str, Any]] = page[key]
            return items
    raise RuntimeError(f"expected a list of issues in the response, got {page!r:.200}")


def wait_until_stored(
    counter: EventCounter, accepted: int, grace: float
) -> tuple[int, float | None]:
    """Poll until every accepted event is readable, for at most ``grace`` s."""
    start = time.monotonic()
    while True:
        stored = counter.count()
        waited = time.monotonic() - start
        if stored >= accepted:
            return stored, waited
        if waited >= grace:
            return stored, None
        time.sleep(_POLL_INTERVAL)


def disk_usage(root: Path) -> tuple[tuple[str, int], ...]:
    """Bytes allocated on disk (blocks, not apparent sizes) per file under ``root``."""
    sizes = []
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            with contextlib.suppress(FileNotFoundError):
                sizes.append(
                    (str(path.relative_to(root)), path.lstat().st_blocks * 512)
                )
    return tuple(sorted(sizes, key=lambda item: -item[1]))


def _user_agent() -> str:
    return f"sentry.python/{sentry_sdk.VERSION}"


# --- the report ----------------------------------------------------------------


def render(
    levels: Sequence[Level],
    machine: Machine,
    templates: Sequence[GzipTemplate],
    targets: Targets,
    steps: StepCosts,
    command: str,
    started: dt.datetime,
) -> str:
    raw = sum(t.uncompressed_size for t in templates) / len(templates)
    gz = sum(t.compressed_size for t in templates) / len(templates)
    lines = [
        f"# Ingestion benchmark, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- Machine: {machine.describe()}.",
        f"- Envelopes: {len(templates)} error envelopes captured from sentry-sdk "
        f"{sentry_sdk.VERSION}, mean {raw:,.0f} B uncompressed, {gz:,.0f} B gzip; "
        "a fresh event id in every request.",
        "- Server: `faultlens serve`, fresh data directory per level, rate limits "
        "off. Minimal app: `bench/minimal_app.py` under the same uvicorn settings.",
        f"- Command: `{command}`",
        "",
        "| clients | s | minimal req/s | accepted ev/s | ratio | processed ev/s "
        "| ratio | p50 ms | p99 ms | peak RSS MB | bytes/event | targets |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [_summary_row(level, targets) for level in levels]
    lines += _contention_lines(levels)
    lines += ["", *_target_lines(levels, targets)]
    lines += ["", *_floor_lines(levels, targets, steps), "", *_detail_lines(levels)]
    return "\n".join(lines) + "\n"


def _contention_lines(levels: Sequence[Level]) -> list[str]:
    busy = []
    for level in levels:
        runs = [("minimal app", level.minimal)]
        if level.server is not None:
            runs.append(("server", level.server.measured))
        busy += [
            f"{name} at {level.concurrency} clients ({measured.other_cpu_share:.0%})"
            for name, measured in runs
            if measured.other_cpu_share > _BUSY_SHARE
        ]
    if not busy:
        return []
    return [
        "",
        f"**Other work used more than {_BUSY_SHARE:.0%} of a core during: "
        f"{'; '.join(busy)}. Those rates are low and the ratios beside them are "
        "unreliable; run again on a quiet machine.**",
    ]


def _summary_row(level: Level, targets: Targets) -> str:
    minimal = level.minimal.load.accepted_per_second
    server = level.server
    if server is None:
        cells = ["n/a"] * 8
    else:
        load = server.measured.load
        cells = [
            f"{load.accepted_per_second:,.0f}",
            f"{level.accepted_ratio():.2f}",
            f"{server.processed_per_second:,.0f}",
            f"{level.processed_ratio():.2f}",
            f"{load.p50_ms:.1f}",
            f"{load.p99_ms:.1f}",
            f"{server.measured.peak_rss / 1e6:.0f}",
            f"{server.bytes_per_event:,.0f}",
        ]
    verdict = "—" if level.error is None else "ERROR (see below)"
    if level.concurrency == targets.concurrency and server is not None:
        failed = _failed_targets(level, targets)
        verdict = "PASS" if not failed else "FAIL: " + ", ".join(failed)
    row = [str(level.concurrency), f"{level.duration:g}", f"{minimal:,.0f}", *cells]
    return "| " + " | ".join([*row, verdict]) + " |"


def _checks(level: Level, targets: Targets) -> list[tuple[str, str, bool]]:
    """Each target as (name, measured value, met?)."""
    server = level.server
    assert server is not None, "targets are only checked on a server run"
    load = server.measured.load
    accepted, processed = level.accepted_ratio(), level.processed_ratio()
    return [
        (
            f"accepted >= {targets.accepted_ratio:.0%} of minimal",
            f"{accepted:.2f}",
            accepted >= targets.accepted_ratio,
        ),
        (
            f"processed >= {targets.processed_ratio:.0%} of minimal",
            f"{processed:.2f}",
            processed >= targets.processed_ratio,
        ),
        (
            f"p99 accept < {targets.p99_ms:.0f} ms",
            f"{load.p99_ms:.1f} ms",
            load.p99_ms < targets.p99_ms,
        ),
        (
            f"peak RSS < {targets.peak_rss_bytes / 1e6:.0f} MB",
            f"{server.measured.peak_rss / 1e6:.0f} MB",
            server.measured.peak_rss < targets.peak_rss_bytes,
        ),
        (
            f"disk < {targets.bytes_per_event:,} B/event",
            f"{server.bytes_per_event:,.0f} B",
            server.bytes_per_event < targets.bytes_per_event,
        ),
    ]


def _failed_targets(level: Level, targets: Targets) -> list[str]:
    return [name for name, _, met in _checks(level, targets) if not met]


def _target_lines(levels: Sequence[Level], targets: Targets) -> list[str]:
    checked = [
        lv
        for lv in levels
        if lv.concurrency == targets.concurrency and lv.server is not None
    ]
    if not checked:
        return [f"Targets are checked at {targets.concurrency} clients; not run."]
    lines = [f"Targets at {targets.concurrency} clients:", ""]
    for name, value, met in _checks(checked[0], targets):
        lines.append(f"- {'PASS' if met else 'FAIL'}: {name} (measured {value})")
    return lines


def _floor_lines(
    levels: Sequence[Level], targets: Targets, steps: StepCosts
) -> list[str]:
    """The CPU the targets need at least, next to the cores there are."""
    level = next((lv for lv in levels if lv.concurrency == targets.concurrency), None)
    if level is None or level.minimal.load.accepted == 0:
        return []
    minimal = level.minimal
    rate = minimal.load.accepted_per_second
    floor = Floor(
        steps=steps,
        generator=minimal.load.cpu_seconds / minimal.load.accepted * 1e6,
        http=minimal.cpu_seconds / minimal.load.accepted * 1e6,
        accepted_per_second=rate * targets.accepted_ratio,
        processed_per_second=rate * targets.processed_ratio,
        cores=usable_cores(),
    )
    verdict = "within reach" if floor.reachable() else "**out of reach**"
    per_step = [
        ("generator, per request (minimal run)", floor.generator),
        ("HTTP handling, per request (the minimal app's CPU)", floor.http),
        ("inflate the gzip body", steps.inflate),
        ("read the envelope and item headers", steps.frame),
        ("parse the event JSON (once, for both sides)", steps.parse_event),
        ("durable inbox insert, 32 a transaction", steps.inbox_insert),
        ("serialise the event", steps.serialise_event),
        ("zstd-compress the event", steps.compress_event),
        ("event store insert, 32 a transaction", steps.store_insert),
    ]
    return [
        f"Floor at {targets.concurrency} clients (bench/floor.py): the least CPU "
        "any Python server spends at the target rates, counting only the steps "
        "no design can skip, each timed in this run on the same envelopes. "
        f"Accepting {floor.accepted_per_second:,.0f} and processing "
        f"{floor.processed_per_second:,.0f} events/s needs at least "
        f"{floor.cores_needed():.2f} cores; this machine has {floor.cores}: "
        f"the targets are {verdict} here.",
        "",
        "| step | CPU µs |",
        "|---|---:|",
        *(f"| {name} | {micros:.1f} |" for name, micros in per_step),
    ]


def _detail_lines(levels: Sequence[Level]) -> list[str]:
    lines = [
        "Details. CPU is time used during the load as % of one core. *Other* is "
        "the rest of the machine: other processes, this script's sampling, "
        "kernel threads such as the filesystem journal, hypervisor steal; far "
        "above a few % for the minimal app means something else competed.",
        "",
        "| clients | target | requests | 200 | other answers | failures "
        "| p50 ms | p99 ms | max ms | target CPU | generator CPU | other CPU "
        "| peak RSS MB | stored | drained after | counted via |",
        "|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for level in levels:
        lines.append(_detail_row(level.concurrency, "minimal", level.minimal, None))
        if level.server is not None:
            row = _detail_row(
                level.concurrency, "faultlens", level.server.measured, level.server
            )
            lines.append(row)
    for level in levels:
        if level.error is not None:
            said = [line for line in level.error.splitlines() if line.strip()]
            gist = said[0] if len(said) < 2 else f"{said[0]} … {said[-1]}"
            lines.append("")
            lines.append(
                f"Server run at {level.concurrency} clients failed: "
                f"{gist[:_ERROR_CHARS]}"
            )
    lines += ["", "Data directory once processing ended (allocated bytes):", ""]
    for level in levels:
        if level.server is not None:
            files = ", ".join(
                f"{name} {size / 1e6:.1f} MB"
                for name, size in level.server.disk_files[:_LISTED_FILES]
            )
            lines.append(f"- {level.concurrency} clients: {files or 'empty'}")
    return lines


def _detail_row(
    concurrency: int, name: str, measured: Measured, server: ServerRun | None
) -> str:
    load = measured.load
    others = {k: v for k, v in load.statuses.items() if k != 200}
    stored = drained = source = "—"
    if server is not None:
        stored = f"{server.stored:,}"
        drained = (
            f"{server.drain_seconds:.1f} s"
            if server.drain_seconds is not None
            else "not within grace"
        )
        source = server.count_source
    cells = [
        str(concurrency),
        name,
        f"{load.sent:,}",
        f"{load.accepted:,}",
        _counts(others),
        _counts(load.failures),
        f"{load.p50_ms:.2f}",
        f"{load.p99_ms:.2f}",
        f"{load.max_ms:.1f}",
        f"{measured.cpu_seconds / load.elapsed:.0%}",
        f"{load.cpu_seconds / load.elapsed:.0%}",
        f"{measured.other_cpu_share:.0%}",
        f"{measured.peak_rss / 1e6:.0f}",
        stored,
        drained,
        source,
    ]
    return "| " + " | ".join(cells) + " |"


def _counts(counts: dict[Any, int]) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items())) or "—"


# --- the command ---------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--concurrency",
        default="1,8,32",
        help="comma-separated numbers of concurrent clients (default: 1,8,32)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds of load at the target concurrency (default: 60)",
    )
    parser.add_argument(
        "--other-duration",
        type=float,
        default=15.0,
        help="seconds of load at the other levels, at most --duration (default: 15)",
    )
    parser.add_argument("--target-concurrency", type=int, default=Targets.concurrency)
    parser.add_argument(
        "--envelope-size",
        type=int,
        default=20_000,
        help="uncompressed bytes per envelope (default: 20000)",
    )
    parser.add_argument("--templates", type=int, default=4)
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds after the load for events to become readable (default: 10)",
    )
    parser.add_argument(
        "--faultlens",
        default=str(Path(sys.executable).with_name("faultlens")),
        help="the faultlens executable (default: the one beside this Python)",
    )
    parser.add_argument(
        "--minimal-only",
        action="store_true",
        help="drive only the minimal app (to check the generator)",
    )
    parser.add_argument(
        "--keep-rate-limits",
        action="store_true",
        help="leave the server's ingest rate limits at their settings",
    )
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the data directories and logs, and print where they are",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="seconds to wait before each run for other CPU use to drop below "
        f"{_QUIET_PERCENT:g} %% (default: 30; 0 to skip)",
    )
    parser.add_argument("--output", type=Path, help="where to write the Markdown")
    return parser.parse_args(argv)


def prepare_templates(count: int, size: int) -> tuple[GzipTemplate, ...]:
    templates = tuple(capture_templates(count, size))
    for template in templates:
        for _ in range(3):
            verify(template, uuid.uuid4().hex.encode("ascii"))
    return templates


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    levels_wanted = _concurrency_levels(args.concurrency)
    targets = Targets(concurrency=args.target_concurrency)
    started = dt.datetime.now(dt.UTC)
    env = dict(os.environ)
    if not args.keep_rate_limits:
        env.update(NO_RATE_LIMITS)
    plan = Plan(
        templates=prepare_templates(args.templates, args.envelope_size),
        work_dir=Path(tempfile.mkdtemp(prefix="faultlens-bench-")),
        faultlens=args.faultlens,
        server_env=env,
        grace=args.grace,
        quiet_wait=args.quiet_wait,
    )
    print("timing the steps every server must take ...", file=sys.stderr)
    steps = measure_steps(plan.templates)
    levels = []
    try:
        for concurrency in levels_wanted:
            duration = args.duration
            if concurrency != targets.concurrency:
                duration = min(args.other_duration, args.duration)
            print(f"{concurrency} clients, {duration:g} s ...", file=sys.stderr)
            minimal = run_minimal(plan, concurrency, duration)
            server, error = None, None
            if not args.minimal_only:
                try:
                    server = run_server(plan, concurrency, duration)
                except (RuntimeError, OSError, httpx.HTTPError) as exc:
                    # Keep the levels already measured; the report names the error.
                    error = str(exc)
                    print(f"the server run failed: {error}", file=sys.stderr)
            levels.append(Level(concurrency, duration, minimal, server, error))
    finally:
        if args.keep_data:
            print(f"data and logs kept in {plan.work_dir}", file=sys.stderr)
        else:
            shutil.rmtree(plan.work_dir, ignore_errors=True)
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python bench/ingest_bench.py", *arguments])
    machine = describe_machine(plan.work_dir.parent)
    report = render(levels, machine, plan.templates, targets, steps, command, started)
    print(report)
    output = args.output or RESULTS_DIR / f"ingest-{started:%Y-%m-%d-%H%M}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    print(f"written to {output}", file=sys.stderr)
    return 0


def _concurrency_levels(text: str) -> list[int]:
    try:
        levels = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise SystemExit(
            f"--concurrency expects numbers separated by commas, like 1,8,32; "
            f"got {text!r}"
        ) from exc
    if not levels or len(levels) > 10:
        raise SystemExit(f"--concurrency expects 1 to 10 levels, got {text!r}")
    return levels


if __name__ == "__main__":
    sys.exit(main())
