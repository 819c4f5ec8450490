"""Configuration of the scheduled reconciliation with Adjust's numbers (``[reconcile]``).

With ``enabled``, ``postback-hub run`` starts ``postback-hub reconcile --watch``
beside the receiver and the consumers; the command's flags override these
values. Only apps with an ``[apps.KEY.adjust]`` binding are reconciled.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class ReconcileSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    # Recent complete days re-checked on every cycle (Adjust revises them).
    lookback_days: Annotated[int, Field(ge=1, le=30)] = 3
    interval_s: Annotated[float, Field(ge=60, le=86_400)] = 3600.0
    # A gap is beyond tolerance when above tolerance_pct of Adjust's count AND at
    # least tolerance_min.
    tolerance_pct: Annotated[float, Field(ge=0, le=100)] = 1.0
    tolerance_min: Annotated[float, Field(ge=0)] = 5.0
    # An app that sent installs in the last 30 days but none for this long is named.
    silence_hours: Annotated[float, Field(gt=0, le=720)] = 6.0
    # Where /metrics of the watch is served (127.0.0.1); none when unset.
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
