"""Decide which events are the same problem: the grouping hash.

An issue is the set of events with one hash. The hash is the MD5 of the values a
grouping strategy picks from a normalised event. Strategies are versioned in
:data:`GROUPING_VERSIONS`; a project keeps the version it started with, so improving
a strategy never splits or merges existing issues.

Strategy ``faultlens-2026-12``, in order of preference:

1. **Exceptions.** Every exception in the chain contributes, oldest cause first: its
   ``type`` and its stack frames. Per frame: the module (or, without one, the lower
   case base name of the file), the function, and the source line with whitespace
   collapsed. Line numbers and absolute paths never contribute, so a redeploy that
   shifts code does not split an issue. JavaScript frames from ``<anonymous>``,
   ``[native code]`` and ``eval`` are dropped; a file name that is a web URL does
   not count (a bundle's URL changes with every deploy), nor does the object part
   of ``Obj.method``.
   Source lines only count for platforms whose SDKs send real source (Python,
   JavaScript, Node, PHP, Ruby) and only up to 120 characters (longer lines are
   minified code). Repeated consecutive frames (recursion) count once.

   Which frames: an event gets one hash, so the choice between in-app and all
   frames is made here, once. If any frame in the chain is in-app, only in-app
   frames count, because library frames change with library versions while the
   application's do not. If none is in-app but frames exist, all frames count: the
   crash is inside a library, and its frames are still steadier than its message.
   An exception left without counting frames (none at all, or only library frames
   while the chain has in-app ones) is keyed by its type and its parameterised
   value (see :func:`parameterize`).

   A *synthetic* exception (made up by an SDK to carry a stack for a message)
   contributes no type; it contributes the message instead (the template when there
   is one), next to its frames. Keying such events by frames alone would fold every
   message sent through one logging helper into a single issue.
2. **A bare stack trace** (``stacktrace``, or the crashed thread's) with the message,
   same frame rules.
3. **The message**: the template of a log entry (so ``"Order %s failed"`` groups
   regardless of its parameters), else the message; first line, trimmed,
   parameterised.
4. Events with none of these form one group.

A fingerprint on the event replaces all of this; an entry ``{{ default }}`` (spacing
ignored) stands for the hash the strategy would have produced, so
``["{{ default }}", "eu"]`` splits the default group by region.

Function names are cleaned for JavaScript only: the SDKs Faultlens targets send
Python and JavaScript, and generated-name rules for other languages would be
untested guesses.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

GroupingStrategy = Callable[[Mapping[str, Any]], list[str]]

DEFAULT_GROUPING_VERSION = "faultlens-2026-12"

#: Text is cut to this before parameterising: grouping keys on the first line of a
#: message, and the cap keeps the regular expressions' worst case small.
MAX_PARAMETERIZE_INPUT = 1024
#: Longer source lines are minified or generated code, useless as a key.
MAX_CONTEXT_LINE_LENGTH = 120

_JS_PLATFORMS = frozenset({"javascript", "node"})
_SOURCE_PLATFORMS = frozenset({"python", "javascript", "node", "php", "ruby"})
_JS_NOISE_FILES = frozenset({"<anonymous>", "[native code]", "native", "eval"})
_UNKNOWN_FUNCTIONS = frozenset({"", "?", "<anonymous>", "anonymous"})
_WEB_URL = re.compile(r"(?:https?:|blob:)", re.IGNORECASE)
_DEFAULT_MARKER = re.compile(r"\{\{\s*default\s*\}\}")


# Parameterisation: ordered, because earlier patterns swallow text later ones would
# misread (an e-mail's domain is not a hostname, a date's digits are not ints).
# Each pattern starts only where a run of its characters starts (a lookbehind) and
# uses possessive quantifiers where a run is consumed, so matching is linear.

_NOT_AFTER_ALNUM = r"(?<![A-Za-z0-9])"
_NOT_BEFORE_ALNUM = r"(?![A-Za-z0-9])"
_HEX = "[0-9A-Fa-f]"
_MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_WEEKDAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_HOST_SUFFIXES = (
    "com|net|org|io|cloud|internal|local|localdomain|lan|corp|test|example|invalid"
)


def _pattern(body: str) -> re.Pattern[str]:
    return re.compile(_NOT_AFTER_ALNUM + body + _NOT_BEFORE_ALNUM)


_PARAMETERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"""=(?:'[^']*+'|"[^"]*+")"""), "=<quoted_str>"),
    (re.compile(r"(=\s?)(?:[Tt]rue|[Ff]alse)" + _NOT_BEFORE_ALNUM), r"\1<bool>"),
    (
        re.compile(
            r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9-]++"
            r"(?:\.[A-Za-z0-9-]++)++"
        ),
        "<email>",
    ),
    (
        re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*+://[^\s\"'<>]++"),
        "<url>",
    ),
    (_pattern(rf"00-{_HEX}{{32}}-{_HEX}{{16}}-{_HEX}{{2}}"), "<traceparent>"),
    (
        _pattern(rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"),
        "<uuid>",
    ),
    (_pattern(rf"(?:{_HEX}{{64}}|{_HEX}{{40}}|{_HEX}{{32}})"), "<hash>"),
    (
        _pattern(
            r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
            r"(?:[Zz]|[+-]\d{2}:?\d{2})?)?"
        ),
        "<date>",
    ),
    (
        _pattern(
            rf"{_WEEKDAY},\s\d{{1,2}}\s{_MONTH}\s\d{{4}}\s\d{{2}}:\d{{2}}:\d{{2}}"
            r"\s(?:GMT|UTC|[+-]\d{4})"
        ),
        "<date>",
    ),
    (
        _pattern(rf"\d{{2}}/{_MONTH}/\d{{4}}:\d{{2}}:\d{{2}}:\d{{2}}\s[+-]\d{{4}}"),
        "<date>",
    ),
    (
        _pattern(
            rf"(?:{_WEEKDAY}\s)?{_MONTH}\s+\d{{1,2}}\s\d{{2}}:\d{{2}}:\d{{2}}"
            r"(?:\s\d{4})?"
        ),
        "<date>",
    ),
    (_pattern(r"(?:\d{1,2}/\d{1,2}/\d{2,4}|\d{4}/\d{2}/\d{2})"), "<date>"),
    (_pattern(r"\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?(?:\s?[AaPp][Mm])?"), "<date>"),
    (_pattern(r"(?:\d{1,3}\.){3}\d{1,3}"), "<ip>"),
    (
        re.compile(
            rf"(?<![0-9A-Za-z:])(?:(?:{_HEX}{{1,4}}:){{7}}{_HEX}{{1,4}}"
            rf"|(?:{_HEX}{{1,4}}:){{1,7}}:(?:{_HEX}{{1,4}}(?::{_HEX}{{1,4}}){{0,6}})?"
            rf"|::{_HEX}{{1,4}}(?::{_HEX}{{1,4}}){{0,6}})(?![0-9A-Za-z:])"
        ),
        "<ip>",
    ),
    (
        re.compile(
            rf"(?<![A-Za-z0-9.-])(?:[A-Za-z0-9-]++\.)++(?:{_HOST_SUFFIXES})"
            r"(?![A-Za-z0-9-])"
        ),
        "<hostname>",
    ),
    (
        _pattern(
            rf"(?:0[xX]{_HEX}++|(?={_HEX}*?[0-9])(?={_HEX}*?[A-Fa-f]){_HEX}{{7,}}+)"
        ),
        "<hex>",
    ),
    (
        _pattern(
            r"\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s|secs?|seconds?|m|mins?|minutes?"
            r"|h|hrs?|hours?|d|days?)"
        ),
        "<duration>",
    ),
    (_pattern(r"\d+(?:\.\d+(?:[eE][-+]?\d+)?|[eE][-+]?\d+)"), "<float>"),
    (_pattern(r"\d+"), "<int>"),
)


