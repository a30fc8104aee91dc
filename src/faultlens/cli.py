"""The ``faultlens`` command: serve, run a worker, manage projects, keys and tokens.

Every command takes ``--data-dir`` (or ``FAULTLENS_DATA_DIR``) and prints JSON with
``--json`` so scripts can use it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from faultlens.config import Settings
from faultlens.ingest.auth import format_dsn
from faultlens.processing.grouping import DEFAULT_GROUPING_VERSION
from faultlens.storage.sqlite.store import NotFound, SqliteStore

_data_dir = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="FAULTLENS_DATA_DIR",
    default=Path(".faultlens"),
    show_default=True,
    help="Where Faultlens keeps its data.",
)
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _settings(data_dir: Path, **overrides: Any) -> Settings:
    return Settings.from_env(data_dir=data_dir, **overrides)


def _out(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data) if as_json else text)


@click.group()
def main() -> None:
    """Faultlens: error tracking that speaks the Sentry protocol."""


@main.command()
@_data_dir
@click.option("--host", default=None, help="Address to listen on [127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [8000].")
def serve(data_dir: Path, host: str | None, port: int | None) -> None:
    """Serve ingestion, the API and the processing worker in one process."""
    import uvicorn

    from faultlens.app import Services, create_app

    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    settings = _settings(data_dir, host=host, port=port)
    services = Services.open(settings)
    dsn = services.ensure_default_project()
    if dsn:
        click.echo(f"Created project 'default'. Point your Sentry SDK at:\n  {dsn}")
        click.echo(
            f"Get an API token with: faultlens token create --data-dir {data_dir}"
        )
    click.echo(f"Faultlens on {settings.base_url} (data in {settings.data_dir})")
    uvicorn.run(
        create_app(settings, services),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        # Faultlens decides itself whom to believe (FAULTLENS_TRUSTED_PROXIES);
        # uvicorn would otherwise trust X-Forwarded-For from loopback.
        proxy_headers=False,
    )


@main.command()
@_data_dir
def worker(data_dir: Path) -> None:
    """Process the inbox without serving HTTP (beside `serve` with no worker)."""
    from faultlens.app import Services

    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    services = Services.open(_settings(data_dir))
    supervisor = os.environ.get("FAULTLENS_SUPERVISOR_PID")
    if supervisor and supervisor.isdigit():
        services.worker.parent_pid = int(supervisor)
    signal.signal(signal.SIGTERM, lambda *_: services.worker.stop())
    try:
        services.worker.run()
    except KeyboardInterrupt:
        pass
    finally:
        services.close()


@main.group()
def project() -> None:
    """Create and list projects."""


@project.command("create")
@click.argument("name")
@_data_dir
@_json
def project_create(name: str, data_dir: Path, as_json: bool) -> None:
    """Create a project with one DSN key."""
    settings = _settings(data_dir)
    store = SqliteStore(_ready(data_dir))
    p = store.create_project(name, DEFAULT_GROUPING_VERSION)
    key = store.create_key(p.id)
    dsn = format_dsn(settings.base_url, key.public_key, p.id)
    _out({"id": p.id, "slug": p.slug, "dsn": dsn}, as_json, f"{p.id} {p.slug} {dsn}")


@project.command("list")
@_data_dir
@_json
def project_list(data_dir: Path, as_json: bool) -> None:
    """List projects."""
    store = SqliteStore(_ready(data_dir))
    rows = [{"id": p.id, "slug": p.slug, "name": p.name} for p in store.list_projects()]
    _out(rows, as_json, "\n".join(f"{r['id']} {r['slug']}" for r in rows))


@main.group()
def key() -> None:
    """Create, list and revoke DSN keys."""


@key.command("create")
@click.option("--project", "project_id", type=int, required=True)
@click.option("--label", default="default")
@_data_dir
@_json
def key_create(project_id: int, label: str, data_dir: Path, as_json: bool) -> None:
    """Create a DSN key for a project."""
    settings = _settings(data_dir)
    store = SqliteStore(_ready(data_dir))
    try:
        k = store.create_key(project_id, label)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from exc
    dsn = format_dsn(settings.base_url, k.public_key, project_id)
    _out({"public_key": k.public_key, "dsn": dsn}, as_json, dsn)


@key.command("list")
@click.option("--project", "project_id", type=int, required=True)
@_data_dir
@_json
def key_list(project_id: int, data_dir: Path, as_json: bool) -> None:
    """List a project's keys."""
    settings = _settings(data_dir)
    store = SqliteStore(_ready(data_dir))
    rows = [
        {
            "public_key": k.public_key,
            "label": k.label,
            "active": k.active,
            "dsn": format_dsn(settings.base_url, k.public_key, project_id),
        }
        for k in store.list_keys(project_id)
    ]
    _out(rows, as_json, "\n".join(f"{r['public_key']} {r['label']}" for r in rows))


@key.command("revoke")
@click.argument("public_key")
@_data_dir
def key_revoke(public_key: str, data_dir: Path) -> None:
    """Revoke a DSN key; events sent with it are refused from then on."""
    try:
        SqliteStore(_ready(data_dir)).revoke_key(public_key)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def token() -> None:
    """API tokens for the REST API."""


@token.command("create")
@click.option("--label", default="cli")
@_data_dir
@_json
def token_create(label: str, data_dir: Path, as_json: bool) -> None:
    """Create an API token (full access)."""
    value = SqliteStore(_ready(data_dir)).create_token(label)
    _out({"token": value}, as_json, value)


def _ready(data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


if __name__ == "__main__":
    sys.exit(main())
