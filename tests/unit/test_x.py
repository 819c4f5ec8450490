"""X conversions: hashing, mapping over every kind and switch, windows, signing, pacing."""

from __future__ import annotations

import base64
import os
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from postback_hub.consumers.delivery import HttpRequest, Skip
from postback_hub.consumers.x.client import XRequest
from postback_hub.consumers.x.config import XDestination, XWindows, window_bucket
from postback_hub.consumers.x.destination import XConversions
from postback_hub.consumers.x.mapping import (
    decode_key,
    extra_device_id,
    hash_device_id,
    price_micro,
)
from postback_hub.consumers.x.ratelimit import RateGate
from postback_hub.consumers.x.signing import OAuthSigner, encode_query, percent_encode
from postback_hub.service.normalise import normalise
from postback_hub.service.record import CallbackRecord
from postback_hub.service.settings import ConfigError, Settings
from tests.support import NO_BROKER, make_settings, x_conversions

KEY_B64 = base64.b64encode(bytes(range(32))).decode()
DEV_KEY_B64 = base64.b64encode(b"development-key-of-some-length!!").decode()
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
GPS = "38400000-8cf0-11bd-b23e-10b96e40000d"


def independent_hash(key_b64: str, message: str) -> str:
    """The formula, computed with another library than the one under test."""
    mac = crypto_hmac.HMAC(base64.b64decode(key_b64), hashes.SHA256())
    mac.update(message.encode())
    return base64.b64encode(mac.finalize()).decode()


@pytest.mark.parametrize(
    ("key_b64", "device_id"),
    [
        (KEY_B64, IDFA),
        (KEY_B64, GPS),
        (base64.b64encode(b"k").decode(), "a"),
        (base64.b64encode(os.urandom(64)).decode(), "AEBE52E7-03EE-455A-B3C4-E57283966239"),
    ],
)
def test_hash_matches_the_formula(key_b64: str, device_id: str) -> None:
    hashed = hash_device_id(decode_key(key_b64), device_id)
    assert hashed == independent_hash(key_b64, device_id)
    assert len(hashed) == 44
    assert hashed.endswith("=")


def test_extra_device_id_is_the_hmac_of_the_lowercase_sha1_hex() -> None:
    import hashlib

    sha1_hex = hashlib.sha1(GPS.encode(), usedforsecurity=False).hexdigest()
    assert sha1_hex == sha1_hex.lower()
    assert extra_device_id(decode_key(KEY_B64), GPS) == independent_hash(KEY_B64, sha1_hex)


def test_a_key_that_is_not_base64_is_refused() -> None:
    with pytest.raises(ValueError, match="base64"):
        decode_key("not base64!")


def test_query_encoding_escapes_base64_characters() -> None:
    assert encode_query({"h": "a+b/c=", "t": "2023-11-14T22:13:20.000Z"}) == (
        "h=a%2Bb%2Fc%3D&t=2023-11-14T22%3A13%3A20.000Z"
    )


@pytest.mark.parametrize(
    ("amount", "micros"),
    [("4.99", 4_990_000), ("0.000001", 1), ("1234567.891234", 1_234_567_891_234), ("0.0000005", 0)],
)
def test_price_micro_is_exact(amount: str, micros: int) -> None:
    assert price_micro(Decimal(amount)) == micros


@pytest.mark.parametrize(
    ("hours", "bucket"),
    [(1, 1), (24, 1), (25, 7), (48, 7), (168, 7), (169, 14), (336, 14), (337, 30), (720, 30)],
)
def test_hours_round_up_to_xs_buckets(hours: int, bucket: int) -> None:
    assert window_bucket(hours, (1, 7, 14, 30)) == bucket


