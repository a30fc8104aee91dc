"""Builds the Faultlens ASGI app: wires the stores to ingestion, worker and API."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

from faultlens.api.routes import build_api, install_problem_handlers
from faultlens.config import Settings
from faultlens.ingest.auth import format_dsn
from faultlens.ingest.ratelimit import IngestRateLimiter
from faultlens.ingest.routes import IngestService
from faultlens.ops.health import health_routes
from faultlens.processing.grouping import DEFAULT_GROUPING_VERSION
from faultlens.processing.pipeline import Context
from faultlens.processing.severity import SeverityRule, parse_rules
from faultlens.processing.supervisor import WorkerProcess
from faultlens.processing.worker import Worker
from faultlens.storage.ports import ProjectKey
from faultlens.storage.sqlite.inbox import SqliteInbox
from faultlens.storage.sqlite.store import SqliteStore

log = logging.getLogger("faultlens")


@dataclass
class Services:
    """The long-lived parts of one Faultlens process."""

    settings: Settings
    store: SqliteStore
    inbox: SqliteInbox
    worker: Worker

    @classmethod
    def open(cls, settings: Settings) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = SqliteStore(settings.data_dir)
        inbox = SqliteInbox(
            settings.data_dir / "inbox.db",
            batch_size=settings.inbox_batch_size,
            max_size=settings.max_inbox_size,
        )
        context = Context(
            limits=settings.limits,
            severity_rules=load_severity_rules(
                settings.data_dir / "severity-rules.json"
            ),
        )
        worker = Worker(
            inbox,
            store,
            context,
            batch_size=settings.worker_batch_size,
            lock_path=settings.data_dir / "worker.lock",
        )
        return cls(settings, store, inbox, worker)

    def ensure_default_project(self) -> str | None:
        """On an empty store, create a project and return its DSN."""
        if self.store.list_projects():
            return None
        project = self.store.create_project("default", DEFAULT_GROUPING_VERSION)
        key = self.store.create_key(project.id)
        return format_dsn(self.settings.base_url, key.public_key, project.id)

    def close(self) -> None:
        self.worker.stop()
        self.inbox.close()


def create_app(settings: Settings, services: Services | None = None) -> ASGIApp:
    """The whole server as one ASGI app; its lifespan runs the worker.

    Ingestion is routed before the API's framework sees the request: it is the hot
    path, and needs none of FastAPI's middleware.
    """
    services = services or Services.open(settings)
    supervisor = WorkerProcess(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.worker_mode == "thread":
            services.worker.start()
        elif settings.worker_mode == "process":
            supervisor.start()
        yield
        supervisor.stop()
        services.close()

    api = FastAPI(
        title="Faultlens",
        version="0.1.0",
        summary="Error tracking that speaks the Sentry protocol.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    api.state.services = services
    install_problem_handlers(api)
    api.router.routes.extend(health_routes(services.store, services.inbox, settings))
    api.include_router(build_api(services.store, services.inbox, settings.limits))

    ingest = IngestService(
        settings=settings,
        inbox=services.inbox,
        lookup_key=KeyCache(services.store.get_key).get,
        rate_limiter=IngestRateLimiter(settings.rate_limits),
    )
    return CollapseSlashes(IngestFirst(Router(routes=ingest.routes()), api))


def load_severity_rules(path: Path) -> list[SeverityRule]:
    """Severity rules from a JSON list in the data directory, if there is one."""
    if not path.exists():
        return []
    try:
        return parse_rules(json.loads(path.read_text()))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


class KeyCache:
    """DSN keys by public key, remembered for ``ttl`` seconds.

    Every ingest request looks its key up; a query per request would cost more than
    the rest of authentication. A revoked key is refused within ``ttl`` seconds.
    """

    def __init__(
        self,
        lookup: Callable[[str], ProjectKey | None],
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._clock = clock
        self._keys: dict[str, tuple[float, ProjectKey | None]] = {}

    def get(self, public_key: str) -> ProjectKey | None:
        now = self._clock()
        hit = self._keys.get(public_key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        if len(self._keys) > 10_000:
            # Unknown keys are remembered too (as None); bound what a scan can fill.
            self._keys.clear()
        key = self._lookup(public_key)
        self._keys[public_key] = (now, key)
        return key


_INGEST_PATH = re.compile(r"/api/\d+/(envelope|store)/?")


class IngestFirst:
    """Sends ingestion requests to their own router and everything else to the API."""

    def __init__(self, ingest: ASGIApp, api: ASGIApp) -> None:
        self.ingest = ingest
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _INGEST_PATH.fullmatch(scope["path"]):
            await self.ingest(scope, receive, send)
        else:
            await self.api(scope, receive, send)


class CollapseSlashes:
    """Folds runs of ``/`` in the path, as SDKs with a trailing-slash DSN send them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "//" in scope["path"]:
            path = scope["path"]
            while "//" in path:
                path = path.replace("//", "/")
            scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)
