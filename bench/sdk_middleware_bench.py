"""What the faultlens-sdk ASGI middleware adds to a request that does not fail.

The same Starlette endpoint (1 ms of CPU work, then a small JSON answer) is served
twice by uvicorn, once bare and once wrapped in ``FaultlensMiddleware`` after
``faultlens_sdk.init`` with user and tenant resolvers set. One client sends
sequential keep-alive requests, alternating between the two servers in rounds so
that drift in the machine's speed hits both alike, and the medians are compared.
A second measurement calls both ASGI apps in-process, without HTTP, to show the
middleware's own cost with less noise around it.

    uv run python bench/sdk_middleware_bench.py [--rounds 20] [--per-round 200]

Nothing is asserted; the target (at most 5 % on the median) is printed beside the
measured ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

WORK_SECONDS = 0.001
TARGET = 1.05


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def build_app(with_middleware: bool) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def visit(request: Request) -> JSONResponse:
        busy(WORK_SECONDS)
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/visit", visit)])
    if with_middleware:
        import faultlens_sdk

        # A DSN whose server never hears from us: nothing fails, so nothing is sent.
        faultlens_sdk.init(
            dsn="http://bench@127.0.0.1:9/1",
            environment="bench",
            tenant_resolver=faultlens_sdk.from_header("X-Tenant-ID"),
            user_resolver=faultlens_sdk.user_from_jwt(),
            queue_dir=os.environ.get("BENCH_QUEUE_DIR", "/tmp/faultlens-bench-queue"),
        )
        app.add_middleware(faultlens_sdk.FaultlensMiddleware)
    return app


def serve(with_middleware: bool, port: int) -> None:
    import uvicorn

    uvicorn.run(
        build_app(with_middleware),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(with_middleware: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    variant = "with" if with_middleware else "bare"
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", variant, "--port", str(port)]
    )
    url = f"http://127.0.0.1:{port}/visit"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("server did not start")


def over_http(rounds: int, per_round: int) -> tuple[list[float], list[float]]:
    servers = [start(False), start(True)]
    headers = {"X-Tenant-ID": "clinic-1", "X-Request-ID": "bench"}
    samples: tuple[list[float], list[float]] = ([], [])
    try:
        with httpx.Client(headers=headers) as client:
            for _, url in servers:
                for _ in range(per_round):  # warm-up
                    client.get(url)
            for _ in range(rounds):
                for index, (_, url) in enumerate(servers):
                    for _ in range(per_round):
                        t0 = time.perf_counter()
                        client.get(url).raise_for_status()
                        samples[index].append(time.perf_counter() - t0)
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(10)
    return samples


def in_process(rounds: int, per_round: int) -> tuple[list[float], list[float]]:
    apps = [build_app(False), build_app(True)]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/visit",
        "raw_path": b"/visit",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"x-tenant-id", b"clinic-1")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def run() -> tuple[list[float], list[float]]:
        samples: tuple[list[float], list[float]] = ([], [])
        for app in apps:
            for _ in range(per_round):
                await app(dict(scope), receive, send)
        for _ in range(rounds):
            for index, app in enumerate(apps):
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    await app(dict(scope), receive, send)
                    samples[index].append(time.perf_counter() - t0)
        return samples

    return asyncio.run(run())


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def row(name: str, samples: tuple[list[float], list[float]]) -> str:
    bare, wrapped = (statistics.median(s) * 1000 for s in samples)
    ratio = wrapped / bare
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    return (
        f"| {name} | {len(samples[0]):,} | {bare:.3f} | {wrapped:.3f} | "
        f"{(wrapped - bare) * 1000:.0f} | {ratio:.3f} | {verdict} (≤ {TARGET}) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--serve", choices=("bare", "with"))
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve == "with", args.port)
        return
    lines = [
        "# faultlens-sdk middleware overhead, "
        + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "",
        f"- Machine: {cpu_model()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}.",
        "- Endpoint: Starlette, 1 ms of CPU work, JSON answer; the middleware with "
        "tenant and user resolvers set (resolved lazily, so unused here).",
        f"- Command: `python bench/sdk_middleware_bench.py --rounds {args.rounds} "
        f"--per-round {args.per_round}`",
        "",
        "| path | requests each | bare median ms | with middleware median ms "
        "| added µs | ratio | target |",
        "|---|---:|---:|---:|---:|---:|---|",
        row("HTTP (uvicorn, loopback)", over_http(args.rounds, args.per_round)),
        row("in-process ASGI call", in_process(args.rounds, args.per_round)),
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    out = os.path.join(
        os.path.dirname(__file__),
        "results",
        time.strftime("sdk-middleware-%Y-%m-%d-%H%M.md", time.gmtime()),
    )
    with open(out, "w") as f:
        f.write(report)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
