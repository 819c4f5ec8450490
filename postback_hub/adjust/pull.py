"""One client for Adjust's numbers: the Report Service or the KPI Service v1, per account.

:meth:`PullClient.pull` asks one binding's non-cohort KPIs for a range of days
and returns a :class:`~postback_hub.adjust.pull_parse.Table`; request building
and answer parsing are the pure functions of :mod:`postback_hub.adjust.pull_parse`.
The account's ``pull_backend`` chooses the API.

Transport is :class:`~postback_hub.adjust.http.AdjustHttp`, one per account, so
every call paces itself per account (``rate_limit_per_s``, 10 by default),
retries 429 and 5xx (503, 504 included) and lost answers with jittered backoff
honouring ``Retry-After``, never follows a redirect and scrubs the token from
every message. On top of it this client:

- waits for an answer ``max(request_timeout_s, 300)`` seconds per attempt
  (Adjust support advises long read timeouts; connectors use 300 to 1000 s);
- follows the Report Service's explicit next-page link only when it stays on
  the base URL's scheme, host, port and path, at most ``max_pages`` pages;
- sends the token only in the ``Authorization`` header (``Bearer`` for the
  Report Service, ``Token token=`` for the KPI Service), never in a URL.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from yarl import URL

from postback_hub.adjust.http import AdjustHttp, AdjustHttpError, Answer, Pacer, RetryPolicy
from postback_hub.adjust.pull_parse import (
    Binding,
    EventSlug,
    Format,
    PullProblem,
    Query,
    Table,
    kpi_service_params,
    kpi_service_path,
    parse_kpi_csv,
    parse_kpi_json,
    parse_report_csv,
    parse_report_json,
    report_service_events,
    report_service_params,
    safe,
)
from postback_hub.service.adjust_settings import AdjustAccount, AppBinding

DEFAULT_MAX_PAGES = 100
PULL_TIMEOUT_FLOOR_S = 300.0


class PullError(Exception):
    """A pull that did not succeed; the message says why and is safe to print."""


def binding_of(app: str, binding: AppBinding, *, sessions: bool = False) -> Binding:
    """The pull's view of ``[apps.APP.adjust]`` (attribution status in Adjust's words)."""
    return Binding(
        app=app,
        app_token=binding.app_token,
        utc_offset=binding.utc_offset,
        attribution_types=tuple(binding.attribution_types),
        attribution_source=binding.attribution_source,
        attribution_status=binding.reattributed(),
        currency=binding.currency,
        ad_revenue_sources=tuple(binding.ad_revenue_sources),
        sandbox=binding.sandbox,
        sessions=sessions,
    )


def same_place(base: URL, link: URL) -> bool:
    """Is ``link`` on ``base``'s scheme, host and port, under its path?"""
    prefix = base.path.rstrip("/") + "/"
    return (link.scheme, link.host, link.port) == (base.scheme, base.host, base.port) and (
        link.path + "/"
    ).startswith(prefix)


@dataclass
class _Connection:
    http: AdjustHttp
    base: URL


