"""Malformed envelopes over HTTP never get a 5xx, and what is accepted processes."""

from __future__ import annotations

import gzip
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path

import brotli
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from faultlens.app import Services, create_app
from faultlens.config import Settings
from faultlens.processing.grouping import DEFAULT_GROUPING_VERSION
from tests.strategies import malformed_envelopes, small_limits, valid_envelopes

ENCODINGS = {
    "": lambda b: b,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}


class App:
    def __init__(self, data_dir: Path) -> None:
        # Tiny limits, so fuzzed input reaches every 413 path at the door.
        self.settings = Settings(data_dir=data_dir, limits=small_limits())
        self.services = Services.open(self.settings)
        project = self.services.store.create_project("fuzz", DEFAULT_GROUPING_VERSION)
        self.key = self.services.store.create_key(project.id).public_key
        self.project_id = project.id
        self.client = TestClient(create_app(self.settings, self.services))
        self.statuses: dict[int, int] = {}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    a = App(tmp_path_factory.mktemp("fuzz"))
    yield a
    a.services.close()


bodies = st.one_of(malformed_envelopes(), valid_envelopes())


@settings(
    max_examples=10_000,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@given(
    body=bodies,
    encoding=st.sampled_from([*ENCODINGS, "gzip-corrupt", "x-unknown"]),
    auth=st.sampled_from(["header", "query", "none", "garbage"]),
)
def test_no_malformed_envelope_gets_a_5xx(
    app: App, body: bytes, encoding: str, auth: str
) -> None:
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    if auth == "header":
        headers["X-Sentry-Auth"] = f"Sentry sentry_key={app.key}, sentry_version=7"
    elif auth == "query":
        params["sentry_key"] = app.key
    elif auth == "garbage":
        headers["X-Sentry-Auth"] = "Sentry ,,=,sentry_key"
    if encoding == "gzip-corrupt":
        payload = gzip.compress(body)[:-5]
        headers["Content-Encoding"] = "gzip"
    elif encoding == "x-unknown":
        payload = body
        headers["Content-Encoding"] = encoding
    else:
        payload = ENCODINGS[encoding](body)
        if encoding:
            headers["Content-Encoding"] = encoding

    r = app.client.post(
        f"/api/{app.project_id}/envelope/",
        content=payload,
        headers=headers,
        params=params,
    )
    app.statuses[r.status_code] = app.statuses.get(r.status_code, 0) + 1
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert r.json()["detail"]


def test_accepted_fuzz_envelopes_all_process_without_dead_letters(app: App) -> None:
    # Runs after the fuzz above (same module, same app): it proves the fuzz reached
    # both sides, and that whatever passed the door also processes.
    assert app.statuses.get(200, 0) > 100
    assert sum(n for s, n in app.statuses.items() if s >= 400) > 1000
    worker = app.services.worker
    position = app.services.store.position()
    while position < app.services.inbox.last_id():
        position = worker.run_once(position)
    with sqlite3.connect(app.services.store.path) as db:
        dead = db.execute("SELECT error FROM dead_letters").fetchall()
    assert dead == []
