"""The delivery runtime: one consumer group per destination that gets one request per
record. It builds the steps once (policies chosen from the configuration), opens
every resource in one :class:`~contextlib.AsyncExitStack`, and runs the fetch loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from postback_hub.consumers.config import HttpDestination
from postback_hub.consumers.dedup import Dedup, DedupStore, NoDedup
from postback_hub.consumers.delivery import Destination, HasTopics, PublishesAfterDelivery
from postback_hub.consumers.metrics import ConsumerMetrics
from postback_hub.consumers.ordering import KeyedScheduler
from postback_hub.consumers.retry import RetryState
from postback_hub.consumers.runtime.commit import Committer
from postback_hub.consumers.runtime.marks import MarkRepair, finish_marks
from postback_hub.consumers.runtime.message import Message
from postback_hub.consumers.runtime.pipeline import Pipeline
from postback_hub.consumers.runtime.policies import Ambiguity, AtLeastOnce, NeverTwice
from postback_hub.consumers.runtime.send import DryRunSend, HttpSend, Sender
from postback_hub.consumers.runtime.settle import (
    DeadLetterLimit,
    DeadLetterLimitReached,
    FatalWriteError,
    KafkaWriter,
    Settler,
)
from postback_hub.consumers.runtime.source import KafkaSource
from postback_hub.consumers.runtime.steps import AgeLimit, Deduplicate, Route
from postback_hub.consumers.topics import DestinationTopics
from postback_hub.service.producer import kafka_client_options
from postback_hub.service.settings import Settings
from postback_hub.service.topics import ensure_topic, partitions_of

log = logging.getLogger("postback_hub.consumer")


_DAY_MS = 86_400_000
# How long a shutdown waits for de-dup records that are being written again.
REWRITE_GRACE_S = 3.0
_CONNECT_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class DeliveryRuntime:
    """Consumes for one destination until stopped: ``start`` / ``run`` / ``stop`` / ``close``.

    Policies are chosen here, once: de-duplication (a log topic, or none), ambiguity
    (at least once, or never twice), and the sender (HTTP, or dry run).
    """

    def __init__(
        self,
        settings: Settings,
        destination: Destination,
        config: HttpDestination,
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        self.name = destination.name
        self.settings = settings
        self.destination = destination
        self.config = config
        self.metrics = metrics or ConsumerMetrics(destination.name)
        self.topics = DestinationTopics(
            settings.kafka.topic, destination.name, tuple(config.retry.park_delays_s)
        )
        self._options = kafka_client_options(settings)
        self._max_pending = config.concurrency * 32
        self._stopping = asyncio.Event()
        self._fatal: Exception | None = None
        self._last_poll = 0.0
        self._stack = contextlib.AsyncExitStack()
        self._started = False
        # Built by start(), once connected.
        self._consumer: AIOKafkaConsumer | None = None
        self._source: KafkaSource | None = None
        self._committer: Committer | None = None
        self._scheduler: KeyedScheduler | None = None
        self._pipeline: Pipeline | None = None
        self._settler: Settler | None = None
        self._dedup: Dedup = NoDedup()
        self._sender: Sender | None = None
        self._repair: MarkRepair | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the destination's topics, connect and join the group. While Kafka is
        unreachable it keeps trying with backoff (``ready`` stays false) until stopped."""
        for attempt in itertools.count(1):
            try:
                await self._connect()
                return
            except (KafkaError, OSError) as exc:
                await self._stack.aclose()
                self._stack = contextlib.AsyncExitStack()
                delay = _CONNECT_BACKOFF_S[min(attempt, len(_CONNECT_BACKOFF_S)) - 1]
                log.warning(
                    "cannot reach Kafka; trying again",
                    extra={
                        "destination": self.name,
                        "error": type(exc).__name__,
                        "attempt": attempt,
                        "retry_in_s": delay,
                    },
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                if self._stopping.is_set():
                    return

    async def _connect(self) -> None:
        config, topics, stack = self.config, self.topics, self._stack
        partitions = await self._source_partitions()
        retention = {"retention.ms": str(7 * _DAY_MS)}
        for topic in topics.retry_tiers:
            await ensure_topic(self._options, topic, partitions, config=retention)
        await ensure_topic(
            self._options,
            topics.dead_letter,
            partitions,
            config={"retention.ms": str(int(config.retry.dead_letter_retention_s * 1000))},
        )
        if config.dedup_window_s > 0:
            dedup_retention = max(2 * int(config.dedup_window_s * 1000), 3_600_000)
            await ensure_topic(
                self._options,
                topics.dedup,
                partitions,
                config={"cleanup.policy": "delete", "retention.ms": str(dedup_retention)},
            )
        if isinstance(self.destination, HasTopics):
            for topic, topic_config in self.destination.extra_topics().items():
                await ensure_topic(self._options, topic, partitions, config=topic_config)

        producer = AIOKafkaProducer(
            **self._options, acks="all", enable_idempotence=True, linger_ms=2
        )
        await producer.start()
        stack.push_async_callback(producer.stop)
        if isinstance(self.destination, PublishesAfterDelivery):
            self.destination.attach(producer, self.metrics)
        dedup: Dedup = (
            DedupStore(
                self._options,
                topics.dedup,
                config.dedup_window_s,
                producer,
                max_unacknowledged=config.max_unacknowledged_marks,
            )
            if config.dedup_window_s > 0
            else NoDedup()
        )
        self._dedup = dedup
        ambiguity: Ambiguity = (
            NeverTwice(dedup) if config.on_ambiguous == "dead_letter" else AtLeastOnce()
        )
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.concurrency * 2, ttl_dns_cache=300)
        )
        stack.push_async_callback(session.close)
        consumer = AIOKafkaConsumer(
            **self._options,
            group_id=topics.group_id,
            enable_auto_commit=False,
            auto_offset_reset=config.start_from,
            # Partition p of every topic to the same member: de-dup state is per partition.
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_poll_records=self._max_pending,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            rebalance_timeout_ms=60_000,
            # Fetching pauses while the pending queue is full; that lasts at most about one
            # in-process retry budget, which must not look like a stuck member.
            max_poll_interval_ms=int(
                (config.retry.in_process_s + config.request_timeout_s + 300) * 1000
            ),
        )
        stack.push_async_callback(consumer.stop)  # closed first: the group is left at once
        committer = Committer(consumer)
        scheduler = KeyedScheduler(config.concurrency)
        settler = Settler(
            self.name,
            topics,
            config.retry,
            KafkaWriter(producer),
            DeadLetterLimit(config.dead_letters),
            self.metrics,
        )
        sender: Sender = (
            DryRunSend(self.destination)
            if config.dry_run
            else HttpSend(self.destination, config, session, ambiguity, dedup, self.metrics)
        )
        self._pipeline = Pipeline(
            self.destination,
            Route(self.destination),
            Deduplicate(dedup, ambiguity),
            AgeLimit(config.retry.max_age_s),
            sender,
            settler,
            dedup,
            ambiguity,
            self.metrics,
        )
        source = KafkaSource(
            consumer,
            topics.source,
            committer,
            dedup,
            scheduler,
            self._handle,
            # Bounded below rebalance_timeout_ms (60 s), or the group would evict us.
            min(config.request_timeout_s + 5.0, 50.0),
            self._fail,
        )
        self._repair = MarkRepair(dedup, committer, source.owns)
        self._consumer, self._source, self._committer = consumer, source, committer
        self._scheduler, self._settler, self._sender = scheduler, settler, sender
        consumer.subscribe(list(topics.consumed), listener=source.listener())
        await consumer.start()
        self._started = True
        log.info("consumer started", extra={"destination": self.name, "group": topics.group_id})

    async def _source_partitions(self) -> int:
        """The callbacks topic's partition count, which every topic of ours copies."""
        kafka = self.settings.kafka
        while True:
            partitions = await partitions_of(self._options, kafka.topic)
            if partitions:
                return len(partitions)
            if kafka.create_topic:
                await ensure_topic(
                    self._options,
                    kafka.topic,
                    kafka.topic_partitions,
                    kafka.topic_replication_factor,
                )
                continue
            log.warning("waiting for the callbacks topic to exist", extra={"topic": kafka.topic})
            await asyncio.sleep(2.0)

    def stop(self) -> None:
        self._stopping.set()

    def _fail(self, exc: Exception) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._stopping.set()

    @property
    def ready(self) -> bool:
        return (
            self._started
            and not self._stopping.is_set()
            and time.monotonic() - self._last_poll < 15.0
        )

    def render_metrics(self) -> bytes:
        return self.metrics.render()

    async def run(self) -> None:
        """Fetch and dispatch until :meth:`stop`; raises what stopped it, if fatal."""
        if not self._started:
            return  # stopped while still connecting
        source, committer = self._source, self._committer
        assert source is not None
        assert committer is not None
        background = [
            asyncio.create_task(committer.run()),
            asyncio.create_task(self._housekeeping()),
        ]
        try:
            while not self._stopping.is_set():
                self._last_poll = time.monotonic()
                room = self._max_pending - committer.pending()
                # Fetch in worthwhile batches: topping up one message at a time costs a
                # full pass over every partition's buffer per message.
                if room < self._max_pending // 4:
                    await asyncio.sleep(0.005)
                    continue
                await source.poll(room)
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._fatal is not None:
            raise self._fatal

    async def close(self, grace_s: float = 10.0) -> None:
        """Let in-flight deliveries finish (bounded), commit what is settled, disconnect."""
        self._stopping.set()
        if self._started:
            await self._drain(grace_s)
        await self._stack.aclose()
        self._started = False
        log.info("consumer stopped", extra={"destination": self.name})

    async def _drain(self, grace_s: float) -> None:
        scheduler, committer, source = self._scheduler, self._committer, self._source
        assert scheduler is not None
        assert committer is not None
        assert source is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(scheduler.join(), timeout=grace_s)
        source.closing = True
        await scheduler.cancel()
        await finish_marks(self._dedup, committer, REWRITE_GRACE_S)
        source.close()

    # ------------------------------------------------------------------ one message

    async def _handle(self, tp: TopicPartition, message: Message) -> None:
        """Run one message to a settled outcome. Revocation may cancel the running task:
        the message then stays unsettled and its partition's next owner gets it."""
        source, committer, pipeline = self._source, self._committer, self._pipeline
        assert source is not None
        assert committer is not None
        assert pipeline is not None
        if not source.owns(tp) or self._fatal is not None:
            return  # revoked while queued (the next owner has it), or halted
        with source.running(tp):
            try:
                durable = await pipeline.submit(tp, message)
            except asyncio.CancelledError:
                raise
            except DeadLetterLimitReached as exc:
                self._halt(exc)
                return  # not settled, and nothing after it is committed
            except FatalWriteError as exc:
                self._fail(exc)
                return
            except Exception:
                log.exception(
                    "unexpected error while delivering",
                    extra={"destination": self.name, "offset": message.offset},
                )
                if not await self._dead_letter_internal(tp, message):
                    return  # not settled: it comes back after a restart
                durable = None
        if durable is None:
            committer.settle(tp, message.offset)
        else:
            repair = self._repair
            assert repair is not None
            committer.settle_when(tp, message.offset, durable, lambda: repair.repair(tp, message))

    async def _dead_letter_internal(self, tp: TopicPartition, message: Message) -> bool:
        settler = self._settler
        assert settler is not None
        try:
            await settler.dead_letter(tp, message, RetryState(), "internal_error", None, "")
        except DeadLetterLimitReached as exc:
            self._halt(exc)
            return False
        except Exception:
            return False
        return True

    def _halt(self, exc: DeadLetterLimitReached) -> None:
        if self._fatal is not None:
            return
        log.error(
            "stopping: too many dead letters; fix the cause, then restart",
            extra={"destination": self.name, "detail": str(exc)},
        )
        committer = self._committer
        assert committer is not None
        # What was settled before this letter is committed; nothing settled after.
        committer.freeze()
        self._fail(exc)

    async def _housekeeping(self) -> None:
        """Gauges and expiry, once a second: kept off the per-message path."""
        tick = 0
        committer, source = self._committer, self._source
        assert committer is not None
        assert source is not None
        sender = self._sender
        while True:
            await asyncio.sleep(1.0)
            tick += 1
            try:
                self.metrics.in_flight.set(committer.pending())
                if isinstance(sender, HttpSend):
                    self.metrics.breaker_state.set(int(sender.breaker.state))
                if tick % 60 == 0:
                    self._dedup.expire()
                self.metrics.lag.set(await source.lag())
            except Exception:
                log.exception("housekeeping failed; trying again in a second")
