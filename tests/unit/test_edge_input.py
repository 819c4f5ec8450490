"""Edge cases of request input an audit found: proxy header lines, duplicate JSON keys."""

from __future__ import annotations

import ipaddress

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from postback_hub.service.auth import client_address, forwarded_chain
from postback_hub.service.errors import BadRequest
from postback_hub.service.intake import RawCallback, intake
from postback_hub.service.settings import AppSettings
from postback_hub.service.wire import parse_json_object

PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
SECRET = "s3cret-value"
ADID = "0123456789abcdef0123456789abcdef"


def test_every_forwarded_for_line_is_read_as_one_list() -> None:
    # A client forges the first line; our proxy appends the real client on its own line.
    lines = ["203.0.113.5", "198.51.100.9"]
    assert forwarded_chain(lines) == "203.0.113.5,198.51.100.9"
    assert client_address("10.1.2.3", forwarded_chain(lines), PROXIES) == ipaddress.ip_address(
        "198.51.100.9"
    )
    assert forwarded_chain([]) is None


def test_duplicate_json_keys_are_repeated_pairs() -> None:
    body = b'{"environment":"sandbox","adid":"a","environment":"production"}'
    assert parse_json_object(body) == [
        ("environment", "sandbox"),
        ("adid", "a"),
        ("environment", "production"),
    ]


def test_json_without_duplicates_keeps_its_pairs() -> None:
    # Colons inside strings, escaped quotes and nested objects are not members of the body.
    body = (
        b'{"tracker_name":"a:b\\":c","partner_parameters":{"x":"1:2","y":{"z":3}},'
        b'"url" : "https://example.com:443/p"}'
    )
    assert parse_json_object(body) == [
        ("tracker_name", 'a:b":c'),
        ("partner_parameters", '{"x":"1:2","y":{"z":3}}'),
        ("url", "https://example.com:443/p"),
    ]


def _json_intake(body: bytes) -> str:
    app = AppSettings.model_validate({"secret": {"env": "UNUSED_IN_THIS_TEST"}})
    raw = RawCallback(
        raw_query=f"secret={SECRET}".encode(),
        content_type="application/json",
        body=body,
        authorization=None,
        client=None,
        received_at_millis=1_700_000_000_000,
    )
    return intake("demo", app, [SECRET], raw, 1024 * 1024).environment


def test_duplicate_json_environment_is_a_conflict_not_the_last_value() -> None:
    body = (
        b'{"activity_kind":"install","adid":"' + ADID.encode() + b'",'
        b'"environment":"sandbox","environment":"production"}'
    )
    with pytest.raises(BadRequest) as caught:
        _json_intake(body)
    assert caught.value.code == "conflicting_values"
    assert caught.value.field == "environment"


def test_the_same_json_value_twice_is_one_value() -> None:
    body = (
        b'{"activity_kind":"install","adid":"' + ADID.encode() + b'",'
        b'"environment":"sandbox","environment":"sandbox"}'
    )
    assert _json_intake(body) == "sandbox"


def test_deeply_nested_duplicates_are_a_400_not_a_crash() -> None:
    deep = b'{"a":' * 900 + b"1" + b"}" * 900
    body = b'{"partner_parameters":' + deep + b',"x":1,"x":2}'
    with pytest.raises(BadRequest) as caught:
        parse_json_object(body)
    assert caught.value.code == "invalid_json"


_TEXT = st.text(alphabet=st.sampled_from(':"\\ab/\u00e9'), max_size=6)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "a:b", '"c"']), _TEXT), max_size=6))
def test_written_members_come_back_in_order_duplicates_and_all(
    members: list[tuple[str, str]],
) -> None:
    # Written by hand so that keys may repeat; orjson escapes each key and value.
    body = b"{" + b",".join(orjson.dumps(k) + b":" + orjson.dumps(v) for k, v in members) + b"}"
    expected = [(key, value) for key, value in members if value != ""]
    assert [(k, v) for k, v in parse_json_object(body) if v != ""] == expected


def test_numbers_beyond_64_bits_read_alike_with_or_without_duplicates() -> None:
    big = b"123456789012345678901234567890"
    single = parse_json_object(b'{"x":' + big + b"}")
    doubled = parse_json_object(b'{"x":' + big + b',"x":' + big + b"}")
    assert doubled == single * 2
