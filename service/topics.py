"""Create topics that should exist, and wait until they can be used."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

_TOPIC_ALREADY_EXISTS = 36


async def ensure_topic(
    client_options: dict[str, Any],
    name: str,
    partitions: int,
    replication_factor: int = 1,
    config: dict[str, str] | None = None,
    wait_s: float = 30.0,
) -> None:
    """Create ``name`` unless it exists; return once every partition has a leader."""
    admin = AIOKafkaAdminClient(**client_options)
    await admin.start()
    try:
        try:
            response = await admin.create_topics(
                [NewTopic(name, partitions, replication_factor, topic_configs=config or {})]
            )
        except TopicAlreadyExistsError:
            response = None
        for error in getattr(response, "topic_errors", ()):
            code = error[1]
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {name}: error code {code}")
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            with contextlib.suppress(Exception):
                described = await admin.describe_topics([name])
                parts = described[0].get("partitions", []) if described else []
                if parts and all(p.get("leader", -1) >= 0 for p in parts):
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"topic {name} has no leader for every partition yet")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
