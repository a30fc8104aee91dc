"""Turn an event payload as an SDK sent it into the one shape Faultlens stores.

SDKs disagree on shapes: Python sends RFC 3339 timestamps and the browser floats;
exceptions and breadcrumbs come as a bare list or under ``values``; a message comes as
a string, an object or a ``logentry``; tag values are not always strings.
:func:`normalize_event` accepts all of them and returns a new dict in which each field
has exactly one shape, so grouping, storage and the API never branch on SDK quirks.

Only the fields named in :func:`normalize_event` are kept. An unknown top-level key is
dropped rather than stored, so what is stored is what is documented. The SDK's own
``_meta`` (its notes on what it trimmed, keyed by JSON path) is dropped too; ``_meta``
in a normalised event records what *this* module changed.

The item size limit already bounds the event as a whole. The bounds below cap single
fields, so one pathological field cannot take over an issue page, the search index or
the grouping work. Strings over a bound are cut, not rejected.

Pure functions: no I/O and no clock; the caller passes the time of receipt.
"""

from __future__ import annotations

import json
import math
import re
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from faultlens.config import Limits

LEVELS = ("fatal", "error", "warning", "info", "debug")
DEFAULT_LEVEL = "error"

#: A message or exception value longer than this is nearly always a dumped payload
#: rather than prose; 8 KiB keeps every message a person wrote whole.
MAX_MESSAGE_LENGTH = 8 * 1024
#: Names: release, environment, transaction, logger, server name, exception type.
#: Sentry caps releases at 200 characters; anything longer is no longer a name.
MAX_NAME_LENGTH = 200
#: Tag keys and values are indexed for search; 200 matches the name bound.
MAX_TAG_LENGTH = 200
#: Every tag becomes an index entry, so the count bounds index writes per event.
MAX_TAGS = 100
#: Frame text (file names, functions, source lines). Minified JavaScript puts a whole
#: bundle on one "line"; 1 KiB keeps any line a person would read.
MAX_FRAME_TEXT_LENGTH = 1024
#: Source lines around a frame's line; Python sends 5 either side.
MAX_CONTEXT_LINES = 10
#: Frames per stack trace. Over this, the middle is cut: the entry point and the
#: crash site identify an error, the middle of a deep recursion repeats itself.
MAX_FRAMES = 256
#: Exceptions in one chain. The SDKs follow causes 5 (JS) or a few dozen (Python)
#: deep; longer chains are re-raise loops. The newest are kept, the primary is last.
MAX_EXCEPTIONS = 32
#: Threads in a ``threads`` list; only the crashed one matters for grouping.
MAX_THREADS = 64
#: Both SDKs keep 100 breadcrumbs by default; the newest are kept.
MAX_BREADCRUMBS = 200
#: Parameters of one log message.
MAX_PARAMS = 64
#: Fingerprint entries and their length: a fingerprint names a group, it is not data.
MAX_FINGERPRINT_ENTRIES = 32
MAX_FINGERPRINT_ENTRY_LENGTH = 512
#: The unusable or clamped timestamp kept in ``_meta``.
MAX_ORIGINAL_TIMESTAMP_LENGTH = 100
#: Titles fit one line of an issue list.
MAX_TITLE_LENGTH = 200
#: Width or precision in a message template: "%999999999d" would allocate gigabytes.
MAX_FORMAT_WIDTH = 100

_LEVEL_ALIASES = {"log": "info", "critical": "fatal", "warn": "warning"}
_NUMERIC_LEVELS = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "fatal"}

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)
_AUTO_IP = re.compile(r"\{\{\s*auto\s*\}\}")
_PERCENT_SPEC = re.compile(
    r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]"
)

_NAME_FIELDS = (
    "environment",
    "release",
    "dist",
    "server_name",
    "transaction",
    "logger",
)
_DICT_FIELDS = ("contexts", "extra", "request", "sdk", "modules")
_FRAME_TEXT_FIELDS = (
    "filename",
    "abs_path",
    "module",
    "function",
    "raw_function",
    "package",
    "platform",
    "context_line",
)
_USER_KEY_FIELDS = (
    ("id", "id"),
    ("email", "email"),
    ("username", "username"),
    ("ip_address", "ip"),
)


