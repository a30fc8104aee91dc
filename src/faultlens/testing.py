"""A live Faultlens server for tests: its own data directory, project and API token.

Used by the server's tests and by the SDK's, which drive real applications against a
real server on loopback. Needs ``httpx`` (a development dependency).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "faultlens",
            *args,
            "--data-dir",
            str(data_dir),
            "--json",
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout)


@dataclass
class LiveServer:
    """A `faultlens serve` process with one project and an API token."""

    data_dir: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    project_id: int = 0
    dsn: str = ""
    public_key: str = ""
    token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path = self.data_dir.parent / "server.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process owns it
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faultlens",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
            ],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"faultlens serve exited: {self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("faultlens serve did not come up in 30 s")

    def log(self) -> str:
        return (self.log_path or Path("/dev/null")).read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )

    def wait_processed(self, count: int, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until ``count`` events are stored; return the stats."""
        deadline = time.monotonic() + timeout
        with self.api() as api:
            while True:
                stats: dict[str, Any] = api.get(
                    f"/api/v1/projects/{self.project_id}/stats"
                ).json()
                if stats["events_stored"] >= count and stats["inbox_lag"] == 0:
                    return stats
                if time.monotonic() > deadline:
                    raise AssertionError(f"only {stats} after {timeout} s")
                time.sleep(0.05)

    def wait_event(self, event_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until the event is stored and processed; return it."""
        deadline = time.monotonic() + timeout
        with self.api() as api:
            while True:
                r = api.get(f"/api/v1/projects/{self.project_id}/events/{event_id}")
                if r.status_code == 200:
                    data: dict[str, Any] = r.json()
                    return data
                if time.monotonic() > deadline:
                    raise AssertionError(f"event {event_id} not stored in {timeout} s")
                time.sleep(0.05)

    def event(self, event_id: str) -> dict[str, Any]:
        with self.api() as api:
            r = api.get(f"/api/v1/projects/{self.project_id}/events/{event_id}")
            r.raise_for_status()
            data: dict[str, Any] = r.json()
            return data


def make_server(tmp_path: Path, **env: str) -> LiveServer:
    port = free_port()
    settings_env = {"FAULTLENS_PUBLIC_URL": f"http://127.0.0.1:{port}", **env}
    server = LiveServer(tmp_path / "data", port, settings_env)
    created = cli(server.data_dir, "project", "create", "test", env=settings_env)
    server.project_id = created["id"]
    server.dsn = created["dsn"]
    server.public_key = httpx.URL(server.dsn).username
    server.token = cli(server.data_dir, "token", "create")["token"]
    server.start()
    return server
