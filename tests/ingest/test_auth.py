import base64
import json

import orjson
import pytest
from starlette.datastructures import Headers, QueryParams

from faultlens.ingest.auth import Auth, format_dsn, parse_auth, parse_dsn
from faultlens.ingest.errors import BadRequest, Unauthorized
from tests.conftest import samples_dir
from tests.strategies import sample_envelopes

PYTHON_AUTH = (
    "Sentry sentry_key=publickey, sentry_version=7, sentry_client=sentry.python/2.75.0"
)


def _basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def _sample_requests() -> list[str]:
    directory = samples_dir()
    if not directory.is_dir():
        return []
    return sorted(path.name for path in directory.glob("*.headers.json"))


@pytest.mark.parametrize("name", _sample_requests())
def test_every_captured_sdk_request_yields_its_dsn_key(name: str) -> None:
    capture = json.loads((samples_dir() / name).read_text())
    # As an ASGI server hands them over: names lower-cased, bytes.
    raw = [
        (name.lower().encode(), value.encode()) for name, value in capture["headers"]
    ]
    headers = Headers(raw=raw)
    query = {key: values[-1] for key, values in capture["query"].items()}

    auth = parse_auth(headers, query)

    if capture["path"] == "/my-tunnel":
        # The tunnel sends its key in the envelope header, not the request.
        assert auth is None
        return
    assert auth is not None
    assert auth.public_key == "publickey"
    assert auth.version == 7
    assert auth.client is not None
    assert auth.client.startswith(("sentry.python/", "sentry.javascript."))
    assert auth.secret is None


def test_sample_requests_are_present() -> None:
    if not samples_dir().is_dir():
        pytest.skip(f"no SDK captures at {samples_dir()}; set FAULTLENS_SAMPLES_DIR")
    assert len(_sample_requests()) >= 40


def test_x_sentry_auth_as_python_sends_it() -> None:
    auth = parse_auth({"x-sentry-auth": PYTHON_AUTH}, {})

    assert auth == Auth("publickey", 7, "sentry.python/2.75.0", None)


def test_x_sentry_auth_keeps_a_deprecated_secret() -> None:
    auth = parse_auth(
        {"x-sentry-auth": "Sentry sentry_key=k, sentry_secret=s, sentry_version=7"}, {}
    )

    assert auth == Auth("k", 7, None, "s")


@pytest.mark.parametrize(
    "value",
    [
        "sentry sentry_key=k,sentry_version=7",
        "SENTRY   sentry_key=k ,  sentry_version=7 ,",
        "sentry_key=k, sentry_version=7",
    ],
)
def test_x_sentry_auth_tolerates_prefix_case_spacing_and_no_prefix(value: str) -> None:
    auth = parse_auth({"x-sentry-auth": value}, {})

    assert auth == Auth("k", 7, None, None)


def test_authorization_sentry_scheme_is_matched_case_insensitively() -> None:
    for scheme in ("Sentry", "sentry", "SeNtRy"):
        auth = parse_auth({"authorization": f"{scheme} sentry_key=k"}, {})
        assert auth == Auth("k", None, None, None)


def test_authorization_basic_carries_the_key_as_user_name() -> None:
    assert parse_auth({"authorization": _basic("publickey:")}, {}) == Auth(
        "publickey", None, None, None
    )
    assert parse_auth({"authorization": _basic("publickey:secret")}, {}) == Auth(
        "publickey", None, None, "secret"
    )


def test_query_parameters_as_the_browser_sends_them() -> None:
    query = QueryParams(
        "sentry_version=7&sentry_key=publickey"
        "&sentry_client=sentry.javascript.browser%2F11.12.0"
    )

    auth = parse_auth(Headers(), query)

    assert auth == Auth("publickey", 7, "sentry.javascript.browser/11.12.0", None)


def test_starlette_headers_are_read_whatever_their_case() -> None:
    headers = Headers(headers={"X-Sentry-Auth": "Sentry sentry_key=k"})

    assert parse_auth(headers, {}) == Auth("k", None, None, None)


def test_client_falls_back_to_the_user_agent() -> None:
    headers = {"x-sentry-auth": "Sentry sentry_key=k", "user-agent": "raven/1.0"}

    auth = parse_auth(headers, {})

    assert auth is not None
    assert auth.client == "raven/1.0"


def test_sentry_client_wins_over_the_user_agent() -> None:
    headers = {"user-agent": "Mozilla/5.0"}
    query = {"sentry_key": "k", "sentry_client": "sentry.javascript.browser/11"}

    auth = parse_auth(headers, query)

    assert auth is not None
    assert auth.client == "sentry.javascript.browser/11"


def test_no_channel_means_no_auth() -> None:
    assert parse_auth({"user-agent": "curl/8"}, {"foo": "bar"}) is None


def test_a_query_parameter_that_is_not_auth_is_not_a_channel() -> None:
    assert parse_auth({}, {"sentry_data": "eyJ9"}) is None


