"""The receiver against its own OpenAPI description, checked by schemathesis.

A running receiver process (real broker) gets schema-generated requests; every answer
must be documented (status, content type, body schema) and never a server error other
than the documented 503. Half the cases carry the right secret, so accepted callbacks
are exercised too.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from postback_hub.service.localkafka import LocalKafka, free_port
from tests.support import (
    SECRET,
    receiver_process,
    settings_document,
    wait_http_ok,
    write_config,
)

pytestmark = pytest.mark.integration

SPEC = Path(__file__).resolve().parents[2] / "service" / "openapi.json"
schema = schemathesis.openapi.from_path(SPEC)


@pytest.fixture(scope="module")
def receiver_url(
    kafka_broker: LocalKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("openapi")
    port = free_port()
    document = settings_document(
        kafka_broker.bootstrap_servers, "openapi-contract", port, kafka={"create_topic": True}
    )
    config = write_config(tmp / "config.toml", document)
    with receiver_process(config, tmp / "receiver.log") as process:
        asyncio.run(wait_http_ok(f"http://127.0.0.1:{port}/readyz", timeout=60))
        yield f"http://127.0.0.1:{port}"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_the_served_description_is_the_one_in_the_repository(receiver_url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{receiver_url}/openapi.json") as response:  # noqa: S310
        assert json.loads(response.read()) == json.loads(SPEC.read_text())


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_receiver_conforms_to_its_description(
    case: schemathesis.Case,  # type: ignore[type-arg]
    receiver_url: str,
) -> None:
    # About half the cases (chosen by their content) aim at the real app with its secret.
    if case.path_parameters is not None and len(repr(case.query)) % 2 == 0:
        case.path_parameters["app"] = "demo"
        case.query = {**(case.query or {}), "secret": SECRET}
    response = case.call(base_url=receiver_url)
    # Every documented-response check applies. Not "schema-valid data is accepted": validity
    # has rules OpenAPI 3.0 cannot state (an event needs its token, a zero IDFA is no id).
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
