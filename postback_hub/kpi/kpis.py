"""The KPI catalogue: which of Adjust's KPIs callbacks determine exactly, and how. Pure.

A KPI that callbacks cannot determine (costs, active users, cohorts, ...) is
refused with the reason, never answered with a guess or a zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from postback_hub.kpi.query import Sums

Value = int | Decimal
_RATIO = Decimal("0.0001")

REJECTION_REASONS = (
    "anon_ip",
    "too_many_engagements",
    "distribution_outlier",
    "click_injection",
    "invalid_signature",
)


class KpiError(ValueError):
    """A KPI that cannot be answered; ``field`` names the parameter that asked for it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _revenue(sums: Sums, kind: str, currency: str) -> Decimal:
    # Revenue a callback sent without a currency is taken to be in the reporting currency.
    return sums.revenue.get((kind, currency), Decimal(0)) + sums.revenue.get((kind, ""), Decimal(0))


def _count(kind: str) -> Callable[[Sums, str], Value]:
    return lambda sums, _currency: sums.counts[kind]


def _rejected(kind: str, reason: str) -> Callable[[Sums, str], Value]:
    return lambda sums, _currency: sums.rejected[(kind, reason)]


APP_KPIS: dict[str, Callable[[Sums, str], Value]] = {
    "clicks": _count("click"),
    "impressions": _count("impression"),
    "installs": _count("install"),
    "reinstalls": _count("reinstall"),
    "uninstalls": _count("uninstall"),
    "reattributions": _count("reattribution"),
    "reattribution_reinstalls": _count("reattribution_reinstall"),
    "sessions": _count("session"),
    "rejected_installs": _count("rejected_install"),
    "rejected_reattributions": _count("rejected_reattribution"),
    **{f"rejected_installs_{r}": _rejected("rejected_install", r) for r in REJECTION_REASONS},
    **{
        f"rejected_reattributions_{r}": _rejected("rejected_reattribution", r)
        for r in REJECTION_REASONS
    },
    "revenue_events": lambda sums, _currency: sums.revenue_events,
    "revenue": lambda sums, currency: _revenue(sums, "event", currency),
    "ad_revenue": lambda sums, currency: _revenue(sums, "ad_revenue", currency),
    "all_revenue": lambda sums, currency: (
        _revenue(sums, "event", currency) + _revenue(sums, "ad_revenue", currency)
    ),
}

_COST = "cost data does not arrive in callbacks"
_ACTIVE = "active users are distinct devices per period, which additive rollups cannot count"
_COHORT = "cohort KPIs group by install date; callbacks are dated by their activity"
_RATE = "a rate Adjust weights its own way; request its parts and divide"
UNSUPPORTED: dict[str, str] = {
    **dict.fromkeys(
        [
            "install_cost",
            "click_cost",
            "impression_cost",
            "cost",
            "paid_installs",
            "paid_clicks",
            "paid_impressions",
            "cpe",
            "ecost",
            "ecpc",
            "ecpi",
            "ecpm",
            "cohort_gross_profit",
            "return_on_investment",
            "rcr",
            "roas",
        ],
        _COST,
    ),
    **dict.fromkeys(["daus", "waus", "maus"], _ACTIVE),
    **dict.fromkeys(
        ["cohort_revenue", "cohort_ad_revenue", "cohort_all_revenue", "uninstall_cohort"], _COHORT
    ),
    **dict.fromkeys(
        [
            "click_conversion_rate",
            "ctr",
            "impression_conversion_rate",
            "limit_ad_tracking_install_rate",
            "limit_ad_tracking_reattribution_rate",
            "rejected_install_rate",
            "rejected_reattribution_rate",
            "ad_rpm",
            *(f"rejected_install_{r}_rate" for r in REJECTION_REASONS),
            *(f"rejected_reattribution_{r}_rate" for r in REJECTION_REASONS),
        ],
        _RATE,
    ),
    "deattributions": "callbacks do not say when an attribution ends",
    "gdpr_forgets": "a forgotten device's callbacks stop; the forget itself is not counted",
    "limit_ad_tracking_installs": "not counted by this service's rollups",
    "limit_ad_tracking_reattributions": "not counted by this service's rollups",
    "ad_impressions": "ad revenue callbacks do not carry an impression count Adjust agrees with",
}


