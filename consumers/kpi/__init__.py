"""The KPI rollup sink (destination type ``kpi``): callbacks in batches into the KPI
store, rollups and offsets in one transaction."""

from __future__ import annotations

from postback_hub.consumers.kpi.config import KpiDestination
from postback_hub.consumers.kpi.sink import KpiSink
from postback_hub.service.settings import Settings

__all__ = ["KpiDestination", "KpiSink", "build_sink"]


def build_sink(settings: Settings, name: str) -> KpiSink:
    """The sink of ``[destinations.NAME]`` (a ``type = "kpi"`` table), writing into
    ``settings.kpi.database_url``."""
    return KpiSink(settings, name, settings.destination(name, KpiDestination))
