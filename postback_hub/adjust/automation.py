"""Adjust's App Automation API: look apps up, list active channels, create or update
apps, and follow the settings-copy ticket to its end.

Calls (under the account's ``automation_url``, ``https://settings.adjust.com/api``):

- ``GET /app/{token}`` and ``GET /app?store_id=&platform=``: an app, or None (404);
- ``GET /app/{token}/channels``: slugs of channels with active trackers;
- ``POST /app``: create from a template app (``template_app_token``) or update an
  existing app (``force_update``); the answer names a ticket;
- ``GET /status/{ticket}``: NEW, OPENED, then COMPLETED or FAILED, with per-section
  successes and failures.

Every call carries ``AdjustAuthorization: Token ...``; ``SignatureAuthorization:
Token ...`` is added to the channel listing (as Adjust's example does) when the
account has a signature token, and is required for ``android_signature_hash``.

``channel_setup`` is replaced whole by Adjust, never merged: :func:`channel_setup_diff`
shows what a call would change against the app's current setup. The request
building and answer parsing are pure functions; :class:`AutomationClient` only
does the I/O, through :class:`~postback_hub.adjust.http.AdjustHttp`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import aiohttp

from postback_hub.adjust.http import MASK, AdjustHttp, AdjustHttpError, Answer, Pacer, RetryPolicy
from postback_hub.service.adjust_settings import APP_TOKEN, AdjustAccount

SERVICE = "Adjust App Automation API"
PLATFORMS = ("ios", "android")
TicketState = Literal["NEW", "OPENED", "COMPLETED", "FAILED"]
_STATES: frozenset[str] = frozenset({"NEW", "OPENED", "COMPLETED", "FAILED"})


class UnexpectedAnswer(AdjustHttpError):
    """A 2xx answer whose shape is not what Adjust documents."""


@dataclass(frozen=True, slots=True)
class AdjustApp:
    """An app as Adjust describes it (``GET /app...``)."""

    app_token: str
    name: str
    platform: str
    store_id: str
    channel_setup: dict[str, Any]
    cross_promo_token: str | None = None
    android_signature_hash: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "adjust_app_token": self.app_token,
            "name": self.name,
            "platform": self.platform,
            "store_id": self.store_id,
            "channel_setup": self.channel_setup,
            "cross_promo_token": self.cross_promo_token,
            "android_signature_hash": self.android_signature_hash,
        }


@dataclass(frozen=True, slots=True)
class CreatedApp:
    """The answer to ``POST /app``: the app's token and the ticket of the settings copy."""

    app_token: str
    name: str
    store_id: str
    bundle_id: str | None
    sk_app_id: int | None
    ticket_token: str | None


@dataclass(frozen=True, slots=True)
class Section:
    """One section of a ticket (events, partners, trackers, ...)."""

    name: str
    successes: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    detail: str | None = None  # why a section failed or did not start


@dataclass(frozen=True, slots=True)
class TicketStatus:
    status: TicketState
    kind: str | None
    sections: tuple[Section, ...]

    @property
    def finished(self) -> bool:
        return self.status in ("COMPLETED", "FAILED")

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "kind": self.kind,
            "sections": {
                s.name: {
                    "successes": list(s.successes),
                    "failures": list(s.failures),
                    **({"detail": s.detail} if s.detail else {}),
                }
                for s in self.sections
            },
        }


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """The body of ``POST /app``, checked before anything is sent.

    A new app copies its settings from ``template_app_token``; an existing app is
    updated with ``force_update``. ``channel_setup`` is sent whole when given.
    """

    name: str
    store_id: str
    platform: str
    bundle_id: str
    template_app_token: str | None = None
    force_update: bool = False
    channel_setup: dict[str, Any] | None = None
    editors: tuple[str, ...] = ()
    android_signature_hash: str | None = None

    def __post_init__(self) -> None:
        for name in ("name", "store_id", "bundle_id"):
            if not getattr(self, name).strip():
                raise ValueError(f"{name} must not be empty")
        if self.platform not in PLATFORMS:
            raise ValueError(f"platform must be one of {', '.join(PLATFORMS)}")
        if self.template_app_token is not None and not APP_TOKEN.match(self.template_app_token):
            raise ValueError("template_app_token must be letters and digits")
        if self.template_app_token is None and not self.force_update:
            raise ValueError("give template_app_token (a new app) or force_update (an update)")
        if self.channel_setup is not None:
            checked_channel_setup(self.channel_setup)

    @property
    def needs_signature(self) -> bool:
        return self.android_signature_hash is not None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "store_id": self.store_id,
            "platform": self.platform,
            "bundle_id": self.bundle_id,
        }
        if self.template_app_token is not None:
            body["template_app_token"] = self.template_app_token
        if self.force_update:
            body["force_update"] = True
        if self.channel_setup is not None:
            body["channel_setup"] = self.channel_setup
        if self.editors:
            body["editors"] = ",".join(self.editors)
        if self.android_signature_hash is not None:
            body["android_signature_hash"] = self.android_signature_hash
        return body