def test_windows_are_validated() -> None:
    assert XWindows().resolved() == (14, 1)
    assert XWindows(click_hours=48, view_through_hours=0).resolved() == (7, 0)
    for bad in (
        {"click_days": 3},
        {"view_through_days": 2},
        {"click_days": 1, "view_through_days": 7},
        {"click_days": 7, "click_hours": 7},
        {"click_hours": 721},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - pydantic wraps each as a ValueError
            XWindows(**bad)


def settings(
    app: dict[str, Any] | None = None,
    os_type: str = "IOS",
    base_url: str = "https://ads-api.x.test",
) -> Settings:
    secrets = {
        name: {"env": f"XTEST_{name.upper()}"}
        for name in (
            "consumer_key",
            "consumer_secret",
            "access_token",
            "access_token_secret",
            "hmac_key",
        )
    }
    return make_settings(
        NO_BROKER,
        "callbacks",
        0,
        apps={"demo": {"secret": {"env": "XTEST_SECRET"}}},
        destinations={
            "x": {
                "type": "x",
                "base_url": base_url,
                "apps": {
                    "demo": {
                        "app_id": "333903271" if os_type == "IOS" else "com.example.app",
                        "os_type": os_type,
                        **secrets,
                        "event_conversions": {
                            "tok_buy": "PURCHASE",
                            "tok_level": "LEVEL_ACHIEVED",
                        },
                        "windows": {"PURCHASE": {"click_days": 30, "view_through_hours": 30}},
                        **(app or {}),
                    }
                },
            }
        },
    )


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SECRET": "s",
        "CONSUMER_KEY": "ck",
        "CONSUMER_SECRET": "cs",
        "ACCESS_TOKEN": "at",
        "ACCESS_TOKEN_SECRET": "ats",
        "HMAC_KEY": KEY_B64,
        "HMAC_KEY_DEVELOPMENT": DEV_KEY_B64,
    }.items():
        monkeypatch.setenv(f"XTEST_{name}", value)


def record(kind: str = "install", **fields: str) -> CallbackRecord:
    pairs = [("activity_kind", kind), ("adid", "a" * 32), ("idfa", IDFA), ("gps_adid", GPS)]
    pairs += [("created_at_milli", "1700000000123"), *fields.items()]
    return normalise(
        pairs, app="demo", aliases={}, default_environment="production", received_at_millis=1
    )


def params_of(result: HttpRequest | Skip) -> dict[str, str]:
    assert isinstance(result, HttpRequest), result
    return dict(parse_qsl(urlsplit(result.url).query))


@pytest.mark.parametrize(
    ("kind", "fields", "expected"),
    [
        ("install", {}, "INSTALL"),
        ("reattribution", {}, "RE_ENGAGE"),
        ("reinstall", {}, "RE_ENGAGE"),
        ("reattribution_reinstall", {}, "RE_ENGAGE"),
        ("event", {"event": "tok_buy"}, "PURCHASE"),
        ("event", {"event": "tok_level"}, "LEVEL_ACHIEVED"),
        ("event", {"event": "tok_other"}, Skip("event_not_mapped")),
        ("session", {}, Skip("sessions_not_mapped")),
        ("rejected_install", {}, Skip("kind_not_forwarded")),
        ("click", {}, Skip("kind_not_forwarded")),
        ("ad_revenue", {}, Skip("kind_not_forwarded")),
    ],
)
def test_conversion_types(kind: str, fields: dict[str, str], expected: str | Skip) -> None:
    result = x_conversions(settings()).prepare(record(kind, **fields))
    if isinstance(expected, Skip):
        assert result == expected
    else:
        assert params_of(result)["conversion_type"] == expected


def test_sessions_only_when_mapped() -> None:
    result = x_conversions(settings({"session_conversion": "LOGIN"})).prepare(record("session"))
    assert params_of(result)["conversion_type"] == "LOGIN"


def test_install_parameters() -> None:
    result = x_conversions(settings()).prepare(record(ip_address="198.51.100.7"))
    params = params_of(result)
    assert params == {
        "app_id": "333903271",
        "conversion_time": "2023-11-14T22:13:20.123Z",
        "conversion_type": "INSTALL",
        "hashed_device_id": independent_hash(KEY_B64, IDFA),
        "os_type": "IOS",
        "click_window": "14",
        "view_through_window": "1",
    }
    assert isinstance(result, HttpRequest)
    assert result.method == "POST"
    assert result.url.startswith("https://ads-api.x.test/12/conversion_event?")
    assert "%2B" in result.url or "%2F" in result.url or "%3D" in result.url


def test_android_hashes_the_advertising_id() -> None:
    params = params_of(x_conversions(settings(os_type="ANDROID")).prepare(record()))
    assert params["hashed_device_id"] == independent_hash(KEY_B64, GPS)
    assert params["os_type"] == "ANDROID"


