"""``postback-hub tail``: print the newest callback records, personal data masked."""

from __future__ import annotations

import sys

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from postback_hub.service.privacy import masked_record
from postback_hub.service.producer import kafka_client_options
from postback_hub.service.settings import Settings
from postback_hub.service.topics import partitions_of


async def tail(settings: Settings, count: int, follow: bool, unmasked: bool) -> int:
    options = kafka_client_options(settings)
    topic = settings.kafka.topic
    partitions = [TopicPartition(topic, p) for p in await partitions_of(options, topic)]
    if not partitions:
        print(f"topic {topic} does not exist yet", file=sys.stderr)
        return 1
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for partition, end in ends.items():
            consumer.seek(partition, max(0, end - count))
        backlog: list[ConsumerRecord[bytes, bytes]] = []
        while [p for p in partitions if await consumer.position(p) < ends[p]]:
            batch = await consumer.getmany(timeout_ms=1000)
            backlog.extend(r for items in batch.values() for r in items)
        backlog.sort(key=lambda r: r.timestamp)
        pending = backlog[-count:] if count else []
        while True:
            for message in pending:
                record = orjson.loads(message.value)
                shown = record if unmasked else masked_record(record)
                sys.stdout.write(orjson.dumps(shown).decode() + "\n")
            sys.stdout.flush()
            if not follow:
                return 0
            batch = await consumer.getmany(timeout_ms=1000)
            pending = sorted(
                (r for items in batch.values() for r in items), key=lambda r: r.timestamp
            )
    finally:
        await consumer.stop()
