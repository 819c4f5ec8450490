"""Through the real receiver and broker, each device lands where aiokafka's default puts it."""

from __future__ import annotations

import aiohttp
import pytest
from aiokafka.partitioner import DefaultPartitioner
from yarl import URL

from tests.integration.conftest import Receiver
from tests.support import SECRET, partitions_of

pytestmark = pytest.mark.integration


async def test_every_device_lands_on_aiokafkas_partition(receiver: Receiver) -> None:
    partitions = sorted(await partitions_of(receiver.bootstrap_servers, receiver.topic))
    assert len(partitions) > 1  # one partition would prove nothing
    default = DefaultPartitioner()
    seen = set()
    async with aiohttp.ClientSession() as session:
        for n in range(1, 61):
            adid = f"{n * 7919:032x}"
            query = f"secret={SECRET}&activity_kind=install&adid={adid}&created_at=1700000000"
            url = URL(f"{receiver.callback_url()}?{query}", encoded=True)
            async with session.get(url) as response:
                assert response.status == 200, await response.text()
                answer = await response.json()
            expected = default(f"demo:{adid}".encode(), partitions, partitions)
            assert answer["partition"] == expected, adid
            seen.add(expected)
    assert len(seen) > 1
