"""The receiver's access log: off below INFO (no per-request work), and never the query."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from postback_hub.service.logs import AccessLogger


def test_access_log_is_enabled_only_when_info_is_written() -> None:
    logger = logging.getLogger("postback_hub.test_access")
    access = AccessLogger(logger, "")
    logger.setLevel(logging.WARNING)
    assert access.enabled is False
    logger.setLevel(logging.INFO)
    assert access.enabled is True


def test_access_line_has_route_and_status_but_not_the_query(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("postback_hub.test_access_line")
    request = make_mocked_request("GET", "/v1/adjust/demo?secret=s3cr3t&idfa=AAAA-BBBB")
    with caplog.at_level(logging.INFO, logger=logger.name):
        AccessLogger(logger, "").log(request, web.Response(status=204), 0.0125)
    (record,) = caplog.records
    assert record.__dict__["status"] == 204
    assert record.__dict__["duration_ms"] == 12.5
    assert "s3cr3t" not in str(record.__dict__)
    assert "AAAA-BBBB" not in str(record.__dict__)