def test_no_device_id_or_a_zero_idfa_is_skipped() -> None:
    destination = x_conversions(settings())
    zero = normalise(
        [("activity_kind", "install"), ("adid", "a" * 32), ("idfa", "0000-0000")],
        app="demo",
        aliases={},
        default_environment="production",
        received_at_millis=1,
    )
    assert destination.prepare(zero) == Skip("no_idfa")
    android = x_conversions(settings(os_type="ANDROID"))
    no_gps = normalise(
        [("activity_kind", "install"), ("adid", "a" * 32)],
        app="demo",
        aliases={},
        default_environment="production",
        received_at_millis=1,
    )
    assert android.prepare(no_gps) == Skip("no_gps_adid")


def test_revenue_windows_and_optional_metadata() -> None:
    app = {"send_device_ip": True, "number_items_parameter": "items", "level_parameter": "lvl"}
    event = record(
        "event",
        event="tok_buy",
        revenue_float="4.99",
        currency="usd",
        ip_address="198.51.100.7",
        partner_parameters='{"items":"3","lvl":"x"}',
    )
    params = params_of(x_conversions(settings(app)).prepare(event))
    assert params["price_micro"] == "4990000"
    assert params["price_currency"] == "USD"
    assert (params["click_window"], params["view_through_window"]) == ("30", "7")
    assert params["device_ip_address"] == "198.51.100.7"
    assert params["number_items"] == "3"
    assert "level" not in params  # not an integer


def test_ip_only_when_the_privacy_switch_allows() -> None:
    params = params_of(x_conversions(settings()).prepare(record(ip_address="198.51.100.7")))
    assert "device_ip_address" not in params


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("as_reported", f" {IDFA} ".strip()),
        ("lower", IDFA.lower()),
        ("lower_no_hyphens", IDFA.lower().replace("-", "")),
    ],
)
def test_normalisation_before_hashing(mode: str, expected: str) -> None:
    params = params_of(x_conversions(settings({"normalisation": mode})).prepare(record()))
    assert params["hashed_device_id"] == independent_hash(KEY_B64, expected)


def test_extra_device_ids_when_on() -> None:
    params = params_of(x_conversions(settings({"send_extra_device_ids": True})).prepare(record()))
    assert len(params["extra_device_ids"]) == 44


def test_sandbox_uses_the_development_key_and_endpoint_or_nothing() -> None:
    sandbox = record(environment="sandbox")
    assert x_conversions(settings()).prepare(sandbox) == Skip("sandbox_without_sandbox_endpoint")
    configured = settings(
        {
            "hmac_key_development": {"env": "XTEST_HMAC_KEY_DEVELOPMENT"},
            "sandbox_base_url": "https://staging.test",
        }
    )
    result = x_conversions(configured).prepare(sandbox)
    assert isinstance(result, HttpRequest)
    assert result.url.startswith("https://staging.test/12/conversion_event?")
    assert params_of(result)["hashed_device_id"] == independent_hash(DEV_KEY_B64, IDFA)


@pytest.mark.parametrize("pass_query", [False, True])
def test_signer_gives_what_oauthlib_client_gives(pass_query: bool) -> None:
    from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, Client

    query = {
        "app_id": "com.example.app",
        "hashed_device_id": "a+b/c==",
        "conversion_time": "2024-01-02T03:04:05.678Z",
        "level": "ünï cödé & more",
    }
    url = "https://ads-api.test:8443/12/conversion_event?" + encode_query(query)
    reference = Client(
        "ck",
        client_secret="cs",
        resource_owner_key="at",
        resource_owner_secret="ats",
        signature_method=SIGNATURE_HMAC_SHA1,
        nonce="n0nce",
        timestamp="1700000000",
    )
    _uri, expected, _body = reference.sign(url, http_method="POST")
    ours = OAuthSigner("ck", "cs", "at", "ats").headers(
        "POST",
        url,
        tuple(query.items()) if pass_query else None,
        nonce="n0nce",
        timestamp="1700000000",
    )
    assert ours == expected
    # A fresh nonce and timestamp per call when none is given.
    signer = OAuthSigner("ck", "cs", "at", "ats")
    assert signer.headers("POST", url) != signer.headers("POST", url)