def checked_channel_setup(setup: Any) -> dict[str, dict[str, Any]]:
    """``setup`` if it is ``{channel slug: {parameter: value}}``; ValueError otherwise."""
    if not isinstance(setup, dict):
        raise ValueError("channel_setup must be a table of channels")
    for channel, parameters in setup.items():
        if not isinstance(parameters, dict):
            raise ValueError(f"channel_setup.{channel} must be a table of parameters")
    return setup


def parse_app(data: Any) -> AdjustApp:
    """An app from Adjust's JSON; :class:`UnexpectedAnswer` when fields are missing."""
    if not isinstance(data, dict):
        raise UnexpectedAnswer(f"{SERVICE}: an app answer is not a JSON object")
    try:
        token, name, platform, store_id = (
            data["adjust_app_token"],
            data.get("name") or "",
            data["platform"],
            data["store_id"],
        )
    except KeyError as exc:
        raise UnexpectedAnswer(f"{SERVICE}: an app answer has no {exc.args[0]}") from None
    setup = data.get("channel_setup") or {}
    if not all(isinstance(v, str) for v in (token, name, platform, store_id)) or not isinstance(
        setup, dict
    ):
        raise UnexpectedAnswer(f"{SERVICE}: an app answer has fields of the wrong type")
    return AdjustApp(
        token,
        name,
        platform,
        store_id,
        setup,
        _optional_str(data.get("cross_promo_token")),
        _optional_str(data.get("android_signature_hash")),
    )


def parse_created(data: Any) -> CreatedApp:
    if not isinstance(data, dict) or not isinstance(data.get("adjust_app_token"), str):
        raise UnexpectedAnswer(f"{SERVICE}: the answer to POST /app names no adjust_app_token")
    sk_app_id = data.get("sk_app_id")
    return CreatedApp(
        data["adjust_app_token"],
        str(data.get("name") or ""),
        str(data.get("store_id") or ""),
        _optional_str(data.get("bundle_id")),
        sk_app_id if isinstance(sk_app_id, int) else None,
        _optional_str(data.get("ticket_token")),
    )


def parse_channels(data: Any) -> list[str]:
    """Channel slugs: Adjust documents ``{"channels": [...]}`` and shows a bare list."""
    if isinstance(data, dict):
        data = data.get("channels")
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise UnexpectedAnswer(f"{SERVICE}: the channel list is not a list of slugs")
    return sorted(set(data))


def parse_ticket(data: Any) -> TicketStatus:
    """A ticket's status; Adjust writes it upper- or lower-case."""
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        raise UnexpectedAnswer(f"{SERVICE}: a ticket answer has no status")
    status = data["status"].upper()
    if status not in _STATES:
        raise UnexpectedAnswer(f"{SERVICE}: unknown ticket status {data['status'][:20]!r}")
    result = data.get("result") or {}
    sections: list[Section] = []
    for name, section in result.items() if isinstance(result, dict) else []:
        if not isinstance(section, dict):
            continue
        detail = section.get("detail")
        sections.append(
            Section(
                str(name),
                _strings(section.get("successes")),
                _strings(section.get("failures")),
                detail if isinstance(detail, str) else None,
            )
        )
    kind = data.get("kind")
    return TicketStatus(status, kind if isinstance(kind, str) else None, tuple(sections))


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item if isinstance(item, str) else json.dumps(item) for item in value)