def normalize_event(
    raw: dict[str, Any],
    *,
    event_id: str,
    received_at: float,
    client_ip: str | None,
    limits: Limits,
) -> dict[str, Any]:
    """Return a new, normalised copy of the event payload ``raw``.

    ``event_id`` is used as given (the envelope header's id wins over the payload's;
    the caller decides). ``received_at`` is the Unix time of receipt: it replaces a
    missing or unusable timestamp, and timestamps are clamped to
    ``[received_at - limits.max_event_age, received_at + limits.max_event_future]``.
    ``client_ip`` fills ``user.ip_address`` only where the SDK asked for it.

    ``raw`` is taken over: it is not changed, but the result shares nested values
    with it, so pass a payload that nothing else holds (one just parsed from the
    wire) when later steps (scrubbing, encryption) will change the result in place.
    A deep copy here would cost more than all the rest of normalising.
    """
    timestamp, timestamp_meta = _event_timestamp(
        raw.get("timestamp"), received_at, limits
    )
    event: dict[str, Any] = {
        "event_id": event_id,
        "timestamp": timestamp,
        "received": received_at,
        "level": normalize_level(raw.get("level")),
        "platform": (_name(raw.get("platform")) or "other").lower(),
    }

    for key in _NAME_FIELDS:
        _put(event, key, _name(raw.get(key)))
    for key in _DICT_FIELDS:
        _put(event, key, raw[key] if isinstance(raw.get(key), dict) else None)

    logentry = _logentry(raw)
    if logentry is not None:
        event["logentry"] = logentry
        event["message"] = logentry["formatted"]

    _put(event, "exception", _exceptions(raw.get("exception")))
    _put(event, "stacktrace", _stacktrace(raw.get("stacktrace")))
    _put(event, "threads", _threads(raw.get("threads")))
    _put(event, "breadcrumbs", _breadcrumbs(raw.get("breadcrumbs")))
    _put(event, "tags", _tags(raw.get("tags")))
    _put(event, "user", _user(raw.get("user"), raw.get("sdk"), client_ip))
    _put(event, "fingerprint", _fingerprint(raw.get("fingerprint")))

    if timestamp_meta is not None:
        event["_meta"] = {"timestamp": timestamp_meta}
    return event


def normalize_level(value: object, default: str = DEFAULT_LEVEL) -> str:
    """Map any level spelling the SDKs use to one of :data:`LEVELS`."""
    if isinstance(value, bool):
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return _NUMERIC_LEVELS.get(value, default)
    if not isinstance(value, str):
        return default

    text = value.strip().lower()
    if text.isdigit():
        return _NUMERIC_LEVELS.get(int(text), default)
    text = _LEVEL_ALIASES.get(text, text)
    return text if text in LEVELS else default


