"""The receiver's counts, kept in plain Python per request, reach Prometheus intact."""

from __future__ import annotations

import re

from postback_hub.service.metrics import ReceiverMetrics
from tests.support import eventually


def sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    assert match, (name, labels)
    return float(match.group(1))


async def test_every_answer_is_in_the_scrape_by_app_kind_and_status() -> None:
    metrics = ReceiverMetrics()
    answers: list[tuple[str, str | None, int]] = [("demo", "install", 200)] * 7
    answers += [("demo", "event", 200)] * 3
    answers += [("unknown", None, 404)] * 2 + [("demo", "not-a-kind", 400)]
    for app, kind, status in answers:
        metrics.answered(app, kind, status)
    text = metrics.render().decode()
    name = "postback_hub_requests_total"
    assert sample(text, name, '{app="demo",kind="install",status="200"}') == 7
    assert sample(text, name, '{app="demo",kind="event",status="200"}') == 3
    assert sample(text, name, '{app="unknown",kind="none",status="404"}') == 2
    assert sample(text, name, '{app="demo",kind="other",status="400"}') == 1
    # Counts go on across scrapes: nothing is handed over twice or lost.
    metrics.answered("demo", "install", 200)
    text = metrics.render().decode()
    assert sample(text, name, '{app="demo",kind="install",status="200"}') == 8
    text = metrics.render().decode()
    assert sample(text, name, '{app="demo",kind="install",status="200"}') == 8


async def test_the_inflight_gauge_shows_the_requests_being_handled() -> None:
    metrics = ReceiverMetrics()
    for _ in range(5):
        metrics.inflight.inc()
    metrics.inflight.dec()
    assert sample(metrics.render().decode(), "postback_hub_inflight_requests") == 4
    for _ in range(4):
        metrics.inflight.dec()
    assert sample(metrics.render().decode(), "postback_hub_inflight_requests") == 0


async def test_counts_reach_prometheus_without_a_scrape() -> None:
    # Another worker may answer the scrape: this one's counts must get there by themselves.
    metrics = ReceiverMetrics()
    for _ in range(3):
        metrics.answered("demo", "session", 200)
    labels = {"app": "demo", "kind": "session", "status": "200"}

    def folded() -> bool:
        return metrics.registry.get_sample_value("postback_hub_requests_total", labels) == 3

    await eventually(folded, timeout=10, what="the answers folded into prometheus_client")


def test_counting_outside_an_event_loop_is_folded_when_read() -> None:
    metrics = ReceiverMetrics()
    metrics.answered("demo", "click", 200)
    metrics.answered("demo", "click", 200)
    text = metrics.render().decode()
    labels = '{app="demo",kind="click",status="200"}'
    assert sample(text, "postback_hub_requests_total", labels) == 2