def parameterize(text: str) -> str:
    """Replace the variable parts of a message with placeholders.

    E-mail addresses, URLs, trace ids, UUIDs, hashes, dates and times, IP
    addresses, hostnames, hex numbers, durations, floats and integers become
    ``<email>``, ``<url>``, ``<traceparent>``, ``<uuid>``, ``<hash>``, ``<date>``,
    ``<ip>``, ``<hostname>``, ``<hex>``, ``<duration>``, ``<float>``, ``<int>``;
    a quoted value or a boolean after ``=`` becomes ``<quoted_str>`` or ``<bool>``.
    Digits glued to letters (``utf8``, ``item42``) are left alone: they are more
    often part of a name than a value.
    """
    text = text[:MAX_PARAMETERIZE_INPUT]
    for pattern, placeholder in _PARAMETERS:
        text = pattern.sub(placeholder, text)
    return text


def compute_hash(event: Mapping[str, Any], version: str) -> str:
    """The grouping hash (32 hex digits) of a normalised event under ``version``."""
    strategy = GROUPING_VERSIONS.get(version)
    if strategy is None:
        known = ", ".join(sorted(GROUPING_VERSIONS))
        raise ValueError(
            f"unknown grouping version {version!r}; expected one of: {known}. "
            "Set the project's grouping version to one of these."
        )
    default = _md5(strategy(event))

    fingerprint = event.get("fingerprint")
    if not isinstance(fingerprint, list) or not fingerprint:
        return default
    entries = [
        default if _DEFAULT_MARKER.fullmatch(str(entry).strip()) else str(entry)
        for entry in fingerprint
    ]
    if entries == [default]:
        return default
    return _md5(["fingerprint", *entries])


