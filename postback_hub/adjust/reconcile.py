"""Reconciliation: our counts against Adjust's, per app and local day. Pure core.

Both sides come as a :data:`Counts` table keyed by (local day, network,
country, KPI) in the binding's UTC offset. :func:`compare` lines them up
overall, per network and per country, and gives each line a verdict under a
:class:`Tolerance` and, for a gap, the likely causes the :class:`Evidence`
can tell:

- ``no_callback``: we received none of this KPI in the whole range while Adjust
  counts some (no callback configured for that activity or event);
- ``rejected``: callbacks of this kind we answered 4xx that day (Adjust drops
  a callback answered 4xx), with the count per reason;
- ``sandbox``: callbacks of this KPI that arrived as sandbox that day (Adjust's
  numbers here are production);
- ``incomplete``: the day is inside Adjust's retry window (24 h after its end),
  so late retries may still come;
- ``duplicates``: ours exceeds Adjust's: activities Adjust counted once that we
  counted more than once (our de-duplication is by fingerprint);
- ``settings``: the binding's report settings differ from the account's (or
  from what Adjust says it applied).

A gap with no cause listed is unexplained: something acknowledged may be lost.
The I/O (pulling, reading the store, storing results) is in
:mod:`postback_hub.adjust.reconcile_run`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from postback_hub.adjust.pull_parse import ACTIVITY_KPIS, Table
from postback_hub.service.record import decimal_text

# (local day, network, country, KPI)
CountKey = tuple[date, str, str, str]
Counts = Mapping[CountKey, Decimal]
Scope = Literal["all", "network", "country"]
Verdict = Literal["match", "within", "missing", "extra"]
RETRY_WINDOW = timedelta(hours=24)
SCOPES: tuple[Scope, ...] = ("all", "network", "country")


@dataclass(frozen=True, slots=True)
class Tolerance:
    """A gap is beyond tolerance when it is more than ``ratio`` of Adjust's count AND at
    least ``minimum`` (small counts wobble by one or two without meaning anything)."""

    ratio: Decimal = Decimal("0.01")
    minimum: Decimal = Decimal(5)

    def beyond(self, ours: Decimal, theirs: Decimal) -> bool:
        gap = abs(ours - theirs)
        return gap >= self.minimum and gap > self.ratio * abs(theirs)


@dataclass(frozen=True, slots=True)
class Cause:
    code: str  # no_callback, rejected, sandbox, incomplete, duplicates, settings
    text: str


@dataclass(frozen=True, slots=True)
class Line:
    """One comparison: ``value`` is the network or country ("" for ``all``)."""

    day: date
    kpi: str
    scope: Scope
    value: str
    ours: Decimal
    theirs: Decimal
    verdict: Verdict
    causes: tuple[Cause, ...] = ()

    @property
    def difference(self) -> Decimal:
        return self.ours - self.theirs

    @property
    def ratio(self) -> Decimal | None:
        if self.theirs == 0:
            return None
        return (self.ours / self.theirs).quantize(Decimal("0.0001"), ROUND_HALF_EVEN)

    @property
    def gap(self) -> bool:
        return self.verdict in ("missing", "extra")


@dataclass(frozen=True, slots=True)
class Evidence:
    """What else the data says about a day. Every mapping may be empty."""

    now: datetime
    utc_offset_s: int
    # (local day, activity kind) -> reason -> callbacks we answered 4xx
    rejections: Mapping[tuple[date, str], Mapping[str, int]] = field(default_factory=dict)
    # (local day, KPI) -> our sandbox count
    sandbox: Mapping[tuple[date, str], Decimal] = field(default_factory=dict)
    # Human-readable differences between the binding's settings and the account's
    settings: tuple[str, ...] = ()
    retry_window: timedelta = RETRY_WINDOW

    def complete_at(self, day: date) -> datetime:
        """When Adjust stops retrying the day's callbacks (24 h after its local end)."""
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        return end - timedelta(seconds=self.utc_offset_s) + self.retry_window


def kind_of(kpi: str) -> str:
    """The activity kind a KPI counts (``event`` for ``events:``/``revenue:`` KPIs)."""
    if kpi in ACTIVITY_KPIS:
        return ACTIVITY_KPIS[kpi]
    return "event"


def table_counts(table: Table) -> dict[CountKey, Decimal]:
    """Adjust's table (grouped by day, network, country) as :data:`Counts`."""
    if table.grouping != ("day", "network", "country"):
        raise ValueError("reconciliation needs Adjust's numbers by day, network and country")
    counts: dict[CountKey, Decimal] = {}
    days: dict[str, date] = {}
    for (dims, kpi), value in table.values.items():
        day = days.get(dims[0])
        if day is None:
            day = days[dims[0]] = date.fromisoformat(dims[0])
        key = (day, dims[1], dims[2], kpi)
        found = counts.get(key)
        counts[key] = value if found is None else found + value
    return counts


def scoped(counts: Counts) -> dict[tuple[date, str, Scope, str], Decimal]:
    """Totals per (day, KPI) overall, per network and per country (zeros left out)."""
    out: dict[tuple[date, str, Scope, str], Decimal] = {}
    get = out.get
    for (day, network, country, kpi), value in counts.items():
        if not value:
            continue
        for key in (
            (day, kpi, "all", ""),
            (day, kpi, "network", network),
            (day, kpi, "country", country),
        ):
            found = get(key)
            out[key] = value if found is None else found + value
    return out