def _flatten(setup: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in sorted(setup.items()):
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def channel_setup_diff(current: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What sending ``new`` changes in ``current``, one line per parameter.

    ``+ key = value`` is added, ``- key = value`` removed (Adjust replaces the whole
    setup, so a parameter left out is dropped), ``~ key: old -> new`` changed.
    """
    before, after = dict(_flatten(current)), dict(_flatten(new))
    lines: list[str] = []
    for key in sorted(before.keys() | after.keys()):
        if key not in after:
            lines.append(f"- {key} = {json.dumps(before[key])}")
        elif key not in before:
            lines.append(f"+ {key} = {json.dumps(after[key])}")
        elif before[key] != after[key]:
            lines.append(f"~ {key}: {json.dumps(before[key])} -> {json.dumps(after[key])}")
    return lines


def masked_request(base_url: str, request: CreateRequest, *, signature: bool) -> dict[str, Any]:
    """The exact ``POST /app`` that would be sent, credentials masked (for ``--dry-run``)."""
    headers = {"AdjustAuthorization": f"Token {MASK}", "Content-Type": "application/json"}
    if signature:
        headers["SignatureAuthorization"] = f"Token {MASK}"
    return {
        "method": "POST",
        "url": f"{base_url.rstrip('/')}/app",
        "headers": headers,
        "body": request.body(),
    }


def _explainer(account: str, token_source: str) -> Callable[[Answer, str], str]:
    def explain(answer: Answer, body: str) -> str:
        what = f"{answer.method} {answer.path}"
        said = f" (Adjust says: {body})" if body else ""
        subject = _subject(answer.path)
        if answer.status == 401:
            return (
                f"{what}: 401, the API token of account {account} is invalid or was reset; "
                f"put the current one (Adjust: Account settings, My profile) in {token_source}"
            )
        if answer.status == 403:
            return (
                f"{what}: 403, this Adjust user cannot see or change {subject}; ask an admin "
                f"of account {account} for access, or check the signature token{said}"
            )
        if answer.status == 404:
            return f"{what}: 404, {subject} does not exist on account {account}{said}"
        if answer.status == 400:
            return f"{what}: 400, Adjust refused the request as invalid; fix what it names{said}"
        return f"{what}: {answer.status}, unexpected answer{said}"

    return explain


def _subject(path: str) -> str:
    parts = path.strip("/").split("/")
    if len(parts) >= 2 and parts[0] == "app":
        return f"app {parts[1]}"
    if len(parts) >= 2 and parts[0] == "status":
        return f"ticket {parts[1]}"
    return "this app"


@dataclass
class AutomationClient:
    """The App Automation API for one account. Build with :meth:`for_account`."""

    http: AdjustHttp
    signature_token: str | None = None
    poll_interval_s: float = 2.0
    sleep: Callable[[float], Awaitable[None]] | None = None
    _signature_headers: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.signature_token:
            self._signature_headers = {"SignatureAuthorization": f"Token {self.signature_token}"}

    @classmethod
    def for_account(
        cls,
        session: aiohttp.ClientSession,
        name: str,
        account: AdjustAccount,
        *,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        poll_interval_s: float = 2.0,
    ) -> AutomationClient:
        """A client with the account's tokens; raises UnresolvedSecret when unreadable."""
        token = account.api_token.reveal()
        signature = account.signature_token.reveal() if account.signature_token else None
        options: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
        http = AdjustHttp(
            session,
            account.automation_url,
            {"AdjustAuthorization": f"Token {token}"},
            service=SERVICE,
            secrets=[s for s in (token, signature) if s],
            timeout_s=account.request_timeout_s,
            policy=policy or RetryPolicy(),
            pacer=Pacer(account.rate_limit_per_s),
            explain=_explainer(name, account.api_token.source),
            **options,
        )
        return cls(http, signature, poll_interval_s, sleep)

    async def app_by_token(self, app_token: str) -> AdjustApp | None:
        """The app with this token, or None when Adjust answers 404."""
        _check_token(app_token)
        answer = await self.http.request("GET", f"/app/{app_token}", accept=(404,))
        return None if answer.status == 404 else parse_app(answer.json())

    async def app_by_store_id(self, store_id: str, platform: str) -> AdjustApp | None:
        """The app with this store id on this platform, or None when Adjust answers 404."""
        if platform not in PLATFORMS:
            raise ValueError(f"platform must be one of {', '.join(PLATFORMS)}")
        answer = await self.http.request(
            "GET", "/app", params={"store_id": store_id, "platform": platform}, accept=(404,)
        )
        return None if answer.status == 404 else parse_app(answer.json())

    async def channels(self, app_token: str) -> list[str]:
        """Slugs of the channels with active trackers for this app (sorted)."""
        _check_token(app_token)
        answer = await self.http.request(
            "GET", f"/app/{app_token}/channels", headers=self._signature_headers
        )
        return parse_channels(answer.json())

    async def create(self, request: CreateRequest) -> CreatedApp:
        """``POST /app``; a request with ``android_signature_hash`` needs the signature token."""
        if request.needs_signature and not self._signature_headers:
            raise AdjustHttpError(
                "android_signature_hash needs the account's signature_token; add it to the account"
            )
        headers = self._signature_headers if request.needs_signature else None
        answer = await self.http.request("POST", "/app", json_body=request.body(), headers=headers)
        return parse_created(answer.json())

    async def ticket(self, ticket_token: str) -> TicketStatus:
        answer = await self.http.request("GET", f"/status/{quote(ticket_token, safe='-')}")
        return parse_ticket(answer.json())

    async def follow(
        self,
        ticket_token: str,
        *,
        max_polls: int = 300,
        on_status: Callable[[TicketStatus], None] | None = None,
    ) -> TicketStatus:
        """Poll the ticket until COMPLETED or FAILED; ``on_status`` sees each change.

        Gives up with :class:`AdjustHttpError` after ``max_polls`` polls.
        """
        sleep = self.sleep or self.http.sleep
        last: TicketStatus | None = None
        for _ in range(max_polls):
            status = await self.ticket(ticket_token)
            if on_status is not None and (last is None or status != last):
                on_status(status)
            if status.finished:
                return status
            last = status
            await sleep(self.poll_interval_s)
        raise AdjustHttpError(
            f"ticket {ticket_token} is still {last.status if last else 'unknown'} after "
            f"{max_polls} polls; check it later with Adjust"
        )


def _check_token(app_token: str) -> None:
    if not APP_TOKEN.match(app_token):
        raise ValueError("an app token is letters and digits only")