@pytest.mark.parametrize(
    "text",
    ["", "abc-._~", "a+b/c==", "ünï cödé & more", "x" * 64, "y" * 65 + "/", "%41", "\u2603"],
)
def test_the_signers_encoding_is_rfc5849_percent_encoding(text: str) -> None:
    from urllib.parse import quote

    # RFC 5849 3.6: everything but unreserved characters, UTF-8 first; from a signer
    # that has the string in its table and from one that has not.
    expected = quote(text.encode("utf-8"), safe=b"~")
    assert percent_encode(text) == expected
    remembering = OAuthSigner("ck", "cs", "at", "ats", repeated=[text])
    assert remembering.encode(text) == expected
    assert OAuthSigner("ck", "cs", "at", "ats").encode(text) == expected


def test_importing_the_x_package_leaves_oauthlib_as_it_is() -> None:
    import subprocess
    import sys

    from oauthlib.oauth1.rfc5849 import utils

    probe = (
        "from oauthlib.oauth1.rfc5849 import utils; before = utils.escape;"
        "import postback_hub.consumers.x.destination, postback_hub.consumers.x.commands;"
        "assert utils.escape is before, utils.escape; assert not hasattr(utils, "
        "'_unmemoised_escape')"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)  # a fresh process: no import order
    assert utils.escape.__module__ == "oauthlib.oauth1.rfc5849.utils"
    with pytest.raises(ValueError, match="Only unicode objects are escapable"):
        utils.escape(b"bytes")


def test_signature_covers_every_query_parameter() -> None:
    from oauthlib.common import Request
    from oauthlib.oauth1.rfc5849 import signature

    destination = x_conversions(settings())
    request = destination.prepare(record())
    assert isinstance(request, HttpRequest)
    headers = destination.client.sign("demo", "POST", request.url)
    oauth_request = Request(request.url, http_method="POST", headers=headers)
    oauth_request.params = signature.collect_parameters(
        uri_query=oauth_request.uri_query, headers=headers, exclude_oauth_signature=True
    )
    oauth = dict(signature.collect_parameters(headers=headers, exclude_oauth_signature=False))
    oauth_request.signature = oauth["oauth_signature"]
    assert signature.verify_hmac_sha1(oauth_request, "cs", "ats")
    tampered = Request(
        request.url.replace("INSTALL", "PURCHASE"), http_method="POST", headers=headers
    )
    tampered.params = signature.collect_parameters(
        uri_query=tampered.uri_query, headers=headers, exclude_oauth_signature=True
    )
    tampered.signature = oauth["oauth_signature"]
    assert not signature.verify_hmac_sha1(tampered, "cs", "ats")


def test_dry_run_description_hides_ids_and_hashes() -> None:
    destination = x_conversions(settings())
    rec = record(ip_address="198.51.100.7")
    request = destination.prepare(rec)
    assert isinstance(request, HttpRequest)
    text = str(destination.describe(rec, request))
    assert IDFA not in text
    assert (
        independent_hash(KEY_B64, IDFA).replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
        not in text
    )


def test_invalid_x_settings_are_reported() -> None:
    with pytest.raises(ConfigError, match=r"event_conversions"):
        settings({"event_conversions": {"tok": "BUY_STUFF"}})


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_rate_gate_blocks_until_reset_and_paces_the_last_tenth() -> None:
    clock = Clock()
    gate = RateGate(clock)
    headers = {
        "x-rate-limit-limit": "100",
        "x-rate-limit-remaining": "50",
        "x-rate-limit-reset": "1900",
    }
    assert gate.observe(200, headers) is None
    assert gate.delay() == 0
    assert (
        gate.observe(429, {**headers, "x-rate-limit-remaining": "0", "x-rate-limit-reset": "1030"})
        == 30
    )
    assert gate.delay() == 30
    clock.now = 1030
    assert gate.delay() == 0
    gate.observe(200, {**headers, "x-rate-limit-remaining": "5", "x-rate-limit-reset": "1080"})
    assert gate._interval == pytest.approx(10.0)  # 50 s left for 5 requests


def test_never_twice_without_de_duplication_is_refused() -> None:
    from postback_hub.consumers.x.config import XDestination

    with pytest.raises(ValueError, match="dedup_window_s"):
        XDestination.model_validate({"type": "x", "dedup_window_s": 0})


