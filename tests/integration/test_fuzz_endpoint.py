"""Fuzzing the HTTP endpoint of a running receiver on the real broker: random query strings,
bodies, encodings and sizes. Never a 5xx; exactly one record on Kafka per 200 and none for
a rejected request; the receiver keeps answering.

POSTBACK_HUB_FUZZ_EXAMPLES sets the number of cases (default 150; the long run 10,000).
"""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.integration.conftest import Receiver
from tests.support import SECRET, topic_size

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("POSTBACK_HUB_FUZZ_EXAMPLES", "150"))

printable_query = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"),
    max_size=200,
)
fragments = st.sampled_from(
    [
        "activity_kind=install",
        "activity_kind=event",
        "event=t",
        "adid=abc",
        "created_at=1700000000",
        "created_at=x",
        "revenue=12",
        "city=%C3%A9",
        "city=%FF",
        "x=%",
        "environment=sandbox",
        "environment=prod",
        "idfa=00000000-0000-0000-0000-000000000000",
        "partner_parameters=%7B%7D",
    ]
)
valid_with_noise = st.tuples(
    st.just("GET"),
    st.lists(
        st.sampled_from(
            [
                "city=Berlin",
                "country=de",
                "my_key=1",
                "tracker_name=a%3A%3Ab",
                "partner_parameters=%7B%22a%22%3A%221%22%7D",
                "random=7",
            ]
        ),
        max_size=5,
    ).map(lambda extra: "&".join(["activity_kind=install", "adid=0123456789abcdef", *extra])),
    st.just(""),
    st.just(b""),
)
requests = st.one_of(
    valid_with_noise,
    st.tuples(st.just("GET"), printable_query, st.just(""), st.just(b"")),
    st.tuples(
        st.just("POST"),
        printable_query,
        st.sampled_from(
            ["application/json", "application/x-www-form-urlencoded", "text/plain", ""]
        ),
        st.binary(max_size=300),
    ),
    st.tuples(
        st.just("GET"),
        st.lists(
            fragments,
            max_size=8,
        ).map("&".join),
        st.just(""),
        st.just(b""),
    ),
)


async def test_random_requests_never_5xx_and_produce_only_on_200(receiver: Receiver) -> None:
    answers: list[int] = []

    async with aiohttp.ClientSession() as session:

        async def send(method: str, query: str, content_type: str, body: bytes) -> None:
            url = URL(f"{receiver.callback_url()}?secret={SECRET}&{query}", encoded=True)
            headers = {"Content-Type": content_type} if content_type else {}
            async with session.request(method, url, data=body or None, headers=headers) as response:
                payload = await response.json(content_type=None)
                assert response.status < 500, (method, query, body, payload)
                if response.status >= 400:
                    assert payload["error"]["code"]
                answers.append(response.status)

        loop = asyncio.get_running_loop()

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        @given(requests)
        def run(case: tuple[str, str, str, bytes]) -> None:
            # hypothesis drives synchronously; each case runs on the test's event loop.
            asyncio.run_coroutine_threadsafe(send(*case), loop).result(timeout=30)

        await asyncio.to_thread(run)
        async with session.get(f"{receiver.url}/healthz") as response:
            assert response.status == 200

    accepted = answers.count(200)
    assert len(answers) >= EXAMPLES
    assert accepted > 0
    assert await topic_size(receiver.bootstrap_servers, receiver.topic) == accepted
    print(f"\nendpoint fuzz: {len(answers)} requests, {accepted} accepted, none 5xx")
