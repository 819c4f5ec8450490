from __future__ import annotations

import pytest

from service.errors import BadRequest, UnsupportedMediaType
from service.wire import parse_body, parse_json_object, parse_urlencoded


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