async def test_limits_follow_the_token_and_refusals_the_credentials_or_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    import aiohttp
    from aiohttp import web

    from postback_hub.consumers.delivery import Delivered, Permanent, Retry
    from tests.support import serve_locally

    monkeypatch.setenv("XTEST_OTHER_ACCESS_TOKEN", "at-other")
    monkeypatch.setenv("XTEST_OTHER_TOKEN_SECRET", "ats-other")

    def error(status: int, code: int, headers: dict[str, str] | None = None) -> web.Response:
        body = {"errors": [{"code": code, "message": "refused"}]}
        return web.json_response(body, status=status, headers=headers)

    reset = str(int(time.time()) + 30)
    answers = [
        error(
            429,
            88,
            {
                "x-rate-limit-limit": "60000",
                "x-rate-limit-remaining": "0",
                "x-rate-limit-reset": reset,
            },
        ),
        error(403, 200),
        error(401, 89),
        web.json_response({"data": {}}),
    ]

    async def answer(_request: web.Request) -> web.Response:
        return answers.pop(0)

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    runner, port = await serve_locally(app)

    def credentials(token: str, token_secret: str) -> dict[str, Any]:
        return {
            "consumer_key": {"env": "XTEST_CONSUMER_KEY"},
            "consumer_secret": {"env": "XTEST_CONSUMER_SECRET"},
            "hmac_key": {"env": "XTEST_HMAC_KEY"},
            "access_token": {"env": token},
            "access_token_secret": {"env": token_secret},
        }

    first = credentials("XTEST_ACCESS_TOKEN", "XTEST_ACCESS_TOKEN_SECRET")
    second = credentials("XTEST_OTHER_ACCESS_TOKEN", "XTEST_ACCESS_TOKEN_SECRET")
    second_other_secret = credentials("XTEST_OTHER_ACCESS_TOKEN", "XTEST_OTHER_TOKEN_SECRET")
    x_apps = {
        key: {"app_id": "333903271", "os_type": "IOS", **creds}
        for key, creds in (
            ("demo", first),
            ("shares", first),
            ("own", second),
            ("own2", second),
            ("own2b", second),
            ("own3", second_other_secret),
        )
    }
    destination = x_conversions(
        make_settings(
            NO_BROKER,
            "callbacks",
            0,
            {"x": {"type": "x", "base_url": f"http://127.0.0.1:{port}", "apps": x_apps}},
            apps={key: {"secret": {"env": "XTEST_SECRET"}} for key in x_apps},
        ),
    )

    def request_for(app_key: str) -> HttpRequest:
        install = record()
        install.app = app_key
        prepared = destination.prepare(install)
        assert isinstance(prepared, HttpRequest)
        return prepared

    try:
        async with aiohttp.ClientSession() as session:
            limited = await destination.send(session, request_for("demo"))
            assert isinstance(limited, Retry)
            assert limited.status == 429
            # The same token through another app waits for the reset; another token does not.
            assert destination.send_delay(request_for("shares")) > 20
            assert destination.send_delay(request_for("own")) == 0
            # A 403 holds back that app only.
            forbidden = await destination.send(session, request_for("own"))
            assert isinstance(forbidden, Permanent)
            assert forbidden.status == 403
            assert await destination.send(session, request_for("own")) == Permanent(
                "unauthorized_cooldown"
            )
            # A 401 holds back every app signing with exactly those credentials...
            refused = await destination.send(session, request_for("own2"))
            assert isinstance(refused, Permanent)
            assert refused.status == 401
            assert await destination.send(session, request_for("own2b")) == Permanent(
                "unauthorized_cooldown"
            )
            # ...and not one whose token secret differs.
            assert isinstance(await destination.send(session, request_for("own3")), Delivered)
        assert answers == []  # the cool-downs sent nothing
    finally:
        await runner.cleanup()


