"""Rejection notes: what a 4xx leaves for reconciliation, and that it holds no personal data."""

from __future__ import annotations

import pytest

from postback_hub.service.rejections import (
    RejectionNote,
    facts_from_query,
    kind_from_query,
    note_of,
)


def test_a_note_round_trips_and_is_bucketed_by_15_minutes() -> None:
    start = 1_772_400_600  # 2026-03-01T21:30:00Z, a quarter-hour
    note = note_of("demo", "install", "invalid_secret", 401, start + 899.9)
    assert note.bucket == start
    assert note_of("demo", "install", "invalid_secret", 401, start + 900).bucket == start + 900
    assert RejectionNote.from_json(note.to_json()) == note


def test_the_kind_is_bounded_and_nothing_else_is_read() -> None:
    query = "secret=s3cr3t&adid=0123456789abcdef&activity_kind=INSTALL&ip_address=1.2.3.4"
    assert kind_from_query(query) == "install"
    assert kind_from_query("activity_kind=my-own-kind-with-an-id-0123456789") == "other"
    assert kind_from_query("adid=x") == ""
    note = note_of("demo", kind_from_query(query), "missing_device_id", 400, 0)
    text = note.to_json().decode()
    for private in ("s3cr3t", "0123456789abcdef", "1.2.3.4"):
        assert private not in text


@pytest.mark.parametrize("data", [b"{}", b'{"schema": 1, "app": "x"}', b"[1]"])
def test_a_message_that_is_not_a_note_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"not a rejection note|lacks a field"):
        RejectionNote.from_json(data)


def test_the_activity_time_decides_the_bucket_when_readable() -> None:
    assert facts_from_query("activity_kind=install&created_at=1772400600") == (
        "install",
        1772400600.0,
    )
    # created_at_milli wins; nonsense and absurd times are not believed.
    assert facts_from_query("created_at=1772400600&created_at_milli=1772400000123")[1] == (
        1772400000.123
    )
    assert facts_from_query("created_at=yesterday")[1] is None
    assert facts_from_query("created_at=99")[1] is None