def test_bearer_authorization_is_not_ingest_auth() -> None:
    assert parse_auth({"authorization": "Bearer flt_token"}, {}) is None

    auth = parse_auth({"authorization": "Bearer flt_token"}, {"sentry_key": "k"})
    assert auth == Auth("k", None, None, None)


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"x-sentry-auth": PYTHON_AUTH}, {"sentry_key": "publickey"}),
        ({"x-sentry-auth": PYTHON_AUTH, "authorization": "Sentry sentry_key=k"}, {}),
        ({"authorization": _basic("k:")}, {"sentry_version": "7"}),
    ],
)
def test_two_channels_at_once_are_refused(
    headers: dict[str, str], query: dict[str, str]
) -> None:
    with pytest.raises(Unauthorized, match="multiple authorization payloads"):
        parse_auth(headers, query)


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"x-sentry-auth": "Sentry sentry_version=7"}, {}),
        ({"x-sentry-auth": "Sentry sentry_key="}, {}),
        ({"x-sentry-auth": "Sentry"}, {}),
        ({"x-sentry-auth": ""}, {}),
        ({"x-sentry-auth": "Sentry sentry_key=k, garbage"}, {}),
        ({"authorization": "Sentry"}, {}),
        ({"authorization": "Basic !!!not-base64"}, {}),
        ({"authorization": _basic("no-colon")}, {}),
        ({"authorization": "Basic " + base64.b64encode(b"\xff\xfe:").decode()}, {}),
        ({"authorization": _basic(":secret")}, {}),
        ({}, {"sentry_version": "7"}),
        ({}, {"sentry_key": ""}),
        ({}, {"sentry_key": "k", "sentry_version": "seven"}),
        ({}, {"sentry_key": "k", "sentry_version": "-1"}),
        ({}, {"sentry_key": "k", "sentry_version": "7.0"}),
        ({}, {"sentry_key": "k", "sentry_version": "\u0667"}),
    ],
)
def test_malformed_credentials_are_unauthorized(
    headers: dict[str, str], query: dict[str, str]
) -> None:
    with pytest.raises(Unauthorized):
        parse_auth(headers, query)


@pytest.mark.parametrize("version", ["8", "10", "99999", "1" + "0" * 5000])
def test_a_protocol_version_above_seven_is_a_bad_request(version: str) -> None:
    with pytest.raises(BadRequest, match="not supported"):
        parse_auth({}, {"sentry_key": "k", "sentry_version": version})


def test_versions_up_to_seven_are_accepted_with_leading_zeros() -> None:
    for raw, expected in [("7", 7), ("007", 7), ("6", 6), ("0", 0)]:
        auth = parse_auth({}, {"sentry_key": "k", "sentry_version": raw})
        assert auth is not None
        assert auth.version == expected


# --- DSNs -----------------------------------------------------------------------------


def test_the_tunnel_sample_dsn_parses() -> None:
    envelope = sample_envelopes().get("js-tunnel-01-event-dsn-in-envelope-header")
    if envelope is None:
        pytest.skip(f"no SDK captures at {samples_dir()}; set FAULTLENS_SAMPLES_DIR")
    header = orjson.loads(envelope.partition(b"\n")[0])

    dsn = parse_dsn(header["dsn"])

    assert (dsn.public_key, dsn.project_id) == ("publickey", 43)
    assert (dsn.scheme, dsn.host, dsn.port) == ("http", "127.0.0.1", 8765)
    assert dsn.path_prefix == ""
    assert dsn.secret is None


def test_dsn_with_path_prefix_secret_and_no_port() -> None:
    dsn = parse_dsn("https://abc:def@errors.example.org/track/api/7")

    assert dsn.public_key == "abc"
    assert dsn.secret == "def"
    assert dsn.host == "errors.example.org"
    assert dsn.port is None
    assert dsn.path_prefix == "/track/api"
    assert dsn.project_id == 7


@pytest.mark.parametrize(
    "dsn",
    [
        "",
        "not a url",
        "ftp://key@host/1",
        "http://host/1",
        "http://key@/1",
        "http://key@host",
        "http://key@host/",
        "http://key@host/abc",
        "http://key@host/1/",
        "http://key@host/-1",
        "http://key@host/\u0664\u0662",
        "http://key@host:99999/1",
        "http://key@[::1/1",
        "http://key@host/" + "9" * 40,
    ],
)
def test_malformed_dsns_are_bad_requests(dsn: str) -> None:
    with pytest.raises(BadRequest, match="dsn"):
        parse_dsn(dsn)


def test_a_dsn_that_is_not_a_string_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="must be a string"):
        parse_dsn(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("base_url", "prefix"),
    [
        ("http://127.0.0.1:8000", ""),
        ("http://127.0.0.1:8000/", ""),
        ("https://errors.example.org/faultlens/", "/faultlens"),
        ("https://old:creds@errors.example.org", ""),
    ],
)
def test_format_dsn_builds_what_parse_dsn_reads(base_url: str, prefix: str) -> None:
    text = format_dsn(base_url, "publickey", 42)
    dsn = parse_dsn(text)

    assert dsn.public_key == "publickey"
    assert dsn.project_id == 42
    assert dsn.path_prefix == prefix
    assert dsn.secret is None
    assert text.startswith(base_url.split("://")[0] + "://publickey@")


def test_format_dsn_refuses_a_base_url_without_a_host() -> None:
    with pytest.raises(ValueError, match="must look like"):
        format_dsn("127.0.0.1:8000", "k", 1)