def _ratio(revenue: Decimal, n: int) -> Decimal:
    if n == 0:
        return Decimal(0)
    return (revenue / n).quantize(_RATIO, rounding=ROUND_HALF_EVEN)


def _event_revenue(sums: Sums, token: str, currency: str) -> Decimal:
    return sums.event_revenue.get((token, currency), Decimal(0)) + sums.event_revenue.get(
        (token, ""), Decimal(0)
    )


EVENT_KPIS: dict[str, Callable[[Sums, str, str], Value]] = {
    "events": lambda sums, token, _c: sums.events[token],
    "revenue_events": lambda sums, token, _c: sums.event_revenue_events[token],
    "revenue": lambda sums, token, c: _event_revenue(sums, token, c),
    "revenue_per_event": lambda sums, token, c: _ratio(
        _event_revenue(sums, token, c), sums.events[token]
    ),
    "revenue_per_revenue_event": lambda sums, token, c: _ratio(
        _event_revenue(sums, token, c), sums.event_revenue_events[token]
    ),
}
EVENT_UNSUPPORTED = {
    "first_events": "first events need each device's event history, which rollups do not keep",
    "revenue_per_user": _ACTIVE,
}
_EVENT_NAMES = sorted([*EVENT_KPIS, *EVENT_UNSUPPORTED], key=len, reverse=True)


@dataclass(frozen=True, slots=True)
class EventKpi:
    token: str
    kpi: str

    @property
    def label(self) -> str:
        return f"{self.token}_{self.kpi}"


def check_app_kpis(names: Iterable[str], field: str = "kpis") -> list[str]:
    result = []
    for name in names:
        key = name.lower()
        if key in APP_KPIS:
            result.append(key)
        elif key in UNSUPPORTED:
            raise KpiError(field, f"{name} cannot be computed from callbacks: {UNSUPPORTED[key]}")
        else:
            raise KpiError(field, f"{name} is not a KPI this service knows")
    return result


def check_event_kpi(name: str, field: str) -> str:
    if name in EVENT_KPIS:
        return name
    if name in EVENT_UNSUPPORTED:
        raise KpiError(
            field, f"{name} cannot be computed from callbacks: {EVENT_UNSUPPORTED[name]}"
        )
    raise KpiError(field, f"{name} is not an event KPI (expected one of {', '.join(EVENT_KPIS)})")


def parse_event_kpis(text: str, all_tokens: Iterable[str]) -> list[EventKpi]:
    """``event_kpis`` with the seed's shortcuts, in the seed's order rules.

    ``t_revenue|events`` is ``t_revenue,t_events``; ``all_`` stands for every event
    token (in ``all_tokens``' order): ``all_a|b`` runs the KPIs within each token,
    ``all_a,all_b`` runs the tokens within each KPI.
    """
    tokens = list(all_tokens)
    result: list[EventKpi] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        head, *more = item.split("|")
        event, kpi = _split_head(head)
        kpis = [check_event_kpi(kpi, "event_kpis")]
        kpis += [check_event_kpi(k.strip(), "event_kpis") for k in more]
        for each in tokens if event == "all" else [event]:
            result.extend(EventKpi(each, k) for k in kpis)
    return result


def _split_head(head: str) -> tuple[str, str]:
    for name in _EVENT_NAMES:
        suffix = "_" + name
        if head.endswith(suffix) and len(head) > len(suffix):
            return head[: -len(suffix)], name
    raise KpiError(
        "event_kpis", f"{head!r} is not EVENTTOKEN_KPI (e.g. abc123_revenue or all_events)"
    )


def app_value(name: str, sums: Sums, currency: str) -> Value:
    return APP_KPIS[name](sums, currency)


def event_value(kpi: EventKpi, sums: Sums, currency: str) -> Value:
    return EVENT_KPIS[kpi.kpi](sums, kpi.token, currency)