def test_signer_matches_the_published_example_signature() -> None:
    """X's "Creating a signature" example, independent of oauthlib's own Client."""
    signer = OAuthSigner(
        "xvz1evFS4wEEPTGEFPHBog",
        "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
        "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
        "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
    )
    query = [
        ("include_entities", "true"),
        ("status", "Hello Ladies + Gentlemen, a signed OAuth request!"),
    ]
    for _ in range(2):  # the second time, with every repeated string already encoded
        header = signer.headers(
            "POST",
            "https://api.twitter.com/1.1/statuses/update.json",
            query,
            nonce="kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg",
            timestamp="1318622958",
        )["Authorization"]
        assert 'oauth_signature="hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D"' in header


def test_only_repeating_non_secret_strings_are_kept_encoded() -> None:
    destination = x_conversions(settings({"send_device_ip": True}))
    request = destination.prepare(record(ip_address="198.51.100.7"))
    assert isinstance(request, HttpRequest)
    assert isinstance(request, XRequest)
    signer = destination.client.signer("demo")
    kept = signer.pre_encoded
    for _ in range(3):
        destination.client.sign("demo", "POST", request.url, request.query)
    assert signer.pre_encoded == kept  # signing adds nothing
    assert {"app_id", "hashed_device_id", "PURCHASE", "333903271", "ck", "at"} <= kept
    # Never the secrets, a device's values, or the per-request nonce and time.
    params = params_of(request)
    for value in ("cs", "ats", "198.51.100.7", params["hashed_device_id"]):
        assert value not in kept
    assert params["conversion_time"] not in kept
    assert not any(name.startswith("oauth_nonce=") for name in kept)


def test_a_signer_keeps_no_secret_and_a_bounded_table() -> None:
    from postback_hub.consumers.x.signing import MAX_PRE_ENCODED

    signer = OAuthSigner("ck", "cs", "at", "ats", repeated=["cs", "ats", "app"])
    assert "cs" not in signer.pre_encoded
    assert "ats" not in signer.pre_encoded
    assert "app" in signer.pre_encoded
    with pytest.raises(ValueError, match="at most"):
        OAuthSigner("ck", "cs", "at", "ats", repeated=[str(n) for n in range(MAX_PRE_ENCODED)])


def test_a_429_without_the_limit_header_still_blocks_until_the_reset() -> None:
    clock = Clock()
    gate = RateGate(clock)
    assert gate.observe(429, {"x-rate-limit-reset": "1045"}) == 45
    assert gate.delay() == 45
    assert gate.observe(200, {"x-rate-limit-remaining": "0", "x-rate-limit-reset": "1050"}) == 50
    assert gate.observe(429, {"x-rate-limit-reset": "inf"}) is None
    # A reset beyond any window X uses is not believed past an hour.
    assert gate.observe(429, {"x-rate-limit-reset": "1e300"}) == 3600


def test_level_and_number_items_take_ascii_digits_only() -> None:
    app = {"number_items_parameter": "items", "level_parameter": "lvl"}
    event = record("event", event="tok_buy", partner_parameters='{"items":"²","lvl":"٣"}')
    params = params_of(x_conversions(settings(app)).prepare(event))
    assert "number_items" not in params
    assert "level" not in params


