"""Create topics that should exist, wait until they can be used, and describe them."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code


async def ensure_topic(
    client_options: dict[str, Any],
    name: str,
    partitions: int,
    replication_factor: int = 1,
    *,
    config: dict[str, str] | None = None,
    leader_timeout: float = 30.0,
) -> None:
    """Create ``name`` unless it exists, then wait until every partition has a leader.

    An existing topic is not an error; its partition count is left as it is. When
    this returns, a producer can send to any partition without a retry.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + leader_timeout
    admin = AIOKafkaAdminClient(**client_options)
    await admin.start()
    try:
        expected: int | None = partitions
        while True:
            response = await admin.create_topics(
                [NewTopic(name, partitions, replication_factor, topic_configs=dict(config or {}))]
            )
            error: KafkaError | None = None
            # aiokafka reports per-topic failures as codes rather than raising.
            for result in response.to_object()["topic_errors"]:
                code = result["error_code"]
                if code == 0:
                    continue
                error_type = for_code(code)
                if error_type is TopicAlreadyExistsError:
                    expected = None
                    continue
                error = error_type(f"{name}: {result.get('error_message') or ''}")
            if error is None:
                break
            if not error.retriable or loop.time() >= deadline:
                raise error
            await asyncio.sleep(0.1)

        # CreateTopics returns once the controller has recorded the topic; the
        # broker's metadata cache and partition leaders follow a moment later.
        while True:
            topics = await admin.describe_topics([name])
            if _all_partitions_led(topics, name, expected):
                return
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"topic {name!r} was created but its partitions have no leader "
                    f"after {leader_timeout:g} s"
                )
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


def _all_partitions_led(topics: list[Any], name: str, expected: int | None) -> bool:
    for topic in topics:
        if topic["topic"] != name or topic["error_code"] != 0:
            continue
        parts = topic["partitions"]
        if not parts or (expected is not None and len(parts) != expected):
            return False
        return all(p["error_code"] == 0 and p["leader"] >= 0 for p in parts)
    return False


async def partitions_of(client_options: dict[str, Any], name: str) -> list[int]:
    """The partition numbers of a topic (empty when it does not exist)."""
    admin = AIOKafkaAdminClient(**client_options)
    await admin.start()
    try:
        described = await admin.describe_topics([name])
        if not described or described[0].get("error_code", 0) != 0:
            return []
        return sorted(p["partition"] for p in described[0].get("partitions", []))
    finally:
        await admin.close()
