"""Builds the Faultlens ASGI app: wires the stores to ingestion, worker and API."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from faultlens.api.routes import build_api, install_problem_handlers
from faultlens.config import Settings
from faultlens.ingest.ratelimit import IngestRateLimiter
from faultlens.ingest.routes import IngestService
from faultlens.ops.health import health_routes
from faultlens.processing.grouping import DEFAULT_GROUPING_VERSION
from faultlens.processing.pipeline import Context
from faultlens.processing.severity import SeverityRule, parse_rules
from faultlens.processing.worker import Worker
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
            settings.data_dir / "inbox.db", batch_size=settings.inbox_batch_size
        )
        context = Context(
            limits=settings.limits,
            severity_rules=load_severity_rules(
                settings.data_dir / "severity-rules.json"
            ),
        )
        worker = Worker(inbox, store, context, batch_size=settings.worker_batch_size)
        return cls(settings, store, inbox, worker)

    def ensure_default_project(self) -> str | None:
        """On an empty store, create a project and return its DSN."""
        if self.store.list_projects():
            return None
        from faultlens.ingest.auth import format_dsn

        project = self.store.create_project("default", DEFAULT_GROUPING_VERSION)
        key = self.store.create_key(project.id)
        return format_dsn(self.settings.base_url, key.public_key, project.id)

    def close(self) -> None:
        self.worker.stop()
        self.inbox.close()


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The whole server as one ASGI app; starts the worker with the app's lifespan."""
    services = services or Services.open(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.embedded_worker:
            services.worker.start()
        yield
        services.close()

    app = FastAPI(
        title="Faultlens",
        version="0.1.0",
        summary="Error tracking that speaks the Sentry protocol.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.services = services
    app.add_middleware(CollapseSlashes)
    install_problem_handlers(app)
    ingest = IngestService(
        settings=settings,
        inbox=services.inbox,
        lookup_key=services.store.get_key,
        rate_limiter=IngestRateLimiter(settings.rate_limits),
    )
    app.router.routes.extend(ingest.routes())
    app.router.routes.extend(health_routes(services.store, services.inbox, settings))
    app.include_router(build_api(services.store, services.inbox))
    return app


def load_severity_rules(path: Path) -> list[SeverityRule]:
    """Severity rules from a JSON list in the data directory, if there is one."""
    if not path.exists():
        return []
    try:
        return parse_rules(json.loads(path.read_text()))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


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