async def _answers(
    answers: list[Any], app: dict[str, Any] | None = None
) -> tuple[list[Any], XConversions]:
    """What ``send`` makes of each answer of a local server standing in for X."""
    import aiohttp
    from aiohttp import web

    from tests.support import serve_locally

    async def answer(_request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = answers.pop(0)
        return response

    server = web.Application()
    server.router.add_post("/{tail:.*}", answer)
    runner, port = await serve_locally(server)
    destination = x_conversions(settings(app, base_url=f"http://127.0.0.1:{port}"))
    outcomes = []
    try:
        async with aiohttp.ClientSession() as session:
            while answers:
                outcomes.append(await destination.send(session, params_request(destination)))
    finally:
        await runner.cleanup()
    return outcomes, destination


async def test_only_500_and_503_are_retried_as_not_processed() -> None:
    from aiohttp import web

    from postback_hub.consumers.delivery import Retry

    statuses = [500, 503, 502, 504, 408]
    outcomes, _ = await _answers([web.Response(status=s) for s in statuses])
    assert all(isinstance(outcome, Retry) for outcome in outcomes)
    ambiguous = {
        status: outcome.ambiguous for status, outcome in zip(statuses, outcomes, strict=True)
    }
    assert ambiguous == {500: False, 503: False, 502: True, 504: True, 408: True}


async def test_an_answer_without_the_attribution_node_is_counted_as_unknown() -> None:
    from aiohttp import web

    from postback_hub.consumers.delivery import Delivered
    from postback_hub.consumers.metrics import ConsumerMetrics

    answers = [
        web.json_response({"data": {"twitter_attribution": None}}),
        web.json_response({"data": {"twitter_attribution": {"attribution_type": "PROMOTED"}}}),
        web.json_response({"data": {}}),
        web.Response(text="not json"),
    ]
    outcomes, destination = await _answers(answers)
    metrics = ConsumerMetrics("x")
    destination.attach(None, metrics)
    for outcome in outcomes:
        assert isinstance(outcome, Delivered)
        await destination.after_delivery(record(), params_request(destination), outcome)

    def count(label: str) -> float | None:
        return metrics.registry.get_sample_value(
            "postback_hub_attributions_total", {"destination": "x", "attributed": label}
        )

    assert (count("true"), count("false"), count("unknown")) == (1, 1, 2)


def params_request(destination: XConversions) -> HttpRequest:
    prepared = destination.prepare(record())
    assert isinstance(prepared, HttpRequest)
    return prepared


def test_a_synced_tags_file_x_would_refuse_stops_the_start(tmp_path: Any) -> None:
    import json

    tags = tmp_path / "tags.json"
    tags.write_text(
        json.dumps({"windows": {"PURCHASE": [7, 14], "INSTALL": [30, 1], "BOGUS": [1, 1]}})
    )
    with pytest.raises(ConfigError) as refused:
        x_conversions(settings({"event_tags_file": str(tags)}))
    problems = "\n".join(refused.value.problems)
    assert "PURCHASE: the click window (7) must be >= the view-through window (14)" in problems
    assert "'BOGUS' is not an X conversion type" in problems
    assert "INSTALL" not in problems

    tags.write_text(json.dumps({"windows": {"INSTALL": [30, 1]}}))
    adopted = x_conversions(settings({"event_tags_file": str(tags)}))
    assert adopted._windows["demo"]["INSTALL"] == (30, 1)


async def test_a_429_whose_reset_is_past_waits_for_retry_after() -> None:
    import time

    from aiohttp import web

    from postback_hub.consumers.delivery import Retry

    past = str(int(time.time()) - 100)
    answers = [
        web.Response(status=429, headers={"x-rate-limit-reset": past, "Retry-After": "60"}),
        web.Response(status=429, headers={"x-rate-limit-reset": past}),
    ]
    outcomes, _ = await _answers(answers)
    assert [outcome.retry_after_s for outcome in outcomes if isinstance(outcome, Retry)] == [60, 0]


def test_the_tags_file_reads_back_what_sync_writes(tmp_path: Any) -> None:
    import json

    from postback_hub.consumers.x.tags import read_windows, write_windows

    path = tmp_path / "sub" / "tags.json"
    assert read_windows(path) is None  # nothing synced yet
    write_windows(path, "18ce54d4x5t", {"PURCHASE": (30, 7), "INSTALL": (7, 0)})
    assert json.loads(path.read_text()) == {
        "account_id": "18ce54d4x5t",
        "windows": {"PURCHASE": [30, 7], "INSTALL": [7, 0]},
    }
    assert read_windows(path) == {"PURCHASE": (30, 7), "INSTALL": (7, 0)}
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not an event-tags file"):
        read_windows(path)


def test_synced_windows_override_the_configured_ones_only_for_their_types() -> None:
    from postback_hub.consumers.x.mapping import app_windows

    app = settings().destination("x", XDestination).apps["demo"]  # PURCHASE: 30 days, 30 hours
    assert app_windows(app) == {"PURCHASE": (30, 7)}
    assert app_windows(app, {"INSTALL": (1, 0)}) == {"PURCHASE": (30, 7), "INSTALL": (1, 0)}
    assert app_windows(app, {"PURCHASE": (7, 1)}) == {"PURCHASE": (7, 1)}


def test_window_rules_name_the_setting_that_breaks_them() -> None:
    from postback_hub.consumers.x.config import checked_windows

    with pytest.raises(ValueError, match=r"click_days 3 is not one of \(1, 7, 14, 30\)"):
        XWindows(click_days=3)
    with pytest.raises(ValueError, match=r"view-through window 2 is not one of"):
        checked_windows(7, 2)
    with pytest.raises(ValueError, match=r"click window True is not one of"):
        checked_windows(True, 1)
    assert checked_windows(30, 30) == (30, 30)


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        ([{"code": "UNAUTHORIZED_ACCESS", "message": "no"}], "http_400_UNAUTHORIZED_ACCESS"),
        ([{"code": 88, "message": "Rate limit exceeded"}], "http_400_88"),
        ([{"code": "A" * 40}], "http_400_" + "A" * 40),
        ([{"message": "no code"}], "http_400"),
        ([], "http_400"),
        # Text a partner chose: never part of a reason (log lines, metric labels).
        ([{"code": "INVALID_PARAMETER 198.51.100.7"}], "http_400_unrecognised_code"),
        ([{"code": "198.51.100.7"}], "http_400_unrecognised_code"),
        ([{"code": "A" * 41}], "http_400_unrecognised_code"),
        ([{"code": "OK\n"}], "http_400_unrecognised_code"),
        ([{"code": "ÜNICODE"}], "http_400_unrecognised_code"),
        ([{"code": True}], "http_400_unrecognised_code"),
        ([{"code": {"nested": "198.51.100.7"}}], "http_400_unrecognised_code"),
    ],
)
def test_only_codes_of_a_known_shape_become_part_of_a_reason(
    errors: list[dict[str, object]], expected: str
) -> None:
    import orjson

    from postback_hub.consumers.delivery import HttpAnswer, Permanent
    from postback_hub.consumers.x.client import classify_answer

    body = orjson.dumps({"errors": errors})
    outcome = classify_answer(HttpAnswer(400, {}, body), None)
    assert isinstance(outcome, Permanent)
    assert outcome.reason == expected
    assert outcome.body_excerpt == body.decode()  # the answer itself stays in the excerpt


