"""The delivery runtime: one consumer group per destination, at least once, in order per
device, each step a small object with one job.

    source.py    KafkaSource   fetch; pause retry tiers not yet due; rebalances
    commit.py    Committer     register, settle, commit: the only place an offset moves
    steps.py     Route -> Deduplicate -> AgeLimit
    send.py      HttpSend (breaker, rate limit, pacing, intent, retries) | DryRunSend
    settle.py    Settler (park, dead letter), KafkaWriter, DeadLetterLimit
    pipeline.py  Pipeline      the steps above in order for one message
    policies.py  AtLeastOnce | NeverTwice (ambiguity), chosen once at build
    runtime.py   DeliveryRuntime  builds the steps, owns resources (AsyncExitStack)

A message is registered when fetched, handled by the pipeline under its device's
key (``consumers.ordering``), and settled once its outcome is durable in Kafka;
the committer commits up to the lowest unsettled offset, never past it. Retry
state lives in Kafka (retry topics with due-time headers).

A destination that consumes in batches and commits offsets with its own writes
(the KPI sink) does not use this runtime: it implements
:class:`~postback_hub.consumers.registry.Consumer` itself and registers with
:class:`~postback_hub.consumers.registry.DestinationType`.
"""

from postback_hub.consumers.runtime.runtime import DeliveryRuntime

__all__ = ["DeliveryRuntime"]