def compare(
    ours: Counts,
    theirs: Counts,
    tolerance: Tolerance,
    evidence: Evidence,
    *,
    kpis: Iterable[str] | None = None,
) -> list[Line]:
    """Every (day, KPI, scope, value) either side counts, with verdict and causes.

    ``kpis`` limits the comparison (None: every KPI Adjust reported, and every
    activity KPI we have). Lines come sorted by day, KPI, scope and value.
    """
    mine, adjusts = scoped(ours), scoped(theirs)
    keys = set(mine) | set(adjusts)
    if kpis is not None:
        wanted = set(kpis)
        keys = {k for k in keys if k[1] in wanted}
    received = {kpi for (_, _, _, kpi), value in ours.items() if value}
    order = {scope: index for index, scope in enumerate(SCOPES)}
    lines: list[Line] = []
    for key in sorted(keys, key=lambda k: (k[0], k[1], order[k[2]], k[3])):
        day, kpi, scope, value = key
        ours_value = mine.get(key, Decimal(0))
        theirs_value = adjusts.get(key, Decimal(0))
        if not ours_value and not theirs_value:
            continue  # Adjust answers zeros for every KPI asked: nothing to compare
        verdict = verdict_of(ours_value, theirs_value, tolerance)
        causes = (
            causes_of(day, kpi, ours_value, theirs_value, kpi in received, evidence)
            if verdict in ("missing", "extra")
            else ()
        )
        lines.append(Line(day, kpi, scope, value, ours_value, theirs_value, verdict, causes))
    return lines


def verdict_of(ours: Decimal, theirs: Decimal, tolerance: Tolerance) -> Verdict:
    if ours == theirs:
        return "match"
    if not tolerance.beyond(ours, theirs):
        return "within"
    return "missing" if ours < theirs else "extra"


def causes_of(
    day: date, kpi: str, ours: Decimal, theirs: Decimal, received: bool, evidence: Evidence
) -> tuple[Cause, ...]:
    """The likely causes of one gap, most telling first."""
    causes: list[Cause] = []
    kind = kind_of(kpi)
    if ours < theirs:
        if not received:
            causes.append(
                Cause(
                    "no_callback",
                    f"no {kpi} callback received in the whole range while Adjust counts "
                    f"{_number(theirs)}: is a callback configured for it?",
                )
            )
        reasons = evidence.rejections.get((day, kind), {})
        if reasons:
            detail = ", ".join(
                f"{reason or 'unknown'} {n}" for reason, n in sorted(reasons.items())
            )
            causes.append(
                Cause(
                    "rejected",
                    f"{sum(reasons.values())} {kind} callbacks answered 4xx that day ({detail})",
                )
            )
        sandbox = evidence.sandbox.get((day, kpi), Decimal(0))
        if sandbox:
            causes.append(
                Cause(
                    "sandbox", f"{_number(sandbox)} arrived as sandbox (Adjust counts production)"
                )
            )
    else:
        causes.append(
            Cause(
                "duplicates",
                f"ours exceeds Adjust's by {_number(ours - theirs)}: "
                "duplicates Adjust counted once",
            )
        )
    complete = evidence.complete_at(day)
    if evidence.now < complete:
        causes.append(
            Cause(
                "incomplete",
                f"day not complete yet: Adjust retries callbacks until "
                f"{complete.strftime('%Y-%m-%dT%H:%MZ')}",
            )
        )
    if evidence.settings:
        causes.append(Cause("settings", "settings differ: " + "; ".join(evidence.settings)))
    return tuple(causes)


def setting_differences(
    binding: Mapping[str, object], other: Mapping[str, object], other_name: str
) -> tuple[str, ...]:
    """``name: binding X, OTHER Y`` for each setting both name with different values."""
    out: list[str] = []
    for name in sorted(set(binding) & set(other)):
        mine, theirs = binding[name], other[name]
        if _setting(mine) != _setting(theirs):
            out.append(f"{name}: binding {_setting(mine)}, {other_name} {_setting(theirs)}")
    return tuple(out)


def _setting(value: object) -> str:
    if isinstance(value, list | tuple):
        return ",".join(sorted(str(v) for v in value)) or "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def beyond_tolerance(lines: Sequence[Line]) -> list[Line]:
    return [line for line in lines if line.gap]


def _number(value: Decimal) -> str:
    return decimal_text(value.normalize() if value == value.to_integral_value() else value)


def number_text(value: Decimal) -> str:
    """A count or amount as printed: integers without a fraction, amounts exactly."""
    if value == value.to_integral_value():
        return str(int(value))
    return decimal_text(value)


HEADER = (
    "day",
    "kpi",
    "scope",
    "value",
    "ours",
    "adjust",
    "difference",
    "ratio",
    "verdict",
    "cause",
)


def rows(lines: Sequence[Line]) -> list[tuple[str, ...]]:
    """The table's cells, one tuple per line (see :data:`HEADER`)."""
    return [
        (
            line.day.isoformat(),
            line.kpi,
            line.scope,
            line.value or "-",
            number_text(line.ours),
            number_text(line.theirs),
            ("+" if line.difference > 0 else "") + number_text(line.difference),
            "-" if line.ratio is None else f"{line.ratio:.4f}",
            line.verdict,
            " | ".join(cause.text for cause in line.causes) or ("unexplained" if line.gap else ""),
        )
        for line in lines
    ]


def render(lines: Sequence[Line]) -> str:
    """A plain-text table, columns aligned."""
    cells = [HEADER, *rows(lines)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER) - 1)]
    out = []
    for row in cells:
        left = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        out.append(f"{left}  {row[-1]}".rstrip())
    return "\n".join(out) + "\n"
