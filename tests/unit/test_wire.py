from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postback_hub.service.errors import BadRequest, UnsupportedMediaType
from postback_hub.service.wire import parse_body, parse_each, parse_json_object, parse_urlencoded

# More cases in the long fuzz run (see the README); the default run stays quick.
FUZZ_EXAMPLES = int(os.environ.get("POSTBACK_HUB_FUZZ_EXAMPLES", "1000"))


def test_decodes_percent_escapes_plus_and_utf8_in_order() -> None:
    raw = b"tracker_name=Net%3A%3ACamp+1&city=M%C3%BCnchen&empty=&flag&a=1&&a=2"
    assert parse_urlencoded(raw) == [
        ("tracker_name", "Net::Camp 1"),
        ("city", "München"),
        ("empty", ""),
        ("flag", ""),
        ("a", "1"),
        ("a", "2"),
    ]


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (b"city=%zz", "invalid_percent_encoding", "city"),
        (b"city=abc%", "invalid_percent_encoding", "city"),
        (b"city=%C3", "invalid_utf8", "city"),
        (b"city=%FF%FE", "invalid_utf8", "city"),
        (b"ci%ty=1", "invalid_percent_encoding", None),
    ],
)
def test_rejects_broken_encoding_naming_the_key(raw: bytes, code: str, field: str | None) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_urlencoded(raw)
    assert caught.value.code == code
    assert caught.value.field == field


def test_json_object_scalars_become_wire_strings() -> None:
    raw = b'{"activity_kind":"event","revenue_float":1.5,"is_organic":true,"n":null,'
    raw += b'"partner_parameters":{"a":"b"},"tag":["x","y"]}'
    assert parse_json_object(raw) == [
        ("activity_kind", "event"),
        ("revenue_float", "1.5"),
        ("is_organic", "1"),
        ("partner_parameters", '{"a":"b"}'),
        ("tag", "x"),
        ("tag", "y"),
    ]


@pytest.mark.parametrize("raw", [b"[1,2]", b"{bad", b'"text"', b"\xff\xfe"])
def test_json_body_must_be_an_object(raw: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_json_object(raw)
    assert caught.value.code == "invalid_json"


def test_nested_arrays_in_json_are_rejected() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_json_object(b'{"a":[[1]]}')
    assert caught.value.field == "a"


def test_body_by_media_type() -> None:
    assert parse_body("application/x-www-form-urlencoded; charset=utf-8", b"a=1") == [("a", "1")]
    assert parse_body("application/json", b'{"a":"1"}') == [("a", "1")]
    assert parse_body("", b"  ") == []
    with pytest.raises(UnsupportedMediaType) as caught:
        parse_body("text/plain", b"a=1")
    assert caught.value.status == 415
    assert caught.value.field == "Content-Type"


def _outcome(parse: Callable[[bytes], list[tuple[str, str]]], raw: bytes) -> object:
    try:
        return parse(raw)
    except BadRequest as exc:
        return (exc.code, exc.field)


# Bytes that make every branch likely: separators, escapes (good, broken, NUL, UTF-8
# halves), plus, raw high bytes, and plain text.
_wire_bytes = st.lists(
    st.sampled_from(
        [
            b"&",
            b"=",
            b"+",
            b"%",
            b"%2",
            b"%41",
            b"%3D",
            b"%26",
            b"%2B",
            b"%00",
            b"%C3",
            b"%BC",
            b"%c3%bc",
            b"%FF",
            b"\x00",
            b"\xc3\xbc",
            b"\xff",
            b"a",
            b"key",
            b"v 1",
            b"~",
        ]
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.one_of(_wire_bytes, st.binary(max_size=200)))
def test_one_pass_decoding_answers_as_component_by_component(raw: bytes) -> None:
    assert _outcome(parse_urlencoded, raw) == _outcome(parse_each, raw)
