"""Configuration every HTTP destination shares (module partners, X): retries,
breaker, de-duplication, the ambiguity policy and the dead-letter limit.

The kernel's :class:`~postback_hub.service.settings.DestinationBase` holds what
every destination has; a destination type that is not one HTTP request per
record (the KPI sink) extends that instead.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from postback_hub.service.settings import DestinationBase


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySettings(_Strict):
    """Retry in process briefly, then park on a retry topic; dead-letter past max_age_s."""

    attempts: Annotated[int, Field(ge=1, le=100)] = 5
    in_process_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    backoff_initial_s: Annotated[float, Field(gt=0, le=600)] = 0.5
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    # One retry topic per delay; a message climbs the tiers and stays on the last.
    park_delays_s: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] = Field(
        default_factory=lambda: [30.0, 300.0, 1800.0, 7200.0]
    )
    max_age_s: Annotated[float, Field(gt=0)] = 86_400.0
    # The dead-letter topic keeps partner response excerpts: keep it no longer than needed.
    dead_letter_retention_s: Annotated[float, Field(ge=3600)] = 30 * 86_400.0

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        if self.park_delays_s != sorted(self.park_delays_s):
            raise ValueError("park_delays_s must be in increasing order")
        return self


class BreakerSettings(_Strict):
    """Opens after consecutive failures; one probe request after open_s decides."""

    failure_threshold: Annotated[int, Field(ge=1, le=10_000)] = 10
    open_s: Annotated[float, Field(gt=0, le=3600)] = 15.0


class DeadLetterLimit(_Strict):
    """Stops the consumer when dead letters pile up, as after a bad deploy (a broken
    template, a revoked key) that would otherwise dead-letter the whole stream.

    Past ``consecutive`` dead letters in a row, or more than ``ratio`` of the last
    ``window`` settled messages, the consumer stops with one error line; the letter
    that crossed the limit is not written and nothing after it is committed.
    """

    enabled: bool = True
    consecutive: Annotated[int, Field(ge=1)] = 100
    ratio: Annotated[float, Field(gt=0, le=1)] = 0.5
    window: Annotated[int, Field(ge=10)] = 1000


class HttpDestination(DestinationBase):
    """What every destination that sends one HTTP request per record has: its group,
    limits, retries, de-duplication and dead-letter limit."""

    # Deliveries in flight at once; one device's activities are still sent one at a time.
    concurrency: Annotated[int, Field(ge=1, le=10_000)] = 32
    rate_limit_per_s: Annotated[float, Field(gt=0)] | None = None
    request_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    dedup_window_s: Annotated[float, Field(ge=0)] = 86_400.0
    # Deliveries whose de-dup marks are not yet acknowledged, at most: the bound on
    # what a crash can make the partner receive twice.
    max_unacknowledged_marks: Annotated[int, Field(ge=1, le=100_000)] = 256
    # Where a new consumer group starts on the callbacks topic.
    start_from: Literal["earliest", "latest"] = "earliest"
    # A timeout after the request was sent: it may have been processed.
    # "retry" (at-least-once) or "dead_letter" (never twice; replay after checking).
    on_ambiguous: Literal["retry", "dead_letter"] = "retry"
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    dead_letters: DeadLetterLimit = Field(default_factory=DeadLetterLimit)

    @model_validator(mode="after")
    def _never_twice_needs_marks(self) -> Self:
        if self.on_ambiguous == "dead_letter" and self.dedup_window_s == 0:
            raise ValueError("on_ambiguous = dead_letter needs de-duplication (dedup_window_s > 0)")
        return self
