"""The delivery runtime: one consumer group per destination, at-least-once, in order per device.

Pipeline, each step a small object with one job:

    fetch (AIOKafkaConsumer, callbacks topic + the destination's retry topics)
      -> OffsetTracker.register        every message taken is pending until settled
      -> KeyedScheduler.submit         one device at a time, N devices at once
      -> DeliveryRuntime._process      route, de-duplicate, send with retries, or
                                       park (retry topic) / dead-letter (DLQ topic)
      -> OffsetTracker.settle          only after the outcome is durable in Kafka
    commit loop: commits up to the lowest unsettled offset, never past it

Retry state lives in Kafka: a parked message carries its attempts and due time
in headers; a retry topic partition whose head is not yet due is paused until it
is. Revocation waits (bounded) for the partition's in-flight work, commits what
is settled and abandons the rest, which the next owner receives again; the
de-duplication log stops that from reaching the partner twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterable
from typing import Any, TypeAlias

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from postback_hub.consumers.config import HttpDestination
from postback_hub.consumers.dedup import DedupStore, Seen, StoreClosed
from postback_hub.consumers.delivery import (
    Delivered,
    Describes,
    Destination,
    HasTopics,
    HttpRequest,
    MappingError,
    Outcome,
    Paced,
    Permanent,
    PublishesAfterDelivery,
    Retry,
    Skip,
)
from postback_hub.consumers.limits import CircuitBreaker, TokenBucket
from postback_hub.consumers.metrics import ConsumerMetrics
from postback_hub.consumers.offsets import OffsetTracker
from postback_hub.consumers.ordering import KeyedScheduler
from postback_hub.consumers.redact import describe_request
from postback_hub.consumers.retry import (
    H_ATTEMPTS,
    H_BODY,
    H_DEAD_AT,
    H_FIRST_SEEN,
    H_ORIGIN,
    H_REASON,
    H_STATUS,
    RetryState,
    backoff_s,
    due_ms,
    park_tier,
    retry_headers,
)
from postback_hub.consumers.topics import DestinationTopics
from postback_hub.service.producer import kafka_client_options
from postback_hub.service.record import CallbackRecord, millis_from_iso
from postback_hub.service.settings import Settings
from postback_hub.service.topics import ensure_topic, partitions_of

log = logging.getLogger("postback_hub.consumer")

Message: TypeAlias = ConsumerRecord[bytes, bytes]

_COMMIT_INTERVAL_S = 0.5
_PRODUCE_RETRY_S = 1.0
# How long a shutdown waits for de-dup records that are being written again.
_REWRITE_GRACE_S = 3.0
_DAY_MS = 86_400_000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runtime: DeliveryRuntime) -> None:
        self._runtime = runtime

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._runtime.partitions_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._runtime.partitions_assigned(set(assigned))


class DeliveryRuntime:
    """Consumes for one destination until stopped. ``start`` / ``run`` / ``close``."""

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
        self._tracker = OffsetTracker()
        self._scheduler = KeyedScheduler(config.concurrency)
        self._breaker = CircuitBreaker(config.breaker.failure_threshold, config.breaker.open_s)
        self._limiter = (
            TokenBucket(config.rate_limit_per_s) if config.rate_limit_per_s is not None else None
        )
        self._max_pending = config.concurrency * 32
        self._assigned: set[TopicPartition] = set()
        self._running: dict[TopicPartition, set[asyncio.Task[Any]]] = {}
        self._resume_handles: dict[TopicPartition, asyncio.TimerHandle] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._closing = False
        self._fatal: Exception | None = None
        self._last_poll = 0.0
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._dedup: DedupStore | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the destination's topics, connect, join the group."""
        partitions = await self._source_partitions()
        retention = {"retention.ms": str(7 * _DAY_MS)}
        for topic in self.topics.retry_tiers:
            await ensure_topic(self._options, topic, partitions, config=retention)
        await ensure_topic(
            self._options,
            self.topics.dead_letter,
            partitions,
            config={"retention.ms": str(30 * _DAY_MS)},
        )
        dedup_retention = max(2 * int(self.config.dedup_window_s * 1000), 3_600_000)
        await ensure_topic(
            self._options,
            self.topics.dedup,
            partitions,
            config={"cleanup.policy": "delete", "retention.ms": str(dedup_retention)},
        )
        extra_topics = (
            self.destination.extra_topics() if isinstance(self.destination, HasTopics) else {}
        )
        for topic, topic_config in extra_topics.items():
            await ensure_topic(self._options, topic, partitions, config=topic_config)
        self._producer = AIOKafkaProducer(
            **self._options, acks="all", enable_idempotence=True, linger_ms=2
        )
        await self._producer.start()
        if isinstance(self.destination, PublishesAfterDelivery):
            self.destination.attach(self._producer, self.metrics)
        self._dedup = DedupStore(
            self._options, self.topics.dedup, self.config.dedup_window_s, self._producer
        )
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.config.concurrency * 2, ttl_dns_cache=300)
        )
        config = self.config
        self._consumer = AIOKafkaConsumer(
            **self._options,
            group_id=self.topics.group_id,
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
        self._consumer.subscribe(list(self.topics.consumed), listener=_Listener(self))
        await self._consumer.start()
        log.info(
            "consumer started",
            extra={"destination": self.destination.name, "group": self.topics.group_id},
        )

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

    def render_metrics(self) -> bytes:
        return self.metrics.render()

    @property
    def ready(self) -> bool:
        return (
            self._consumer is not None
            and not self._stopping.is_set()
            and time.monotonic() - self._last_poll < 15.0
        )

    async def run(self) -> None:
        """Fetch and dispatch until :meth:`stop`; then settle what can be and commit."""
        consumer = self._consumer
        assert consumer is not None
        committer = asyncio.create_task(self._commit_loop())
        housekeeping = asyncio.create_task(self._housekeeping_loop())
        try:
            while not self._stopping.is_set():
                self._last_poll = time.monotonic()
                room = self._max_pending - self._tracker.pending()
                # Fetch in worthwhile batches: topping up one message at a time costs a
                # full pass over every partition's buffer per message.
                if room < self._max_pending // 4:
                    await asyncio.sleep(0.005)
                    continue
                batch = await consumer.getmany(timeout_ms=100, max_records=room)
                for tp, messages in batch.items():
                    self._dispatch(tp, messages)
        finally:
            committer.cancel()
            housekeeping.cancel()
            for task in (committer, housekeeping):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._fatal is not None:
            raise self._fatal

    async def close(self, grace_s: float = 10.0) -> None:
        """Let in-flight deliveries finish (bounded), commit, and disconnect."""
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._scheduler.join(), timeout=grace_s)
        self._closing = True
        await self._scheduler.cancel()
        if self._dedup is not None:
            await self._dedup.flush()
            await asyncio.sleep(0)  # failed marks' callbacks start their re-writes
            # A de-dup record whose write failed is being written again: while the producer
            # still runs, that can land, and spare the partner a copy after the restart.
            if self._background:
                await asyncio.wait(list(self._background), timeout=_REWRITE_GRACE_S)
            await self._dedup.close()
        await asyncio.sleep(0)  # let acknowledged marks settle their messages
        await self._commit()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._session is not None:
            await self._session.close()
        for handle in self._resume_handles.values():
            handle.cancel()
        for task in list(self._background):
            task.cancel()
        log.info("consumer stopped", extra={"destination": self.destination.name})

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, tp: TopicPartition, messages: list[Message]) -> None:
        consumer = self._consumer
        assert consumer is not None
        if tp not in self._assigned:
            # Fetched before its de-dup state was restored (or just revoked): never drop
            # it, rewind so it is fetched again once the partition is ready.
            with contextlib.suppress(Exception):  # IllegalStateError when no longer ours
                consumer.seek(tp, messages[0].offset)
            return
        is_retry_topic = tp.topic != self.topics.source
        now = _now_ms()
        handle = self._handle
        for message in messages:
            if is_retry_topic:
                due = due_ms(message.headers)
                if due is not None and due > now:
                    # Every later message of this tier is due later still: wait for this one.
                    consumer.pause(tp)
                    consumer.seek(tp, message.offset)
                    self._schedule_resume(tp, (due - now) / 1000)
                    return
            self._tracker.register(tp, message.offset)
            self._scheduler.submit(
                message.key or (tp.topic, tp.partition), functools.partial(handle, tp, message)
            )

    def _schedule_resume(self, tp: TopicPartition, delay_s: float) -> None:
        def resume() -> None:
            self._resume_handles.pop(tp, None)
            if self._consumer is not None and tp in self._assigned:
                self._consumer.resume(tp)

        previous = self._resume_handles.pop(tp, None)
        if previous is not None:
            previous.cancel()
        self._resume_handles[tp] = asyncio.get_running_loop().call_later(delay_s, resume)

    async def _handle(self, tp: TopicPartition, message: Message) -> None:
        """Run one message to a settled outcome. Revocation may cancel the running task:
        the message then stays unsettled and its partition's next owner gets it."""
        if tp not in self._assigned:
            return  # revoked while queued: the next owner has it
        task = self._scheduler.current_worker
        assert task is not None
        running = self._running.setdefault(tp, set())
        running.add(task)
        durable: asyncio.Future[Any] | None = None
        try:
            durable = await self._process(tp, message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "unexpected error while delivering",
                extra={"destination": self.destination.name, "offset": message.offset},
            )
            try:
                await self._dead_letter(tp, message, RetryState(), "internal_error", None, "")
            except Exception:
                return  # not settled: it comes back after a restart
        finally:
            running.discard(task)
        if durable is None:
            self._tracker.settle(tp, message.offset)
        else:
            durable.add_done_callback(lambda done: self._settle_when_durable(tp, message, done))

    def _settle_when_durable(
        self, tp: TopicPartition, message: Message, done: asyncio.Future[Any]
    ) -> None:
        if not done.cancelled() and done.exception() is None:
            self._tracker.settle(tp, message.offset)
            return
        if self._dedup is None or self._dedup.closed:
            return  # shut down: unsettled, so it comes back after the restart
        # The de-dup record was not acknowledged: write it again before settling, or a
        # redelivery after a crash would reach the partner twice.
        task = asyncio.get_running_loop().create_task(self._rewrite_delivered(tp, message))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _rewrite_delivered(self, tp: TopicPartition, message: Message) -> None:
        assert self._dedup is not None
        fingerprint = CallbackRecord.from_json(message.value).fingerprint
        while tp in self._assigned:
            try:
                await self._dedup.mark(tp.partition, fingerprint, Seen.DELIVERED)
            except StoreClosed:
                return  # shut down: unsettled, so it comes back after the restart
            except KafkaError:
                await asyncio.sleep(_PRODUCE_RETRY_S)
                continue
            self._tracker.settle(tp, message.offset)
            return

    # ------------------------------------------------------------------ one message

    async def _process(self, tp: TopicPartition, message: Message) -> asyncio.Future[Any] | None:
        """Deliver one message. Returns None when its outcome is durable, or the future of
        the de-duplication record that must be acknowledged before it is settled."""
        destination, config, metrics = self.destination, self.config, self.metrics
        dedup = self._dedup
        assert dedup is not None
        state = RetryState.from_headers(message.headers)
        if state.first_seen_ms is None:
            state = RetryState(state.attempts, message.timestamp, state.parked)
        try:
            record = CallbackRecord.from_json(message.value)
            plan = destination.prepare(record)
        except MappingError as exc:
            await self._dead_letter(tp, message, state, "mapping_error", None, str(exc))
            return None
        except (ValueError, KeyError, TypeError):
            await self._dead_letter(tp, message, state, "undecodable_record", None, "")
            return None
        if isinstance(plan, Skip):
            metrics.skipped(plan.reason)
            return None

        fingerprint = record.fingerprint
        seen = dedup.lookup(tp.partition, fingerprint)
        if seen is Seen.DELIVERED:
            metrics.deduplicated.inc()
            return None
        never_twice = config.on_ambiguous == "dead_letter"
        if seen is Seen.PENDING and never_twice:
            # The last owner died with this request in flight: it may have been processed.
            # Cleared once dead-lettered, so an operator's replay sends it.
            await self._dead_letter(tp, message, state, "ambiguous_after_restart", None, "")
            await dedup.clear(tp.partition, fingerprint)
            return None
        assert state.first_seen_ms is not None
        if _now_ms() - state.first_seen_ms > config.retry.max_age_s * 1000:
            await self._dead_letter(tp, message, state, "expired", None, "")
            return None

        if config.dry_run:
            log.info(
                "dry run: request not sent",
                extra={
                    "destination": destination.name,
                    "fingerprint": fingerprint,
                    "request": (
                        destination.describe(record, plan)
                        if isinstance(destination, Describes)
                        else describe_request(plan, record, ())
                    ),
                },
            )
            metrics.delivered.inc()
            return dedup.mark_soon(tp.partition, fingerprint, Seen.DELIVERED)

        outcome = await self._attempts(tp, plan, fingerprint, never_twice)
        attempts = state.attempts + outcome[1]
        state = RetryState(attempts, state.first_seen_ms, state.parked)
        result = outcome[0]
        if isinstance(result, Delivered):
            metrics.delivered.inc()
            received_ms = millis_from_iso(record.received_at)
            metrics.end_to_end_seconds.observe(max(0, _now_ms() - received_ms) / 1000)
            # The device's next activity may go now; the offset waits for these records.
            mark = dedup.mark_soon(tp.partition, fingerprint, Seen.DELIVERED)
            try:
                extra = (
                    await destination.after_delivery(record, plan, result)
                    if isinstance(destination, PublishesAfterDelivery)
                    else None
                )
            except Exception as exc:
                # Delivered is delivered: losing a follow-up write must not undo that.
                log.warning(
                    "after-delivery step failed",
                    extra={"destination": destination.name, "error": type(exc).__name__},
                )
                extra = None
            if extra is None:
                return mark
            return extra if mark is None else asyncio.ensure_future(asyncio.gather(mark, extra))
        # Settle first (dead letter or park, durable), then drop the intent mark: a crash
        # in between leaves the mark, which can only make us more careful, never post twice.
        if isinstance(result, Permanent):
            await self._dead_letter(
                tp, message, state, result.reason, result.status, result.body_excerpt
            )
        elif result.ambiguous and never_twice:
            await self._dead_letter(
                tp, message, state, f"ambiguous_{result.reason}", result.status, result.body_excerpt
            )
        else:
            await self._park(tp, message, state, result)
        if never_twice:
            with contextlib.suppress(KafkaError):
                await dedup.clear(tp.partition, fingerprint)
        return None

    async def _attempts(
        self, tp: TopicPartition, plan: HttpRequest, fingerprint: str, never_twice: bool
    ) -> tuple[Outcome, int]:
        """Send with in-process retries; returns the last outcome and the attempts made."""
        config, metrics = self.config, self.metrics
        dedup = self._dedup
        session = self._session
        assert dedup is not None
        assert session is not None
        deadline = time.monotonic() + config.retry.in_process_s
        attempts = 0
        while True:
            # Closed breaker (the common case): no wait, no coroutine.
            if self._breaker.try_acquire() != 0.0 and not await self._breaker.wait(deadline):
                return Retry("breaker_open"), attempts
            if self._limiter is not None:
                await self._limiter.acquire()
            # The partner's own pacing (X's rate-limit reset) is waited out before any intent
            # is recorded, and only within the in-process budget: longer, and it is parked.
            hold = self.destination.send_delay(plan) if isinstance(self.destination, Paced) else 0.0
            if hold > deadline - time.monotonic():
                return Retry("rate_limited", retry_after_s=hold), attempts
            if hold > 0:
                await asyncio.sleep(hold)
            if never_twice:
                try:
                    await dedup.mark(tp.partition, fingerprint, Seen.PENDING)
                except KafkaError:
                    return Retry("intent_not_recorded"), attempts  # nothing was sent
            started = time.perf_counter()
            outcome = await self.destination.send(session, plan)
            metrics.delivery_seconds.observe(time.perf_counter() - started)
            attempts += 1
            # A 4xx means the partner is up and answering: only retryable failures trip it.
            self._breaker.record(not isinstance(outcome, Retry))
            if not isinstance(outcome, Retry):
                return outcome, attempts
            if outcome.ambiguous and never_twice:
                return outcome, attempts
            delay = backoff_s(
                attempts,
                config.retry.backoff_initial_s,
                config.retry.backoff_max_s,
                outcome.retry_after_s,
            )
            if attempts >= config.retry.attempts or time.monotonic() + delay > deadline:
                return outcome, attempts
            if never_twice:
                await dedup.clear(tp.partition, fingerprint)
            metrics.retried.inc()
            await asyncio.sleep(delay)

    # ------------------------------------------------------------------ settling

    async def _park(
        self, tp: TopicPartition, message: Message, state: RetryState, result: Retry
    ) -> None:
        delays = self.config.retry.park_delays_s
        tier = park_tier(state.parked, delays, result.retry_after_s)
        due = _now_ms() + int(delays[tier] * 1000)
        assert state.first_seen_ms is not None
        if due - state.first_seen_ms > self.config.retry.max_age_s * 1000:
            await self._dead_letter(
                tp,
                message,
                state,
                f"retries_exhausted_{result.reason}",
                result.status,
                result.body_excerpt,
            )
            return
        parked = RetryState(state.attempts, state.first_seen_ms, state.parked + 1)
        headers = retry_headers(parked, due, result.reason, result.status, _origin(tp, message))
        await self._produce(self.topics.retry_tiers[tier], tp.partition, message, headers)
        self.metrics.parked.inc()

    async def _dead_letter(
        self,
        tp: TopicPartition,
        message: Message,
        state: RetryState,
        reason: str,
        status: int | None,
        body: str,
    ) -> None:
        headers = [
            (H_REASON, reason.encode()),
            (H_STATUS, str(status or "").encode()),
            (H_BODY, body.encode()[:512]),
            (H_ATTEMPTS, str(state.attempts).encode()),
            (H_FIRST_SEEN, str(state.first_seen_ms or message.timestamp).encode()),
            (H_DEAD_AT, str(_now_ms()).encode()),
            (H_ORIGIN, _origin(tp, message).encode()),
        ]
        await self._produce(self.topics.dead_letter, tp.partition, message, headers)
        self.metrics.dead_lettered(reason)
        log.warning(
            "dead-lettered",
            extra={"destination": self.destination.name, "reason": reason, "status": status},
        )

    async def _produce(
        self, topic: str, partition: int, message: Message, headers: list[tuple[str, bytes]]
    ) -> None:
        """Write a parked or dead letter copy (acks=all) before the source can be settled.
        Kafka trouble is waited out: settling without this copy would lose the activity."""
        producer = self._producer
        assert producer is not None
        while True:
            try:
                await producer.send_and_wait(
                    topic,
                    value=message.value,
                    key=message.key,
                    partition=partition,
                    headers=headers,
                )
                return
            except KafkaError as exc:
                if not exc.retriable:
                    # Waiting cannot fix this (size, authorisation): stop, so the supervisor
                    # restarts us and the operator sees it; nothing is settled meanwhile.
                    log.error(
                        "cannot write to Kafka, and retrying will not help",
                        extra={"topic": topic, "error": type(exc).__name__},
                    )
                    self._fatal = exc
                    self._stopping.set()
                    raise
                log.warning(
                    "cannot write to Kafka yet", extra={"topic": topic, "error": type(exc).__name__}
                )
                await asyncio.sleep(_PRODUCE_RETRY_S)

    # ------------------------------------------------------------------ offsets and partitions

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        offsets = {
            tp: offset
            for tp, offset in self._tracker.committable().items()
            if isinstance(tp, TopicPartition) and (only is None or tp in only)
        }
        if not offsets:
            return
        try:
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except KafkaError as exc:
            # A rebalance took the partitions: the next owner starts from the last commit.
            log.warning("commit failed", extra={"error": type(exc).__name__})
            return
        self._tracker.mark_committed(dict(offsets.items()))

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(_COMMIT_INTERVAL_S)
            await self._commit()

    async def _housekeeping_loop(self) -> None:
        """Gauges and expiry, once a second: kept off the per-message path."""
        tick = 0
        while True:
            await asyncio.sleep(1.0)
            tick += 1
            try:
                self.metrics.in_flight.set(self._tracker.pending())
                self.metrics.breaker_state.set(int(self._breaker.state))
                if self._dedup is not None and tick % 60 == 0:
                    self._dedup.expire()
                if self._consumer is not None:
                    self.metrics.lag.set(await self._lag(self._consumer))
            except Exception:
                log.exception("housekeeping failed; trying again in a second")

    async def _lag(self, consumer: AIOKafkaConsumer) -> int:
        lag = 0
        for tp in tuple(self._assigned):  # a rebalance may change the set meanwhile
            with contextlib.suppress(KafkaError, AssertionError):
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    lag += max(0, highwater - await consumer.position(tp))
        return lag

    async def partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        assert self._dedup is not None
        assert self._consumer is not None
        # Nothing of these partitions may be handled before their de-dup state is loaded.
        self._consumer.pause(*assigned)
        for attempt in range(1, 31):
            try:
                await self._dedup.restore(tp.partition for tp in assigned)
                break
            except Exception as exc:
                log.warning(
                    "de-dup restore failed; retrying",
                    extra={"error": type(exc).__name__, "attempt": attempt},
                )
                await asyncio.sleep(min(2.0 * attempt, 10.0))
        else:
            # Never sit on partitions we cannot serve: stop, so a restart (or another
            # member) takes them.
            self._fatal = RuntimeError("could not restore de-duplication state")
            self._stopping.set()
            return
        self._assigned |= assigned
        self._consumer.resume(*assigned)
        log.info(
            "partitions assigned",
            extra={"destination": self.destination.name, "count": len(assigned)},
        )

    async def partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish in-flight work of revoked partitions (bounded), commit it, drop the rest."""
        # While closing, in-flight work was already given its grace period.
        # Bounded below rebalance_timeout_ms (60 s), or the group would evict us meanwhile.
        wait_s = 0.0 if self._closing else min(self.config.request_timeout_s + 5.0, 50.0)
        deadline = time.monotonic() + wait_s
        # Polling keeps the tracker free of per-partition events; revocations are rare.
        while time.monotonic() < deadline and any(self._tracker.pending(tp) for tp in revoked):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await self._commit(revoked)
        self._assigned -= revoked
        for tp in revoked:
            for task in self._running.pop(tp, set()):
                task.cancel()
            self._tracker.forget(tp)
            handle = self._resume_handles.pop(tp, None)
            if handle is not None:
                handle.cancel()
        assert self._dedup is not None
        still_owned = {tp.partition for tp in self._assigned}
        self._dedup.forget({tp.partition for tp in revoked} - still_owned)


def _origin(tp: TopicPartition, message: Message) -> str:
    return f"{tp.topic}:{tp.partition}:{message.offset}"
