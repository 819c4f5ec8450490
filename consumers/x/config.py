"""Configuration of X's mobile app conversion API: per-app links, windows, credentials.
Registered as destination type ``x``. X's conversion types and window rules live here
and only here (the destination, the tags file and the commands apply these)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from postback_hub.consumers.config import HttpDestination
from postback_hub.service.secrets import Secret


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ConversionType = Literal[
    "PURCHASE",
    "SIGN_UP",
    "INSTALL",
    "RE_ENGAGE",
    "UPDATE",
    "TUTORIAL_COMPLETE",
    "RESERVATION",
    "ADD_TO_CART",
    "ADD_TO_WISHLIST",
    "LOGIN",
    "CHECKOUT_INITIATED",
    "SEARCH",
    "LEVEL_ACHIEVED",
    "ACHIEVEMENT_UNLOCKED",
    "CONTENT_VIEW",
    "SHARE",
    "INVITE",
    "ADDED_PAYMENT_INFO",
    "SPENT_CREDITS",
    "RATED",
]
CONVERSION_TYPES: tuple[str, ...] = get_args(ConversionType)
CLICK_WINDOWS = (1, 7, 14, 30)
VIEW_THROUGH_WINDOWS = (0, 1, 7, 14, 30)


def checked_window(name: str, days: object, allowed: tuple[int, ...]) -> int:
    """``days`` when X accepts it as a window (one of ``allowed``), else ValueError."""
    if isinstance(days, bool) or not isinstance(days, int) or days not in allowed:
        raise ValueError(f"{name} {days!r} is not one of {allowed}")
    return days


def checked_windows(
    click: object, view: object, names: tuple[str, str] = ("click window", "view-through window")
) -> tuple[int, int]:
    """(click_window, view_through_window) as X accepts them, or ValueError saying why not:
    each one of X's values, and the click window at least the view-through window."""
    click_days = checked_window(names[0], click, CLICK_WINDOWS)
    view_days = checked_window(names[1], view, VIEW_THROUGH_WINDOWS)
    if click_days < view_days:
        raise ValueError(
            f"the click window ({click_days}) must be >= the view-through window ({view_days})"
        )
    return click_days, view_days


def window_bucket(hours: int, buckets: tuple[int, ...]) -> int:
    """Hours rounded up to X's day buckets: 2..7 days -> 7, 8..14 -> 14, 15..30 -> 30."""
    days = -(-hours // 24)  # ceiling
    for bucket in buckets:
        if days <= bucket:
            return bucket
    raise ValueError(f"{hours} hours is longer than X's longest window ({buckets[-1]} days)")


class XWindows(_Strict):
    """Attribution windows of one conversion type: days (X's values) or hours (rounded up)."""

    click_days: int | None = None
    click_hours: Annotated[int, Field(ge=1)] | None = None
    view_through_days: int | None = None
    view_through_hours: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if self.click_days is not None and self.click_hours is not None:
            raise ValueError("give click_days or click_hours, not both")
        if self.view_through_days is not None and self.view_through_hours is not None:
            raise ValueError("give view_through_days or view_through_hours, not both")
        # Hours always round to one of X's values; days are checked as given.
        checked_windows(*self.resolved(), names=("click_days", "view_through_days"))
        return self

    def resolved(self) -> tuple[int, int]:
        """(click_window, view_through_window) in X's day buckets; X's defaults are 14 and 1."""
        if self.click_hours is not None:
            click = window_bucket(self.click_hours, CLICK_WINDOWS)
        else:
            click = self.click_days if self.click_days is not None else 14
        if self.view_through_hours is not None:
            view = (
                0
                if self.view_through_hours == 0
                else window_bucket(self.view_through_hours, VIEW_THROUGH_WINDOWS)
            )
        else:
            view = self.view_through_days if self.view_through_days is not None else 1
        return click, view


class XApp(_Strict):
    """One app's link to X's mobile app conversion tracking."""

    app_id: str  # the store id X knows the app by: 333903271 or com.example.app
    os_type: Literal["IOS", "ANDROID"]
    account_id: str | None = None  # the advertiser account (event-tags sync)
    consumer_key: Secret
    consumer_secret: Secret
    access_token: Secret
    access_token_secret: Secret
    # As X issues it: base64. The development key hashes sandbox callbacks.
    hmac_key: Secret
    hmac_key_development: Secret | None = None
    # Sandbox callbacks go to this base URL (with the development key), or nowhere.
    sandbox_base_url: str | None = None
    # Device id normalisation before hashing (unconfirmed by X): default as reported.
    normalisation: Literal["as_reported", "lower", "upper", "lower_no_hyphens"] = "as_reported"
    send_extra_device_ids: bool = False
    # Adjust event token -> conversion type. Unmapped events are not sent.
    event_conversions: dict[str, ConversionType] = Field(default_factory=dict)
    session_conversion: ConversionType | None = None
    windows: dict[ConversionType, XWindows] = Field(default_factory=dict)
    # Privacy: X gets the device IP only when this is on.
    send_device_ip: bool = False
    # Partner parameters carrying number_items and level.
    number_items_parameter: str | None = None
    level_parameter: str | None = None
    # Windows adopted from X by `postback-hub x event-tags sync` (JSON), over `windows`.
    event_tags_file: Path | None = None


class XDestination(HttpDestination):
    type: Literal["x"]
    base_url: str = "https://ads-api.x.com"
    api_version: str = "12"
    # X documents no de-duplication: a timeout after sending is dead-lettered, not retried.
    on_ambiguous: Literal["retry", "dead_letter"] = "dead_letter"
    # After a 401/403 an app's conversions are dead-lettered without a request for this
    # long, so bad credentials never cause a retry storm.
    auth_failure_cooldown_s: Annotated[float, Field(ge=0)] = 300.0
    apps: dict[str, XApp] = Field(default_factory=dict)

    def raw_fields(self, app: str) -> Mapping[str, str]:
        """X hashes the advertising id itself (with the app's hmac_key), and gets the IP
        only with send_device_ip: both must reach it as Adjust sent them."""
        link = self.apps.get(app)
        if link is None:
            return {}
        id_field = "idfa" if link.os_type == "IOS" else "gps_adid"
        needed = {id_field: f"X's hashed_device_id (its own HMAC of the {link.os_type} id)"}
        if link.send_device_ip:
            needed["ip_address"] = "send_device_ip = true"
        return needed
