"""Who is sending: the DSN key carried by an ingest request, and DSN strings.

SDKs present their public key in one of four places: an ``X-Sentry-Auth`` header, an
``Authorization: Sentry ...`` or ``Authorization: Basic ...`` header, or ``sentry_*``
query parameters (browsers use these to stay a CORS simple request). A request must use
exactly one of them; the tunnel case, where the key travels as a ``dsn`` in the envelope
header, is read with :func:`parse_dsn` by the caller.

Nothing here looks the key up: these functions only read what the client sent.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from faultlens.ingest.errors import BadRequest, Unauthorized

#: The newest envelope protocol version Faultlens speaks; every current SDK sends 7.
PROTOCOL_VERSION = 7

_QUERY_FIELDS = ("sentry_key", "sentry_version", "sentry_client", "sentry_secret")
_SENTRY_SCHEME = "sentry"
_BASIC_SCHEME = "basic"
_PROJECT_ID = re.compile(r"[0-9]{1,18}", re.ASCII)


@dataclass(frozen=True)
class Auth:
    """The credentials of one request, as sent; not yet checked against any key."""

    public_key: str
    version: int | None
    client: str | None
    secret: str | None


@dataclass(frozen=True)
class Dsn:
    """A parsed DSN.

    Its shape: ``{scheme}://{public_key}[:{secret}]@{host}[:{port}]{path_prefix}/{id}``.
    """

    public_key: str
    project_id: int
    host: str
    port: int | None
    scheme: str
    path_prefix: str
    secret: str | None


def parse_auth(headers: Mapping[str, str], query: Mapping[str, str]) -> Auth | None:
    """Read the ingest credentials of a request, or None when it carries none.

    ``headers`` is looked up with lower-case names only, so pass a starlette
    ``Headers`` (case-insensitive) or a dict whose keys are lower case. ``query``
    maps parameter names to one value each (starlette ``QueryParams`` will do).

    Raises Unauthorized when the credentials are malformed or come through more than
    one channel, and BadRequest for a protocol version newer than this server speaks.
    An ``Authorization`` header with another scheme (``Bearer`` for the REST API, say)
    is not ingest auth and is ignored.
    """
    user_agent = headers.get("user-agent")
    channels: list[tuple[str, dict[str, str]]] = []

    x_sentry_auth = headers.get("x-sentry-auth")
    if x_sentry_auth is not None:
        pairs_text = _strip_scheme(x_sentry_auth, _SENTRY_SCHEME) or x_sentry_auth
        channels.append(("X-Sentry-Auth", _parse_pairs(pairs_text, "X-Sentry-Auth")))

    authorization = _authorization_fields(headers.get("authorization"))
    if authorization is not None:
        channels.append(("Authorization", authorization))

    if any(name in query for name in _QUERY_FIELDS):
        query_fields = {name: query[name] for name in _QUERY_FIELDS if name in query}
        channels.append(("the sentry_* query parameters", query_fields))

    if not channels:
        return None
    if len(channels) > 1:
        names = " and ".join(name for name, _ in channels)
        raise Unauthorized(
            f"multiple authorization payloads detected ({names}); "
            "send the DSN key through exactly one of them"
        )
    channel, fields = channels[0]
    return _auth_from_fields(fields, channel, user_agent)


def parse_dsn(dsn: str) -> Dsn:
    """Parse a DSN, as found in an envelope header's ``dsn`` (the tunnel case).

    Raises BadRequest when it is not ``http(s)://<key>@<host>[/<prefix>]/<project id>``.
    """
    if not isinstance(dsn, str):
        raise BadRequest(f"dsn must be a string, got {type(dsn).__name__}")
    expected = "expected http(s)://<public key>@<host>/<project id>"
    try:
        parts = urlsplit(dsn)
        port = parts.port
    except ValueError as exc:
        raise BadRequest(f"dsn is not a valid URL ({exc}); {expected}") from exc

    if parts.scheme not in ("http", "https"):
        raise BadRequest(f"dsn scheme is {parts.scheme[:16]!r}; {expected}")
    if not parts.username:
        raise BadRequest(f"dsn has no public key before '@'; {expected}")
    if not parts.hostname:
        raise BadRequest(f"dsn has no host; {expected}")

    path_prefix, _, last_segment = parts.path.rpartition("/")
    if not _PROJECT_ID.fullmatch(last_segment):
        raise BadRequest(
            f"dsn path must end in a numeric project id, got {last_segment[:32]!r}; "
            f"{expected}"
        )
    return Dsn(
        public_key=parts.username,
        project_id=int(last_segment),
        host=parts.hostname,
        port=port,
        scheme=parts.scheme,
        path_prefix=path_prefix,
        secret=parts.password or None,
    )


def format_dsn(base_url: str, public_key: str, project_id: int) -> str:
    """The DSN an SDK needs to send ``project_id``'s events to ``base_url``.

    ``base_url`` is this server's public URL; a path in it is kept as the DSN's
    prefix. Raises ValueError for a URL that is not ``http(s)://host[:port][/path]``.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"base URL {base_url!r} must look like http(s)://host[:port][/path]"
        )
    host = parts.netloc.rpartition("@")[2]
    prefix = parts.path.rstrip("/")
    return f"{parts.scheme}://{public_key}@{host}{prefix}/{project_id}"


