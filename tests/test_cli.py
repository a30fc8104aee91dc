"""The `faultlens` command, as scripts use it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import cli, free_port


def test_projects_keys_and_tokens_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = cli(data, "project", "create", "Billing API")
    assert created["slug"] == "billing-api"
    assert created["dsn"].endswith(f"/{created['id']}")
    assert cli(data, "project", "create", "Billing API")["slug"] == "billing-api-2"
    assert [p["slug"] for p in cli(data, "project", "list")] == [
        "billing-api",
        "billing-api-2",
    ]

    extra = cli(data, "key", "create", "--project", str(created["id"]), "--label", "ci")
    keys = cli(data, "key", "list", "--project", str(created["id"]))
    assert [k["label"] for k in keys] == ["default", "ci"]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "faultlens",
            "key",
            "revoke",
            extra["public_key"],
            "--data-dir",
            str(data),
        ],
        check=True,
    )
    keys = cli(data, "key", "list", "--project", str(created["id"]))
    assert [k["active"] for k in keys] == [True, False]
    assert cli(data, "token", "create")["token"].startswith("flt_")


def test_first_start_creates_a_project_and_prints_its_dsn(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faultlens",
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "FAULTLENS_PUBLIC_URL": ""},
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0].decode()
    assert "http://" in out and f"@127.0.0.1:{port}/1" in out
    assert "faultlens token create" in out
