"""The topics a destination owns, named after the callbacks topic and the destination."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DestinationTopics:
    source: str
    destination: str
    park_delays_s: tuple[float, ...]

    @property
    def group_id(self) -> str:
        return f"postback-hub.{self.destination}"

    @property
    def retry_tiers(self) -> tuple[str, ...]:
        return tuple(
            f"{self.source}.{self.destination}.retry-{int(delay)}s" for delay in self.park_delays_s
        )

    @property
    def dead_letter(self) -> str:
        return f"{self.source}.{self.destination}.dlq"

    @property
    def dedup(self) -> str:
        return f"{self.source}.{self.destination}.dedup"

    @property
    def consumed(self) -> tuple[str, ...]:
        return (self.source, *self.retry_tiers)