def _md5(values: Iterable[str]) -> str:
    # Length prefixes keep ["ab", "c"] and ["a", "bc"] apart.
    digest = hashlib.md5(usedforsecurity=False)
    for value in values:
        data = value.encode("utf-8", "surrogatepass")
        digest.update(b"%d:" % len(data))
        digest.update(data)
    return digest.hexdigest()


# The 2026-12 strategy


@dataclass(frozen=True)
class _Frame:
    values: tuple[str, ...]
    in_app: bool


def _grouping_values_2026_12(event: Mapping[str, Any]) -> list[str]:
    platform = _string(event.get("platform"))
    message = _message_key(event)

    exceptions = _exceptions(event)
    if exceptions:
        chain = _exception_chain(exceptions, platform, message)
        if chain:
            return ["exception", *chain]

    frames = _choose_frames([_frames(_bare_stacktrace(event), platform)])[0]
    if frames:
        head = ["message:" + message] if message else []
        return ["stacktrace", *head, *_frame_values(frames)]

    if message:
        return ["message", message]
    return ["empty"]


def _exception_chain(
    exceptions: list[Mapping[str, Any]], platform: str, message: str
) -> list[str]:
    candidates = [_frames(exc.get("stacktrace"), platform) for exc in exceptions]
    values: list[str] = []
    for exc, frames in zip(exceptions, _choose_frames(candidates), strict=True):
        synthetic, kind = _is_synthetic(exc), _string(exc.get("type"))
        value = _value_key(exc.get("value"))
        if synthetic and (message or value):
            values.append("message:" + (message or value))
        elif not synthetic and kind:
            values.append("type:" + kind)

        if frames:
            values += _frame_values(frames)
        elif value and not synthetic:
            values.append("value:" + value)
    return values


def _choose_frames(candidates: list[list[_Frame]]) -> list[list[_Frame]]:
    """In-app frames if the chain has any; else every frame. Recursion collapsed."""
    any_in_app = any(frame.in_app for frames in candidates for frame in frames)
    chosen = []
    for frames in candidates:
        kept = [f for f in frames if f.in_app] if any_in_app else frames
        chosen.append([f for i, f in enumerate(kept) if i == 0 or kept[i - 1] != f])
    return chosen