class PullClient:
    """Pulls Adjust's numbers for bindings of any configured account.

    One per process (it holds an aiohttp session and one pacer per account);
    ``async with PullClient() as client`` or call :meth:`close`.
    """

    def __init__(
        self,
        *,
        policy: RetryPolicy | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy(attempts=6, backoff_initial_s=1.0, backoff_max_s=60.0)
        self.max_pages = max_pages
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._session: aiohttp.ClientSession | None = None
        self._connections: dict[tuple[str, str], _Connection] = {}
        self._pacers: dict[str, Pacer] = {}

    async def __aenter__(self) -> PullClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _connection(self, name: str, account: AdjustAccount, api: str) -> _Connection:
        key = (name, api)
        found = self._connections.get(key)
        if found is not None:
            return found
        if self._session is None:
            # No cookies: nothing an answer sets rides along on the next request.
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        pacer = self._pacers.get(name)
        if pacer is None:  # one budget per account, whichever of its APIs is called
            pacer = self._pacers[name] = Pacer(account.rate_limit_per_s, sleep=self._sleep)
        token = account.api_token.reveal()
        if api == "report_service":
            base_url, credentials = account.report_service_url, f"Bearer {token}"
            service = "Adjust Report Service"
        else:
            base_url, credentials = account.kpi_service_url, f"Token token={token}"
            service = "Adjust KPI Service"
        http = AdjustHttp(
            session=self._session,
            base_url=base_url,
            credentials={"Authorization": credentials},
            service=service,
            secrets=(token,),
            # Reports can take minutes to compute (Adjust support advises long read
            # timeouts; connectors use 300-1000 s): never less than PULL_TIMEOUT_FLOOR_S.
            timeout_s=max(account.request_timeout_s, PULL_TIMEOUT_FLOOR_S),
            policy=self.policy,
            pacer=pacer,
            sleep=self._sleep,
            rng=self._rng,
        )
        found = self._connections[key] = _Connection(http, URL(base_url.rstrip("/")))
        return found

    async def pull(
        self,
        account_name: str,
        account: AdjustAccount,
        binding: Binding,
        query: Query,
        *,
        fmt: Format = "json",
        event_tokens: Sequence[str] = (),
    ) -> Table:
        """Adjust's non-cohort KPIs of ``binding`` for ``query``'s days.

        The Report Service lists the app's events itself (``/events``) and asks
        for every one; the KPI Service asks for ``event_tokens`` (empty: every
        event the app defines, through its ``all_`` shortcut).
        """
        try:
            if account.pull_backend == "report_service":
                connection = self._connection(account_name, account, "report_service")
                return await self._report_service(connection, binding, query, fmt)
            connection = self._connection(account_name, account, "kpi_service")
            return await self._kpi_service(connection, binding, query, fmt, event_tokens)
        except AdjustHttpError as exc:
            raise PullError(str(exc)) from None
        except PullProblem as exc:
            raise PullError(f"{account_name}: {exc}") from None

    async def _report_service(
        self, connection: _Connection, binding: Binding, query: Query, fmt: Format
    ) -> Table:
        http = connection.http
        answer = await http.request("GET", "/events", params={"app_token__in": binding.app_token})
        events: list[EventSlug] = (
            [] if answer.status == 204 else report_service_events(answer.body, binding.app_token)
        )
        params = dict(report_service_params(binding, query, events))
        table = Table(query.grouping, event_groups={e.key: e.tokens for e in events})
        table.currency = binding.currency
        if fmt == "csv":
            answer = await http.request(
                "GET", "/csv_report", params=params, headers={"Accept": "text/csv"}
            )
            if answer.status != 204:
                table.merge(parse_report_csv(answer.body, query, events))
            return table
        path, pages = "/report", 0
        next_params: Mapping[str, str] | None = params
        while True:
            pages += 1
            if pages > self.max_pages:
                raise PullError(
                    f"Adjust's report has more than {self.max_pages} pages: pull fewer days"
                )
            answer = await http.request("GET", path, params=next_params)
            if answer.status == 204:
                return table
            page, link = parse_report_json(answer.body, query, events)
            table.merge(page)
            if link is None:
                return table
            path, next_params = self._next_page(connection, answer, link)

    def _next_page(
        self, connection: _Connection, answer: Answer, link: str
    ) -> tuple[str, dict[str, str]]:
        try:
            target = connection.base.join(URL(link))
        except ValueError:
            raise PullError("Adjust's next-page link is not a URL") from None
        if not same_place(connection.base, target):
            raise PullError(
                f"Adjust's next-page link points away from the base URL (to host "
                f"{safe(target.host or '?', 100)}): not followed with the token"
            )
        path = target.path[len(connection.base.path.rstrip("/")) :]
        return path, dict(target.query)

    async def _kpi_service(
        self,
        connection: _Connection,
        binding: Binding,
        query: Query,
        fmt: Format,
        event_tokens: Sequence[str],
        endpoint: str = "overview",
        tracker: str | None = None,
    ) -> Table:
        path = kpi_service_path(binding, fmt, endpoint, tracker)
        params = dict(kpi_service_params(binding, query, event_tokens, endpoint))
        accept = "text/csv" if fmt == "csv" else "application/json"
        answer = await connection.http.request(
            "GET", path, params=params, headers={"Accept": accept}
        )
        if answer.status == 204:
            return Table(query.grouping)
        if fmt == "csv":
            return parse_kpi_csv(answer.body, query)
        return parse_kpi_json(answer.body, query, endpoint)

    async def kpi_events(
        self,
        account_name: str,
        account: AdjustAccount,
        binding: Binding,
        query: Query,
        *,
        event_tokens: Sequence[str] = (),
        tracker: str | None = None,
    ) -> Table:
        """The KPI Service v1 events endpoint: ``events:TOKEN`` and ``revenue:TOKEN``."""
        connection = self._connection(account_name, account, "kpi_service")
        try:
            return await self._kpi_service(
                connection, binding, query, "json", event_tokens, "events", tracker
            )
        except AdjustHttpError as exc:
            raise PullError(str(exc)) from None
        except PullProblem as exc:
            raise PullError(f"{account_name}: {exc}") from None

    async def kpi_tracker(
        self,
        account_name: str,
        account: AdjustAccount,
        binding: Binding,
        query: Query,
        tracker: str,
    ) -> Table:
        """The KPI Service v1 overview below one tracker (the trackers endpoint)."""
        connection = self._connection(account_name, account, "kpi_service")
        try:
            return await self._kpi_service(connection, binding, query, "json", (), tracker=tracker)
        except AdjustHttpError as exc:
            raise PullError(str(exc)) from None
        except PullProblem as exc:
            raise PullError(f"{account_name}: {exc}") from None
