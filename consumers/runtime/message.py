"""What the runtime's steps pass around: a Kafka message of the callbacks topic (or of a
retry tier), and the clock they agree on."""

from __future__ import annotations

import time
from typing import TypeAlias

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

Message: TypeAlias = ConsumerRecord[bytes, bytes]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def origin(tp: TopicPartition, message: Message) -> str:
    """Where a parked or dead copy came from (a header of the copy)."""
    return f"{tp.topic}:{tp.partition}:{message.offset}"
