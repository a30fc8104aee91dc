"""Shared fixtures: a live Faultlens server on loopback, and the SDK samples."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from faultlens.testing import LiveServer, cli, free_port, make_server

__all__ = ["LiveServer", "cli", "free_port", "make_server", "samples_dir"]

ROOT = Path(__file__).resolve().parents[1]


def samples_dir() -> Path:
    """Real SDK captures; they live in the shared folder beside the repository."""
    env = os.environ.get("FAULTLENS_SAMPLES_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "samples" / "sentry"


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for a whole module, for tests that never collide on data."""
    server = make_server(tmp_path_factory.mktemp("server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = make_server(tmp_path)
    try:
        yield server
    finally:
        server.stop()