def test_an_answer_that_is_not_xs_error_json_gives_the_status_alone() -> None:
    from postback_hub.consumers.delivery import HttpAnswer, Permanent, Retry
    from postback_hub.consumers.x.client import classify_answer

    for body in (b"<html>198.51.100.7</html>", b'"errors"', b'{"errors": "x"}'):
        assert classify_answer(HttpAnswer(404, {}, body), None) == Permanent(
            "http_404", 404, body.decode()
        )
    assert classify_answer(HttpAnswer(503, {}, b""), None) == Retry("http_503", 503, None, "")


def test_cool_downs_follow_the_credentials_after_a_401_and_the_app_after_a_403() -> None:
    from postback_hub.consumers.x.ratelimit import AppLimits

    clock = Clock()
    limits = AppLimits(
        tokens={"a": 1, "b": 1, "c": 2},
        credentials={"a": 10, "b": 10, "c": 20},
        cooldown_s=60,
        clock=clock,
    )
    assert limits.gate("a") is limits.gate("b")  # one access token, one budget
    assert limits.gate("a") is not limits.gate("c")
    limits.observe("a", 403)
    assert (limits.cooling_down("a"), limits.cooling_down("b")) == (True, False)
    limits.observe("c", 401)
    limits.observe("b", 500)
    assert (limits.cooling_down("b"), limits.cooling_down("c")) == (False, True)
    limits.observe("b", 401)
    assert limits.cooling_down("a")
    assert limits.cooling_down("b")
    clock.now += 60
    assert not any(limits.cooling_down(app) for app in "abc")


def test_the_destination_refuses_a_request_it_did_not_prepare() -> None:
    destination = x_conversions(settings())
    with pytest.raises(TypeError, match="not a request the X destination prepared"):
        destination.send_delay(HttpRequest("POST", "https://ads-api.x.test/12/conversion_event"))


def test_xs_requests_carry_their_app_and_query_and_the_generic_request_does_not() -> None:
    import dataclasses

    request = x_conversions(settings()).prepare(record())
    assert isinstance(request, XRequest)
    assert request.app == "demo"
    assert dict(request.query) == params_of(request)
    assert request.headers == {}  # signed when sent, with a fresh nonce per attempt
    generic = {f.name for f in dataclasses.fields(HttpRequest)}
    assert generic == {"method", "url", "headers", "body", "params"}
