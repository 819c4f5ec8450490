"""Destination types as plugins: a configuration ``type`` maps to its config model and
the builder of its consumer.

The settings kernel knows no destination type; it validates each
``[destinations.NAME]`` table with the model registered here for its ``type``,
and an unknown ``type`` is a configuration error naming the known ones. Adding
a type means registering a :class:`DestinationType`, nothing else:

- a destination that sends one request per record implements the small
  :class:`~postback_hub.consumers.delivery.Destination` protocol and is run by
  the delivery runtime (``consumers.runtime``), which gives it order, retries,
  de-duplication, dead letters and settle-before-commit;
- a destination that consumes in batches and commits its own offsets with its
  writes (the KPI sink, whose offsets live in its database) brings its own
  :class:`Consumer` and never touches the delivery runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from postback_hub.consumers.config import HttpDestination
from postback_hub.consumers.delivery import Destination
from postback_hub.service.settings import DestinationBase, Settings
from postback_hub.service.settings import load_settings as _load
from postback_hub.service.settings import parse_settings as _parse


class Consumer(Protocol):
    """What ``postback-hub consume`` runs: one destination's consumer in this process.

    ``start`` connects (bounded retries are the consumer's business); ``run`` works
    until ``stop`` and raises on a fatal error; ``close`` finishes in-flight work
    within ``grace_s``, commits what is settled and disconnects; ``ready`` is what
    ``/readyz`` answers and ``render_metrics`` what ``/metrics`` does.
    """

    name: str

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    async def close(self, grace_s: float = 10.0) -> None: ...

    @property
    def ready(self) -> bool: ...

    def render_metrics(self) -> bytes:
        """This consumer's metrics in Prometheus' text format."""
        ...


@dataclass(frozen=True, slots=True)
class DestinationType:
    """One destination type: its ``type`` name, config model and consumer builder.

    ``destination`` is set for types that send one request per record (built with
    :func:`http_type`): the delivery runtime runs what it builds.
    """

    name: str
    config: type[DestinationBase]
    build: Callable[[Settings, str], Consumer]
    destination: Callable[[Settings, str], Destination] | None = None


def http_type(
    name: str,
    config: type[HttpDestination],
    destination: Callable[[Settings, str], Destination],
) -> DestinationType:
    """A type whose destination sends one request per record, run by the delivery runtime."""

    def build(settings: Settings, key: str) -> Consumer:
        from postback_hub.consumers.runtime import DeliveryRuntime

        return DeliveryRuntime(
            settings, destination(settings, key), settings.destination(key, config)
        )

    return DestinationType(name, config, build, destination)


class Registry:
    """An immutable set of destination types; :meth:`with_type` makes a larger one."""

    def __init__(self, types: Iterable[DestinationType]) -> None:
        self._types = {kind.name: kind for kind in types}

    def with_type(self, kind: DestinationType) -> Registry:
        return Registry([*self._types.values(), kind])

    @property
    def models(self) -> Mapping[str, type[DestinationBase]]:
        return {name: kind.config for name, kind in self._types.items()}

    def build(self, settings: Settings, name: str) -> Consumer:
        """The consumer of ``[destinations.NAME]``, built by its type's builder."""
        return self._types[settings.destinations[name].type].build(settings, name)

    def destination(self, settings: Settings, name: str) -> Destination:
        """The per-record destination of ``[destinations.NAME]`` (module, x, ...)."""
        make = self._types[settings.destinations[name].type].destination
        if make is None:
            raise TypeError(f"destination {name} does not send one request per record")
        return make(settings, name)


def _module(settings: Settings, name: str) -> Destination:
    from postback_hub.consumers.module.config import ModuleDestination
    from postback_hub.consumers.module.partner import ModulePartner

    return ModulePartner(name, settings.destination(name, ModuleDestination))


def _x(settings: Settings, name: str) -> Destination:
    from postback_hub.consumers.x.config import XDestination
    from postback_hub.consumers.x.destination import XConversions

    return XConversions(name, settings.destination(name, XDestination), settings.kafka.topic)


def default_registry() -> Registry:
    """The destination types postback-hub ships."""
    from postback_hub.consumers.kpi import KpiDestination, build_sink
    from postback_hub.consumers.module.config import ModuleDestination
    from postback_hub.consumers.x.config import XDestination

    return Registry(
        [
            DestinationType("kpi", KpiDestination, build_sink),
            http_type("module", ModuleDestination, _module),
            http_type("x", XDestination, _x),
        ]
    )


def parse_settings(
    document: dict[str, Any],
    *,
    app_secrets: bool = True,
    base_dir: Path | None = None,
    registry: Registry | None = None,
) -> Settings:
    """:func:`postback_hub.service.settings.parse_settings` with the registered types."""
    models = (registry or default_registry()).models
    return _parse(document, models, app_secrets=app_secrets, base_dir=base_dir)


def load_settings(
    path: Path, *, app_secrets: bool = True, registry: Registry | None = None
) -> Settings:
    """A configuration file, validated with the registered destination types."""
    return _load(path, (registry or default_registry()).models, app_secrets=app_secrets)
