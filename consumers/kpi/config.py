"""Configuration of the KPI rollup sink (destination type ``kpi``).

The database is the ``[kpi]`` table's ``database_url``, shared with the KPI API.
One ``kpi`` destination per database: two would count every callback twice.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from postback_hub.service.settings import DestinationBase


class KpiDestination(DestinationBase):
    type: Literal["kpi"]
    # Messages per database transaction, at most; a batch is whatever one fetch returns.
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5_000
    # How long a fetch waits for the first message: the floor of freshness when idle.
    max_batch_wait_s: Annotated[float, Field(gt=0, le=10)] = 0.2
    # Adjust retries a callback for 24 h; a fingerprint is remembered twice that long.
    dedup_window_s: Annotated[float, Field(ge=0)] = 172_800.0
    # Where a partition with no offset in the database starts (Kafka's committed
    # offsets are only for lag monitoring and never read).
    start_from: Literal["earliest", "latest"] = "earliest"