def _authorization_fields(value: str | None) -> dict[str, str] | None:
    """The fields of an ``Authorization`` header if it carries ingest auth."""
    if value is None:
        return None
    sentry_pairs = _strip_scheme(value, _SENTRY_SCHEME)
    if sentry_pairs is not None:
        return _parse_pairs(sentry_pairs, "Authorization")
    basic_token = _strip_scheme(value, _BASIC_SCHEME)
    if basic_token is not None:
        return _parse_basic(basic_token)
    return None


def _strip_scheme(value: str, scheme: str) -> str | None:
    """``value`` without its leading ``scheme`` word, or None if it has another."""
    word, _, rest = value.strip().partition(" ")
    if word.lower() != scheme:
        return None
    return rest


def _parse_pairs(text: str, channel: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise Unauthorized(
                f"{channel} is malformed: expected comma-separated key=value pairs "
                "such as 'Sentry sentry_key=<public key>, sentry_version=7'"
            )
        fields[key.strip()] = value.strip()
    return fields


def _parse_basic(token: str) -> dict[str, str]:
    """Basic auth carries the public key as user name and an optional secret."""
    malformed = (
        "Authorization: Basic is malformed: expected base64 of '<public key>:' "
        "(the secret after the colon may be empty)"
    )
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthorized(malformed) from exc
    user, sep, password = decoded.partition(":")
    if not sep:
        raise Unauthorized(malformed)
    return {"sentry_key": user, "sentry_secret": password}


def _auth_from_fields(
    fields: Mapping[str, str], channel: str, user_agent: str | None
) -> Auth:
    public_key = fields.get("sentry_key", "")
    if not public_key:
        raise Unauthorized(
            f"{channel} has no sentry_key; send the public key of your DSN "
            "as sentry_key=<public key>"
        )
    return Auth(
        public_key=public_key,
        version=_parse_version(fields.get("sentry_version"), channel),
        client=fields.get("sentry_client") or user_agent,
        secret=fields.get("sentry_secret") or None,
    )


def _parse_version(raw: str | None, channel: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit():
        raise Unauthorized(
            f"{channel} has sentry_version={raw[:16]!r}; expected an integer such as 7"
        )
    # Any number of more than one significant digit is too new, and comparing the
    # text first keeps int() away from the thousands of digits it refuses to read.
    if len(raw.lstrip("0")) > 1 or int(raw) > PROTOCOL_VERSION:
        raise BadRequest(
            f"sentry_version {raw[:16]} is not supported; this server speaks "
            f"versions up to {PROTOCOL_VERSION}, which every current SDK sends"
        )
    return int(raw)
