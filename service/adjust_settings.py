"""Configuration of the Adjust account side: account connections and per-app bindings.

``[adjust.accounts.NAME]`` is one connection to an Adjust account: its API token
(and optional signature token) as secrets, the base URLs of the APIs it is
reached through (overridable: tests point them at local fakes), which pull back
end it uses, and the account's usual report settings.

``[apps.KEY.adjust]`` binds one app of ``[apps]`` to its Adjust app token, with
the report settings that make pulled numbers agree with Adjust's dashboard.
Each setting has Adjust's own meaning (see the README, "Adjust accounts"), and
every one is always sent explicitly: Adjust has changed its defaults before.

An account's secrets are resolved at load like any other, but only the
``postback-hub adjust ...`` commands (and pulls) require them: the receiver and
the consumers never call Adjust, so a missing API token does not stop them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from yarl import URL

from postback_hub.service.secrets import Secret

AttributionType = Literal["click", "impression", "engaged_ad"]
AttributionSource = Literal["first", "dynamic"]
AttributionStatus = Literal["all", "installed", "reattributed"]
Platform = Literal["ios", "android"]
PullBackend = Literal["report_service", "kpi_service"]

APP_TOKEN = re.compile(r"^[A-Za-z0-9]+$")
AppToken = Annotated[str, StringConstraints(pattern=APP_TOKEN.pattern, max_length=64)]
AccountKey = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,48}$")]
ChannelSlug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_]{0,63}$")]
AdRevenueSource = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Every UTC offset in use somewhere (IANA tz database), including the half and
# quarter hours (+05:30 India, +05:45 Nepal, +08:45 Eucla, +12:45 Chatham).
UTC_OFFSETS = _words(
    """
    -12:00 -11:00 -10:00 -09:30 -09:00 -08:00 -07:00 -06:00 -05:00 -04:00 -03:30 -03:00
    -02:30 -02:00 -01:00 +00:00 +01:00 +02:00 +03:00 +03:30 +04:00 +04:30 +05:00 +05:30 +05:45
    +06:00 +06:30 +07:00 +08:00 +08:45 +09:00 +09:30 +10:00 +10:30 +11:00 +12:00 +12:45
    +13:00 +13:45 +14:00
    """
)
_UTC_OFFSET = re.compile(r"^[+-][0-9]{2}:[0-9]{2}$")

# ISO 4217 currencies in circulation (funds and metals codes left out).
ISO_4217 = _words(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD
    BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB
    EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK
    JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA
    MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK
    PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP
    STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND
    VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL
    """
)


_REATTRIBUTED: dict[str, Literal["all", "false", "true"]] = {
    "all": "all",
    "installed": "false",
    "reattributed": "true",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def checked_utc_offset(value: str) -> str:
    """``value`` if it is ``[+-]HH:MM`` and a real offset; ValueError saying why not."""
    if not _UTC_OFFSET.match(value):
        raise ValueError("write [+-]HH:MM, e.g. +00:00, -03:30, +05:45")
    if value == "-00:00":
        raise ValueError("write +00:00 for UTC")
    if value not in UTC_OFFSETS:
        raise ValueError(f"{value} is not a UTC offset in use anywhere (from -12:00 to +14:00)")
    return value


def checked_base_url(value: str) -> str:
    """An https URL (http only to this machine, for local fakes): tokens never go in clear."""
    try:
        url = URL(value)
    except ValueError:
        raise ValueError("not a URL") from None
    if url.query_string or url.fragment or url.user or url.password:
        raise ValueError("a base URL has no query, fragment or user info")
    local = url.host in {"127.0.0.1", "localhost", "::1"}
    if not url.host or not (url.scheme == "https" or (url.scheme == "http" and local)):
        raise ValueError("use https:// (http:// only to 127.0.0.1 or localhost)")
    return value.rstrip("/")


class ReportSettings(_Strict):
    """The report settings of one app, with Adjust's meanings; all sent explicitly."""

    # Day boundaries of every report: [+-]HH:MM.
    utc_offset: str = "+00:00"
    # Which engagements attribute: required, never Adjust's default (which Adjust changes).
    attribution_types: Annotated[list[AttributionType], Field(min_length=1)]
    # first: the install's source; dynamic: the latest attribution at the activity's time.
    attribution_source: AttributionSource = "dynamic"
    # all users, only installed (never reattributed) users, or only reattributed users.
    attribution_status: AttributionStatus = "all"
    # Ad revenue source slugs counted in revenue metrics; empty: Adjust's selection.
    ad_revenue_sources: list[AdRevenueSource] = Field(default_factory=list)
    # The reporting currency (ISO 4217).
    currency: str = "USD"
    sandbox: bool = False

    @field_validator("utc_offset")
    @classmethod
    def _offset(cls, value: str) -> str:
        return checked_utc_offset(value)

    @field_validator("attribution_types", "ad_revenue_sources")
    @classmethod
    def _no_repeats(cls, values: list[str]) -> list[str]:
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"listed more than once: {', '.join(repeated)}")
        return values

    @field_validator("currency")
    @classmethod
    def _iso_4217(cls, value: str) -> str:
        if value not in ISO_4217:
            hint = "; write it upper-case" if value.upper() in ISO_4217 else ""
            raise ValueError(f"{value!r} is not an ISO 4217 currency code{hint}")
        return value

    def reattributed(self) -> Literal["all", "false", "true"]:
        """Adjust's ``reattributed`` parameter for ``attribution_status``."""
        return _REATTRIBUTED[self.attribution_status]

    def report_fields(self) -> dict[str, object]:
        """The settings by name, comparable between a binding and its account."""
        return {name: getattr(self, name) for name in ReportSettings.model_fields}


class AppBinding(ReportSettings):
    """``[apps.KEY.adjust]``: this app's Adjust app token on an account, and its settings."""

    account: AccountKey
    app_token: AppToken


class AdjustAccount(_Strict):
    """``[adjust.accounts.NAME]``: one connection to an Adjust account."""

    api_token: Secret
    # Needed only for signature (v3) settings such as android_signature_hash.
    signature_token: Secret | None = None
    automation_url: str = "https://settings.adjust.com/api"
    report_service_url: str = "https://automate.adjust.com/reports-service"
    kpi_service_url: str = "https://api.adjust.com/kpis/v1"
    # Which API pulls this account's numbers (the KPI Service is legacy).
    pull_backend: PullBackend = "report_service"
    # The account's usual report settings: `adjust check` names bindings that differ.
    report: ReportSettings | None = None
    request_timeout_s: Annotated[float, Field(gt=0, le=1800)] = 60.0
    # Client-side pacing of requests to Adjust (Adjust limits per source IP).
    rate_limit_per_s: Annotated[float, Field(gt=0, le=50)] = 10.0

    @field_validator("automation_url", "report_service_url", "kpi_service_url")
    @classmethod
    def _https(cls, value: str) -> str:
        return checked_base_url(value)


class AdjustSettings(_Strict):
    """``[adjust]``: the Adjust accounts apps are bound to."""

    accounts: dict[AccountKey, AdjustAccount] = Field(default_factory=dict)
    # Destination name -> the Adjust channel slug of its partner, for `adjust check`
    # ("every enabled destination's partner has an active channel"). X destinations
    # default to "twitter"; a module partner is checked only when named here.
    channels: dict[str, ChannelSlug] = Field(default_factory=dict)