def parse_timestamp(value: object) -> float | None:
    """Unix seconds from a number or an RFC 3339 string; None when unusable.

    A string without a zone is read as UTC, which is what SDKs mean by it.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str) and len(value) <= 64:
        return _parse_timestamp_text(value.strip())
    return None


def event_title(event: dict[str, Any]) -> str:
    """One line naming the event, as issue lists show it.

    ``Type: value`` of the primary (last) exception; a synthetic exception (one the
    SDK made up to carry a stack for a message) is titled by the message instead.
    """
    message = _message_line(event)
    title = ""
    primary = _primary_exception(event)
    if primary is not None:
        synthetic = _is_synthetic(primary)
        title = message if synthetic and message else _exception_label(primary)
    title = title or message or "<unlabeled event>"
    return title[:MAX_TITLE_LENGTH]


def event_culprit(event: dict[str, Any]) -> str:
    """Where the event happened: the transaction, else the crashing frame.

    The crashing frame is the last in-app frame of the primary exception, or its
    last frame when none is in-app. Empty when there is neither.
    """
    transaction = event.get("transaction")
    if isinstance(transaction, str) and transaction:
        return transaction

    primary = _primary_exception(event)
    stacktrace = primary.get("stacktrace") if primary else event.get("stacktrace")
    frames = _frames_of(stacktrace)
    in_app = [frame for frame in frames if frame.get("in_app") is True]
    candidates = in_app or frames
    return _frame_label(candidates[-1]) if candidates else ""


def event_user_key(event: dict[str, Any]) -> str | None:
    """A key for counting distinct users: the first of id, e-mail, username, IP."""
    user = event.get("user")
    if not isinstance(user, dict):
        return None
    for field, prefix in _USER_KEY_FIELDS:
        value = user.get(field)
        if isinstance(value, str) and value:
            return f"{prefix}:{value}"
    return None


def event_search_tags(event: dict[str, Any]) -> dict[str, str]:
    """The tags to index: the event's own (``tenant`` among them) plus built-ins.

    The built-ins (environment, release, level, user, logger, transaction) come
    from the event's fields and win over a tag of the same name, because they are
    what the dashboard filters on.
    """
    tags = dict(event.get("tags") or {})
    builtins = {
        "environment": event.get("environment"),
        "release": event.get("release"),
        "level": event.get("level"),
        "user": event_user_key(event),
        "logger": event.get("logger"),
        "transaction": event.get("transaction"),
    }
    for key, value in builtins.items():
        if isinstance(value, str) and value:
            tags[key] = value[:MAX_TAG_LENGTH]
    return tags


# Timestamps


def _parse_timestamp_text(text: str) -> float | None:
    match = _RFC3339.fullmatch(text)
    if match is None:
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None

    fraction, zulu, sign, offset_h, offset_m = match.groups()[6:]
    if fraction is None or len(fraction) <= 6:
        # The C parser is several times faster, and SDKs send a timestamp with
        # every breadcrumb; it takes all of RFC 3339 but for nanoseconds.
        try:
            fast = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return (fast if fast.tzinfo else fast.replace(tzinfo=UTC)).timestamp()

    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        zone = UTC
        if sign is not None and not zulu:
            offset = timedelta(hours=int(offset_h), minutes=int(offset_m))
            zone = timezone(-offset if sign == "-" else offset)
        moment = datetime(year, month, day, hour, minute, second, tzinfo=zone)
    except ValueError:
        return None
    return moment.timestamp() + (int(fraction.ljust(9, "0")) / 1e9 if fraction else 0)


def _event_timestamp(
    raw: object, received_at: float, limits: Limits
) -> tuple[float, dict[str, Any] | None]:
    parsed = parse_timestamp(raw)
    if parsed is None:
        if raw is None:
            return received_at, None
        return received_at, {"original": _original(raw), "reason": "invalid"}

    low = received_at - limits.max_event_age
    high = received_at + limits.max_event_future
    clamped = min(max(parsed, low), high)
    if clamped != parsed:
        return clamped, {"original": _original(raw), "reason": "clamped"}
    return parsed, None


def _original(raw: object) -> object:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return raw if math.isfinite(raw) else str(raw)
    return str(raw)[:MAX_ORIGINAL_TIMESTAMP_LENGTH]


# Messages


def _logentry(raw: dict[str, Any]) -> dict[str, Any] | None:
    # A logentry with text wins over ``message``: it carries the template.
    source = raw.get("logentry")
    if not isinstance(source, dict) or not (
        _text(source.get("message")) or _text(source.get("formatted"))
    ):
        source = raw.get("message")

    if isinstance(source, dict):
        template = _text(source.get("message"), MAX_MESSAGE_LENGTH)
        formatted = _text(source.get("formatted"), MAX_MESSAGE_LENGTH)
        params = _params(source.get("params"))
    else:
        template = formatted = _text(source, MAX_MESSAGE_LENGTH)
        params = []

    if template is None and formatted is None:
        return None
    if template is None:
        template = formatted
    if formatted is None:
        formatted = _format_message(template or "", params)
    return {"message": template, "params": params, "formatted": formatted}


def _params(raw: object) -> list[Any] | dict[str, Any]:
    def bounded(value: Any) -> Any:
        return value[:MAX_MESSAGE_LENGTH] if isinstance(value, str) else value

    if isinstance(raw, list):
        return [bounded(value) for value in raw[:MAX_PARAMS]]
    if isinstance(raw, dict):
        items = list(raw.items())[:MAX_PARAMS]
        return {str(key): bounded(value) for key, value in items}
    return []


def _format_message(template: str, params: list[Any] | dict[str, Any]) -> str:
    """Fill a template the way the SDK's language would; the template if that fails.

    Only ``%``-style and ``{}``-style are tried, and only with bounded widths and
    no attribute or index access, because both template and params are untrusted.
    """
    if not params:
        return template
    percent_specs = _PERCENT_SPEC.findall(template)
    try:
        if percent_specs:
            if not all(
                _narrow(width) and _narrow(prec) for width, prec in percent_specs
            ):
                return template
            args = params if isinstance(params, dict) else tuple(params)
            result = template % args
        else:
            result = _format_braces(template, params)
    except (ArithmeticError, LookupError, TypeError, ValueError):
        return template
    return result[:MAX_MESSAGE_LENGTH]


def _format_braces(template: str, params: list[Any] | dict[str, Any]) -> str:
    for _, field, spec, _ in string.Formatter().parse(template):
        if field is None:
            continue
        if "." in field or "[" in field or "{" in (spec or ""):
            return template
        if not all(_narrow(width) for width in re.findall(r"\d+", spec or "")):
            return template
    if isinstance(params, dict):
        return template.format(**params)
    return template.format(*params)


def _narrow(width: str) -> bool:
    return width != "*" and (not width or int(width) <= MAX_FORMAT_WIDTH)


# Exceptions and stack traces


def _values(raw: object) -> list[Any] | None:
    """The list in a field SDKs send either bare or as ``{"values": [...]}``."""
    if isinstance(raw, list):
        return raw
    if isinstance(raw, dict) and isinstance(raw.get("values"), list):
        values: list[Any] = raw["values"]
        return values
    return None


def _exceptions(raw: object) -> dict[str, Any] | None:
    entries = [item for item in _values(raw) or [] if isinstance(item, dict)]
    exceptions = [exc for exc in map(_exception, entries) if exc is not None]
    return {"values": exceptions[-MAX_EXCEPTIONS:]} if exceptions else None


def _exception(raw: dict[str, Any]) -> dict[str, Any] | None:
    exc: dict[str, Any] = {}
    _put(exc, "type", _text(raw.get("type"), MAX_NAME_LENGTH))
    _put(exc, "value", _text(raw.get("value"), MAX_MESSAGE_LENGTH))
    _put(exc, "module", _text(raw.get("module"), MAX_NAME_LENGTH))
    if not exc and not isinstance(raw.get("stacktrace"), dict):
        return None

    _put(exc, "stacktrace", _stacktrace(raw.get("stacktrace")))
    mechanism = raw.get("mechanism")
    _put(exc, "mechanism", mechanism if isinstance(mechanism, dict) else None)
    thread_id = raw.get("thread_id")
    _put(exc, "thread_id", thread_id if isinstance(thread_id, int | str) else None)
    return exc


def _stacktrace(raw: object) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    stacktrace = dict(raw)
    frames = [_frame(frame) for frame in _frames_of(raw)]

    if len(frames) > MAX_FRAMES:
        half = MAX_FRAMES // 2
        stacktrace["frames_omitted"] = [half, len(frames) - half]
        frames = frames[:half] + frames[-half:]
    stacktrace["frames"] = frames
    return stacktrace


def _frame(raw: dict[str, Any]) -> dict[str, Any]:
    frame = dict(raw)
    for key in _FRAME_TEXT_FIELDS:
        if key in frame:
            _put(frame, key, _text(frame[key], MAX_FRAME_TEXT_LENGTH), drop=True)
    for key in ("pre_context", "post_context"):
        if key in frame:
            lines = frame[key] if isinstance(frame[key], list) else []
            frame[key] = [
                line[:MAX_FRAME_TEXT_LENGTH]
                for line in lines[-MAX_CONTEXT_LINES:]
                if isinstance(line, str)
            ]
    if "in_app" in frame and not isinstance(frame["in_app"], bool):
        del frame["in_app"]
    return frame


def _threads(raw: object) -> dict[str, Any] | None:
    entries = [item for item in _values(raw) or [] if isinstance(item, dict)]
    threads = []
    for entry in entries[:MAX_THREADS]:
        thread = dict(entry)
        _put(thread, "stacktrace", _stacktrace(entry.get("stacktrace")), drop=True)
        threads.append(thread)
    return {"values": threads} if threads else None


def _frames_of(stacktrace: object) -> list[dict[str, Any]]:
    frames = stacktrace.get("frames") if isinstance(stacktrace, dict) else None
    return (
        [f for f in frames if isinstance(f, dict)] if isinstance(frames, list) else []
    )


# Breadcrumbs, tags, user, fingerprint


def _breadcrumbs(raw: object) -> dict[str, Any] | None:
    entries = [item for item in _values(raw) or [] if isinstance(item, dict)]
    if not entries:
        return None

    crumbs = []
    for entry in entries[-MAX_BREADCRUMBS:]:
        crumb = dict(entry)
        _put(crumb, "timestamp", parse_timestamp(entry.get("timestamp")), drop=True)
        if "level" in crumb:
            crumb["level"] = normalize_level(crumb["level"], default="info")
        if "message" in crumb:
            message = _text(crumb["message"], MAX_MESSAGE_LENGTH)
            _put(crumb, "message", message, drop=True)
        crumbs.append(crumb)
    return {"values": crumbs}


def _tags(raw: object) -> dict[str, str] | None:
    if isinstance(raw, dict):
        pairs: list[Any] = list(raw.items())
    elif isinstance(raw, list):
        pairs = [p for p in raw if isinstance(p, list | tuple) and len(p) == 2]
    else:
        return None

    tags: dict[str, str] = {}
    for key, value in pairs:
        tag_key, tag_value = _tag_text(key), _tag_text(value)
        if tag_key and tag_value is not None:
            tags[tag_key] = tag_value
        if len(tags) >= MAX_TAGS:
            break
    return tags or None


def _tag_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = str(value)
    else:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return text[:MAX_TAG_LENGTH]


def _user(raw: object, sdk: object, client_ip: str | None) -> dict[str, Any] | None:
    user = dict(raw) if isinstance(raw, dict) else {}
    for key in ("id", "email", "username", "name"):
        if key in user:
            _put(user, key, _text(user[key], MAX_NAME_LENGTH), drop=True)

    # Only an explicit request fills in the connection's address: "{{auto}}" from
    # Python, or ``sdk.settings.infer_ip == "auto"`` from the browser with no
    # address of its own. Otherwise the user's address is never guessed.
    address = user.get("ip_address")
    wants_auto = isinstance(address, str) and _AUTO_IP.fullmatch(address.strip())
    if wants_auto or (address is None and _infers_ip(sdk)):
        _put(user, "ip_address", client_ip, drop=True)
    return user or None


def _infers_ip(sdk: object) -> bool:
    settings = sdk.get("settings") if isinstance(sdk, dict) else None
    return isinstance(settings, dict) and settings.get("infer_ip") == "auto"


def _fingerprint(raw: object) -> list[str] | None:
    if not isinstance(raw, list):
        return None
    entries = [
        text
        for text in (_text(e, MAX_FINGERPRINT_ENTRY_LENGTH) for e in raw)
        if text is not None
    ]
    return entries[:MAX_FINGERPRINT_ENTRIES] or None


# Titles and culprits


def _primary_exception(event: dict[str, Any]) -> dict[str, Any] | None:
    values = _values(event.get("exception")) or []
    exceptions = [exc for exc in values if isinstance(exc, dict)]
    return exceptions[-1] if exceptions else None


def _is_synthetic(exc: dict[str, Any]) -> bool:
    mechanism = exc.get("mechanism")
    return isinstance(mechanism, dict) and mechanism.get("synthetic") is True


def _exception_label(exc: dict[str, Any]) -> str:
    kind = "" if _is_synthetic(exc) else exc.get("type") or ""
    value = _first_line(exc.get("value"))
    return f"{kind}: {value}" if kind and value else kind or value


def _message_line(event: dict[str, Any]) -> str:
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        return _first_line(logentry.get("formatted") or logentry.get("message"))
    return _first_line(event.get("message"))


def _first_line(text: object) -> str:
    if not isinstance(text, str):
        return ""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _frame_label(frame: dict[str, Any]) -> str:
    where = frame.get("module") or frame.get("filename") or ""
    function = frame.get("function") or ""
    if where and function:
        return f"{where} in {function}"
    return str(where or function)


# Small helpers


def _text(value: object, limit: int = MAX_MESSAGE_LENGTH) -> str | None:
    """A non-empty string cut to ``limit``; numbers written out; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str) or not value:
        return None
    return value[:limit]


def _name(value: object) -> str | None:
    text = _text(value, MAX_NAME_LENGTH)
    if text is None:
        return None
    return text.strip() or None


def _put(target: dict[str, Any], key: str, value: object, drop: bool = False) -> None:
    """Set ``key`` when there is a value; with ``drop``, remove it when there is not."""
    if value is not None:
        target[key] = value
    elif drop:
        target.pop(key, None)
