"""Decoding of callback requests into ordered (key, value) pairs, strictly.

Adjust URL-encodes every placeholder value. We decode the raw bytes ourselves
rather than through a lenient framework helper, so that a broken percent escape
or invalid UTF-8 is a clear 400 naming the key instead of a silently mangled
value that would be forwarded to a partner.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote_to_bytes

import orjson

from postback_hub.service.errors import BadRequest, UnsupportedMediaType

Pairs = list[tuple[str, str]]

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _decode_component(raw: bytes, what: str, key: str | None) -> str:
    if b"%" not in raw and b"+" not in raw:
        # Nothing escaped (most keys, many values): only the UTF-8 check remains.
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(
                "invalid_utf8", f"{what} is not valid UTF-8 once decoded", key
            ) from None
    if _BAD_ESCAPE.search(raw):
        raise BadRequest(
            "invalid_percent_encoding",
            f"{what} contains a '%' that is not followed by two hex digits",
            key,
        )
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("invalid_utf8", f"{what} is not valid UTF-8 once decoded", key) from None


def parse_urlencoded(raw: bytes) -> Pairs:
    """Parse ``a=1&b=2`` (query string or form body) into pairs, in order.

    ``+`` is a space, as in HTML forms. A key without ``=`` has an empty value.
    Empty segments (``a=1&&b=2``) are ignored.

    Every name and value is decoded in one pass over the whole string, joined by
    NUL bytes (a UTF-8 sequence cannot run across one). Whenever that could go
    wrong or something must be rejected (a NUL in the input, a broken escape,
    invalid UTF-8), :func:`parse_each` does the work, one component at a time, so
    the error names the key. A property test holds both to the same answers.
    """
    if b"\x00" in raw or b"%00" in raw or _BAD_ESCAPE.search(raw):
        return parse_each(raw)
    components: list[bytes] = []
    for segment in raw.split(b"&"):
        if segment:
            raw_key, _, raw_value = segment.partition(b"=")
            components.append(raw_key)
            components.append(raw_value)
    joined = b"\x00".join(components)
    if b"+" in joined:
        joined = joined.replace(b"+", b" ")
    if b"%" in joined:
        joined = unquote_to_bytes(joined)
    try:
        parts = joined.decode("utf-8").split("\x00")
    except UnicodeDecodeError:
        return parse_each(raw)  # to name the key whose value is not UTF-8
    return list(zip(parts[::2], parts[1::2], strict=True)) if components else []


def parse_each(raw: bytes) -> Pairs:
    """:func:`parse_urlencoded` one component at a time (the reference, and the path
    that names the key of a broken escape or of invalid UTF-8)."""
    pairs: Pairs = []
    for segment in raw.split(b"&"):
        if not segment:
            continue
        raw_key, _, raw_value = segment.partition(b"=")
        key = _decode_component(raw_key, "a parameter name", None)
        value = _decode_component(raw_value, f"the value of {key!r}", key)
        pairs.append((key, value))
    return pairs


def _json_scalar(key: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return orjson.dumps(value).decode()
    if isinstance(value, dict):
        # partner_parameters may arrive as a nested object rather than a JSON string.
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # deeper than orjson writes (255 levels)
            raise BadRequest("invalid_json", "the object is nested too deeply", key) from None
    raise BadRequest("invalid_value", "values must be strings, numbers, booleans or objects", key)


class _Members(list[tuple[str, object]]):
    """An object's members in order, duplicates kept (the stdlib parser's pairs hook)."""


def _lost_members(raw: bytes, document: dict[str, object]) -> bool:
    """Whether parsing dropped a duplicate key, at any depth, without parsing again.

    Every member has one structural ``:``; any other ``:`` sits inside a string.
    orjson writes the parsed document back with one ``:`` per member and the
    strings' own colons unescaped, so the two counts are equal exactly when no
    member was dropped. A ``\\u`` escape (it may spell a colon) takes the careful path.
    """
    if b"\\u" in raw:
        return True
    try:
        written = orjson.dumps(document)
    except orjson.JSONEncodeError:  # deeper than orjson writes: look carefully
        return True
    return raw.count(b":") != written.count(b":")


def _plain(node: object) -> object:
    """Nested objects of the pairs parse as dicts (the last duplicate wins, as in orjson)."""
    if isinstance(node, _Members):
        return {key: _plain(value) for key, value in node}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    return node


def _as_orjson_int(text: str) -> int | float:
    """An integer as orjson reads it: beyond 64 bits, a float (the fast path's answer)."""
    value = int(text)
    return value if -(2**63) <= value < 2**64 else float(text)


def _top_level_members(raw: bytes, document: dict[str, object]) -> list[tuple[str, object]]:
    """The body's top-level members with any duplicate key kept, in order.

    orjson keeps the last of duplicate keys silently; only when
    :func:`_lost_members` says it dropped one is the body parsed again with the
    stdlib parser, which keeps them all.
    """
    if not _lost_members(raw, document):
        return list(document.items())
    try:
        members = json.loads(raw, object_pairs_hook=_Members, parse_int=_as_orjson_int)
        return [(key, _plain(value)) for key, value in members]
    except RecursionError:
        raise BadRequest("invalid_json", "the body is nested too deeply", None) from None


def parse_json_object(raw: bytes) -> Pairs:
    """Parse a JSON object body; arrays of scalars become repeated keys, and so do
    duplicate keys, so both follow the same repeated-key rules as a query string."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("invalid_json", "the body is not valid JSON", None) from None
    if not isinstance(document, dict):
        raise BadRequest("invalid_json", "the body must be a JSON object", None)
    pairs: Pairs = []
    for key, value in _top_level_members(raw, document):
        values = value if isinstance(value, list) else [value]
        for item in values:
            text = _json_scalar(key, item)
            if text is not None:
                pairs.append((key, text))
    return pairs


def parse_body(content_type: str, raw: bytes) -> Pairs:
    """Parse a POST body by its media type; an empty body carries nothing."""
    if not raw.strip():
        return []
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        return parse_urlencoded(raw)
    if media_type == "application/json" or media_type.endswith("+json"):
        return parse_json_object(raw)
    raise UnsupportedMediaType(
        "unsupported_media_type",
        "send application/x-www-form-urlencoded or application/json",
        "Content-Type",
    )
