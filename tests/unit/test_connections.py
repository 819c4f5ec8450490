from __future__ import annotations

import orjson

from postback_hub.service.connections import connection_cap, refusal


def test_the_connection_cap_stays_under_the_open_file_limit() -> None:
    assert connection_cap(1000, 1_048_576) == 1000
    # 1,200 open files (the audit's worker): 64 are kept for Kafka, logs and the listener.
    assert connection_cap(5000, 1200) == 1200 - 64
    assert connection_cap(1000, 10) == 1


def test_a_refusal_is_a_whole_json_answer_that_closes() -> None:
    answer = refusal(503, "Service Unavailable", "x_code", "why", "Retry-After: 7\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 503 Service Unavailable"
    assert b"Connection: close" in lines
    assert b"Retry-After: 7" in lines
    assert f"Content-Length: {len(body)}".encode() in lines
    assert orjson.loads(body) == {"error": {"code": "x_code", "field": None, "message": "why"}}