def _frame_values(frames: list[_Frame]) -> list[str]:
    values: list[str] = []
    for frame in frames:
        values += ["frame", *frame.values]
    return values


def _frames(stacktrace: object, platform: str) -> list[_Frame]:
    entries = stacktrace.get("frames") if isinstance(stacktrace, Mapping) else None
    if not isinstance(entries, list):
        return []
    frames = []
    for entry in entries:
        if isinstance(entry, Mapping):
            values = _frame_key(entry, _string(entry.get("platform")) or platform)
            if values:
                frames.append(_Frame(values, entry.get("in_app") is True))
    return frames


def _frame_key(frame: Mapping[str, Any], platform: str) -> tuple[str, ...]:
    js = platform in _JS_PLATFORMS
    filename = _string(frame.get("filename"))
    function = _string(frame.get("function")).strip()
    if js and (_is_js_noise(filename) or function == "eval"):
        return ()

    values = []
    location = _location(_string(frame.get("module")), filename, js)
    if location:
        values.append("at:" + location)
    function = _function_name(function, js)
    if function:
        values.append("function:" + function)
    context = " ".join(_string(frame.get("context_line")).split())
    if platform in _SOURCE_PLATFORMS and 0 < len(context) <= MAX_CONTEXT_LINE_LENGTH:
        values.append("context:" + context)
    return tuple(values)


def _is_js_noise(filename: str) -> bool:
    return filename in _JS_NOISE_FILES or filename.startswith("<anonymous>")


def _location(module: str, filename: str, js: bool) -> str:
    if module:
        return module
    if js and _WEB_URL.match(filename):
        return ""
    path = filename.split("?", 1)[0].split("#", 1)[0].replace("\\", "/")
    return posixpath.basename(path).lower()


def _function_name(function: str, js: bool) -> str:
    if js:
        function = function.removeprefix("new ").rsplit(".", 1)[-1]
    return "" if function in _UNKNOWN_FUNCTIONS else function


def _exceptions(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    container = event.get("exception")
    values = container.get("values") if isinstance(container, Mapping) else container
    if not isinstance(values, list):
        return []
    return [exc for exc in values if isinstance(exc, Mapping)]


def _bare_stacktrace(event: Mapping[str, Any]) -> object:
    if isinstance(event.get("stacktrace"), Mapping):
        return event["stacktrace"]
    container = event.get("threads")
    threads = container.get("values") if isinstance(container, Mapping) else None
    if not isinstance(threads, list):
        return None
    threads = [t for t in threads if isinstance(t, Mapping) and t.get("stacktrace")]
    crashed = [t for t in threads if t.get("crashed") is True]
    current = [t for t in threads if t.get("current") is True]
    chosen = crashed or current or (threads if len(threads) == 1 else [])
    return chosen[0].get("stacktrace") if chosen else None


def _is_synthetic(exc: Mapping[str, Any]) -> bool:
    mechanism = exc.get("mechanism")
    return isinstance(mechanism, Mapping) and mechanism.get("synthetic") is True


def _message_key(event: Mapping[str, Any]) -> str:
    logentry = event.get("logentry")
    if isinstance(logentry, Mapping):
        text = logentry.get("message") or logentry.get("formatted")
    else:
        text = event.get("message")
    return _value_key(text)


def _value_key(text: object) -> str:
    """First non-blank line, trimmed and parameterised; empty when there is none."""
    if not isinstance(text, str):
        return ""
    for line in text[:MAX_PARAMETERIZE_INPUT].splitlines():
        if line.strip():
            return parameterize(line.strip())
    return ""


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""


GROUPING_VERSIONS: Mapping[str, GroupingStrategy] = MappingProxyType(
    {DEFAULT_GROUPING_VERSION: _grouping_values_2026_12}
)
